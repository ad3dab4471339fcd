"""What an ingredient is: the name the user gave (`org/name@revision` or a folder), and that name pinned to a commit.

Also the support files a soup carries over from an ingredient besides its weights; everything else in a repo (other
weight formats, ONNX exports, training logs, images) is never downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import CARD_FILE
from ..errors import IngredientNotFoundError
from ..io.checkpoint import StructureMap, WeightsLayout, read_weight_map

if TYPE_CHECKING:
    from ..io.adapter import AdapterConfig

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")
SUPPORT_FILES = (*CONFIG_FILES, *TOKENIZER_FILES, *PROCESSOR_FILES, CARD_FILE)


@dataclass(frozen=True)
class IngredientRef:
    """What the user named: a Hub repo (with an optional revision) or a local folder."""

    spec: str
    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None


def parse_ingredient(spec: str) -> IngredientRef:
    """Parse `org/name`, `org/name@revision` or a local folder.

    An existing folder wins over a Hub ID of the same spelling, as in `transformers.from_pretrained`.

    Example:
        ```py
        >>> ref = parse_ingredient("google-bert/bert-base-uncased@main")
        >>> ref.repo_id, ref.revision
        ('google-bert/bert-base-uncased', 'main')
        ```
    """
    expanded = Path(os.path.expanduser(spec))
    if expanded.is_dir():
        return IngredientRef(spec, path=expanded.resolve())
    if spec.startswith((".", "/", "~")) or os.sep != "/" and os.sep in spec:
        raise IngredientNotFoundError(
            f"Ingredient {spec!r} looks like a local path, but no such folder exists.",
            fix="Check the path, or name a Hub model as 'org/name' or 'org/name@revision'.",
        )
    return parse_hub_ref(spec)


def parse_hub_ref(spec: str) -> IngredientRef:
    """Parse `org/name` or `org/name@revision` as a Hub repo, whatever folders exist under the same name (what the
    Hub's model tree links: `hfsoup find`'s base is never read from a local folder)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id, _, revision = spec.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise IngredientNotFoundError(
            f"Ingredient {spec!r} is neither an existing folder nor a valid Hub model ID ({e}).",
            fix="Name Hub models as 'org/name' or 'org/name@revision' (a branch, tag or commit SHA).",
        ) from e
    if "@" in spec and not revision:
        raise IngredientNotFoundError(f"Ingredient {spec!r} ends with '@' but names no revision.")
    return IngredientRef(spec, repo_id=repo_id, revision=revision or None)


def hub_id_problem(value: object) -> str | None:
    """Why `value` is not a Hub model ID (`org/name`, no revision, no path), or None: for recipe validation."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(value, str) or not value:
        return "expected a Hub model ID (org/name)"
    if value.startswith((".", "/", "~")) or "\\" in value or "@" in value:
        return f"expected a Hub model ID (org/name), not a path or a revision: {value!r}"
    try:
        validate_repo_id(value)
    except HFValidationError:
        return f"expected a Hub model ID (org/name), got {value!r}"
    return None


@dataclass
class PinnedIngredient:
    """An ingredient pinned to an exact version, with the files a soup needs from it (what `hub.resolve` returns;
    not the recipe's `Ingredient`, which is what a recipe file names)."""

    ref: IngredientRef
    sha: str | None  # the commit SHA of a Hub ingredient; None for a local folder
    layout: WeightsLayout
    files: list[str]  # repo-relative files to fetch (weights resolved later for indexed checkpoints)
    local_dir: Path | None = None  # where its files are once fetched (a cache snapshot, or the folder itself)
    structure: StructureMap = field(default_factory=dict)
    #: Where each tensor's bytes begin on the Hub, (file, offset), once `remote_structure` has read the headers.
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: What the Hub lists for each file: ("sha256", LFS oid) or ("git-sha1", blob id); downloads are checked on it.
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: A LoRA adapter (`layout.format == "adapter"`): its config and its base, pinned (`hub.adapters.attach_bases`).
    adapter_config: AdapterConfig | None = None
    adapter_base: PinnedIngredient | None = None

    @property
    def name(self) -> str:
        return self.ref.spec

    @property
    def is_adapter(self) -> bool:
        return self.layout.format == "adapter"

    def provenance(self) -> dict[str, object]:
        record = self._own_provenance()
        if self.adapter_base is not None:  # what the merged model is made of: this adapter and its base, both pinned
            record["adapter"] = {"type": "lora", "base": self.adapter_base.provenance()}
        return record

    def _own_provenance(self) -> dict[str, object]:
        if self.ref.is_local:  # published with the soup: its public name and checksums, never the local path
            from ..publish.naming import weights_checksums

            folder, index = self.ref.path, self.layout.index_file
            files = sorted(set(read_weight_map(folder / index).values())) if index else list(self.layout.files)
            return {
                "spec": self.ref.spec,
                "folder": folder.name,
                "weights_format": "safetensors" if self.is_adapter else self.layout.format,
                "checksums": weights_checksums(folder, files, index),
            }
        return {
            "spec": self.ref.spec,
            "repo_id": self.ref.repo_id,
            "revision": self.ref.revision or "main",
            "sha": self.sha,
            "weights_format": "safetensors" if self.is_adapter else self.layout.format,
        }
