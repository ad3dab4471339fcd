"""Tiny model families: a pretrained base, fine-tunes that share its initialization, and troublemakers.

Each family is a folder of standard `save_pretrained` folders (safetensors, config, tokenizer, model card), built in
a second or two on a CPU and byte-identical for a given seed. The fine-tunes are the base plus seeded noise of 5% of
each tensor's spread, so that a soup of them is meaningful (they share one basin) while every float tensor of every
fine-tune differs from the base and from the other fine-tunes. The troublemakers are the ingredients a soup must
refuse or repair: each has exactly one documented defect.

Members, by their names in `ModelFamily.folders()`:

- `base`: the "pretrained" model, a seeded random initialization.
- `ft0`, `ft1`, ...: fine-tunes, the base plus noise, one seed each.
- `impostor`: same architecture and tokenizer, its own random initialization, then "fine-tuned" the same way; its
  card still claims the base, so only the weights give it away.
- `arch_mismatch`: the base grown by one layer (in each stack of T5 and each tower of CLIP), then fine-tuned: every
  base tensor is there with its shape, plus the new layer's tensors.
- `num_labels` (BERT only): a fine-tune with a fresh head for `negative`, `positive`, `neutral`.
- `permuted_labels` (BERT only): `ft0` with its labels reordered and its head's rows permuted to match, so it computes
  the same function under the new label order.
- `swapped_labels` (BERT only): a fine-tune whose head has its sign flipped, so it predicts the other label wherever
  its siblings predict one (as if trained on swapped labels): the body is a sibling's, the head anti-aligned.
- `other_tokenizer`: a fine-tune shipped with a tokenizer learned on another corpus, of the same size: every shape
  matches, the token ids do not.
- `fp16-ft{i}`: each fine-tune in float16. `sharded-ft{i}`: each fine-tune in >= 2 safetensors shards with an index.
- `pickle_only`: `ft0` as `pytorch_model.bin` only. `no_weights`: `ft0`'s config, tokenizer and card, no weights.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import HfsoupError
from .publish import upload
from .tiny_models import (
    ARCHS,
    LABELS_3,
    NOISE,
    ArchSpec,
    clip_image_processor,
    derive_seed,
    init_model,
    load_matching,
    negate_head,
    permute_labels,
    perturb_,
    snapshot,
)
from .tiny_tokenizers import TOKENIZERS

logger = logging.getLogger(__name__)

DEFAULT_ORG = "hfsoup-testing"


@dataclass
class ModelFamily:
    """The folders of one model family, as built by `build_family` (or `minilm.build_minilm_family`).

    Args:
        kind (`str`):
            `"bert"`, `"t5"` or `"clip"` (or `"minilm"`).
        root (`Path`):
            The folder holding every member, each in `root / name`.
        base (`Path`):
            The pretrained base.
        finetunes (`list[Path]`):
            Fine-tunes of the base, `ft0`, `ft1`, ...
        troublemakers (`dict[str, Path | list[Path]]`):
            Members a soup must refuse or repair, by defect; `fp16` and `sharded` hold one folder per fine-tune.
        repo_prefix (`str`, *optional*):
            What each member's Hub repo name starts with (`{repo_prefix}-{name}`); defaults to `tiny-{kind}`. Only the
            seeded tiny families are tiny: the MiniLM family's real fine-tunes say what they are instead.
    """

    kind: str
    root: Path
    base: Path
    finetunes: list[Path]
    troublemakers: dict[str, Path | list[Path]] = field(default_factory=dict)
    repo_prefix: str | None = None

    def repo_name(self, member: str) -> str:
        """The Hub repo name (no org) `publish_family` gives `member`: `tiny-bert-ft0`, `minilm-drugreview-ft0`."""
        return f"{self.repo_prefix or f'tiny-{self.kind}'}-{member}"

    def folders(self) -> dict[str, Path]:
        """Every member by its flat name: `base`, `ft0`.., `impostor`, ..., `fp16-ft0`.., `sharded-ft0`..."""
        folders = {"base": self.base, **{f"ft{i}": path for i, path in enumerate(self.finetunes)}}
        for name, value in self.troublemakers.items():
            if isinstance(value, list):
                folders.update({f"{name}-ft{i}": path for i, path in enumerate(value)})
            else:
                folders[name] = value
        return folders


_DESCRIPTIONS = {
    "base": "The pretrained base of the family: a seeded random initialization.",
    "ft": "A fine-tune of the base: the base plus seeded noise of {noise:.0%} of each tensor's spread.",
    "impostor": "Same architecture and tokenizer as the base and a card that claims it, but its own initialization.",
    "arch_mismatch": "The base grown by one layer per stack, then fine-tuned: it has tensors the base lacks.",
    "num_labels": "A fine-tune with a fresh head for 3 labels where the base family has 2.",
    "permuted_labels": "`ft0` with its labels reordered and its head permuted to match: the same function.",
    "swapped_labels": "A fine-tune whose head's sign is flipped: it predicts the other label, as if trained on "
    "swapped labels.",
    "other_tokenizer": "A fine-tune shipped with a tokenizer of the same size learned on another corpus.",
    "fp16": "A fine-tune stored in float16.",
    "sharded": "A fine-tune stored in several safetensors shards with an index.",
    "pickle_only": "`ft0` stored only as a pickled `pytorch_model.bin`.",
    "no_weights": "`ft0`'s config, tokenizer and card, without any weights.",
}


def _card(kind: str, name: str, role: str, *, base_model: str | None, pipeline_tag: str, seed: int) -> str:
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=pipeline_tag,
        tags=["hfsoup-testing", "tiny", kind, {"base": "base", "ft": "fine-tune"}.get(role, role.replace("_", "-"))],
    )
    description = _DESCRIPTIONS[role].format(noise=NOISE)
    return (
        f"---\n{data.to_yaml()}\n---\n\n# tiny-{kind}-{name}\n\n{description}\n\n"
        f'Built for tests by `hfsoup.testing.families.build_family("{kind}", root, seed={seed})`; '
        "its weights are random.\n"
    )


class _Writer:
    """Writes members of one family as standard `save_pretrained` folders, each with tokenizer and model card."""

    def __init__(self, root: Path, kind: str, spec: ArchSpec, seed: int) -> None:
        self.root, self.kind, self.spec, self.seed = root, kind, spec, seed
        self.tokenizer = TOKENIZERS[kind]("main")
        self.image_processor = clip_image_processor() if kind == "clip" else None

    def save(
        self,
        name: str,
        model: PreTrainedModel,
        role: str,
        *,
        weights: str | None = "safetensors",
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_shard_size: int | None = None,
    ) -> Path:
        folder = self.root / name
        if folder.exists():  # A rebuild replaces the member whole, so no stale shard survives.
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        if weights == "safetensors":
            model.save_pretrained(folder, **({} if max_shard_size is None else {"max_shard_size": max_shard_size}))
        else:
            model.config.save_pretrained(folder)
            if model.can_generate():
                model.generation_config.save_pretrained(folder)
            if weights == "pickle":
                torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (tokenizer or self.tokenizer).save_pretrained(folder)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(folder)
        base_model = None if role == "base" else f"{DEFAULT_ORG}/tiny-{self.kind}-base"
        card = _card(self.kind, name, role, base_model=base_model, pipeline_tag=self.spec.pipeline_tag, seed=self.seed)
        (folder / "README.md").write_text(card, encoding="utf-8")
        return folder


def _build(kind: str, root: str | os.PathLike, *, n_finetunes: int, seed: int) -> ModelFamily:
    started = time.perf_counter()
    spec = ARCHS[kind]
    writer = _Writer(Path(root), kind, spec, seed)
    tokenizer = writer.tokenizer

    model = init_model(spec, spec.make_config(tokenizer), seed=derive_seed(seed, "base"))
    base_state = snapshot(model)
    base = writer.save("base", model, "base")

    def finetuned(target: PreTrainedModel, label: str) -> PreTrainedModel:
        # Start from the base wherever the shapes allow (a new layer or head keeps its own initialization).
        load_matching(target, base_state)
        perturb_(target, seed=derive_seed(seed, label))
        return target

    finetunes, ft_states = [], []
    for i in range(n_finetunes):
        finetunes.append(writer.save(f"ft{i}", finetuned(model, f"ft{i}"), "ft"))
        ft_states.append(snapshot(model))

    troublemakers: dict[str, Path | list[Path]] = {}
    impostor = init_model(spec, spec.make_config(tokenizer), seed=derive_seed(seed, "impostor-init"))
    perturb_(impostor, seed=derive_seed(seed, "impostor"))  # "Fine-tuned" from its own start, not the base.
    troublemakers["impostor"] = writer.save("impostor", impostor, "impostor")
    grown = init_model(spec, spec.make_config(tokenizer, extra_layers=1), seed=derive_seed(seed, "grown-init"))
    troublemakers["arch_mismatch"] = writer.save("arch_mismatch", finetuned(grown, "arch_mismatch"), "arch_mismatch")
    if "num_labels" in spec.troublemakers:
        three = init_model(spec, spec.make_config(tokenizer, labels=LABELS_3), seed=derive_seed(seed, "3-init"))
        troublemakers["num_labels"] = writer.save("num_labels", finetuned(three, "num_labels"), "num_labels")
    if "permuted_labels" in spec.troublemakers:
        permuted = copy.deepcopy(model)
        permuted.load_state_dict(ft_states[0])
        n_labels = permuted.config.num_labels
        permute_labels(permuted, [(j + 1) % n_labels for j in range(n_labels)])
        troublemakers["permuted_labels"] = writer.save("permuted_labels", permuted, "permuted_labels")
    if "swapped_labels" in spec.troublemakers:
        swapped = finetuned(copy.deepcopy(model), "swapped_labels")
        negate_head(swapped)
        troublemakers["swapped_labels"] = writer.save("swapped_labels", swapped, "swapped_labels")

    other = TOKENIZERS[kind]("other")
    other_model = finetuned(model, "other_tokenizer")
    troublemakers["other_tokenizer"] = writer.save("other_tokenizer", other_model, "other_tokenizer", tokenizer=other)

    # A deep copy, so that casting to float16 leaves the float32 model (and its config's dtype) alone.
    half = copy.deepcopy(model).to(torch.float16)
    # A quarter of the model per shard gives several shards for every architecture; a bigger tensor gets its own.
    shard_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) // 4
    troublemakers["fp16"], troublemakers["sharded"] = [], []
    for i, state in enumerate(ft_states):
        half.load_state_dict(state)  # Casts each tensor to float16 on the way in.
        troublemakers["fp16"].append(writer.save(f"fp16-ft{i}", half, "fp16"))
        model.load_state_dict(state)
        troublemakers["sharded"].append(writer.save(f"sharded-ft{i}", model, "sharded", max_shard_size=shard_bytes))
    model.load_state_dict(ft_states[0])
    troublemakers["pickle_only"] = writer.save("pickle_only", model, "pickle_only", weights="pickle")
    troublemakers["no_weights"] = writer.save("no_weights", model, "no_weights", weights=None)

    logger.info("Built the tiny %s family in %s in %.1fs.", kind, root, time.perf_counter() - started)
    return ModelFamily(kind=kind, root=Path(root), base=base, finetunes=finetunes, troublemakers=troublemakers)


def build_bert_family(root: str | os.PathLike, *, n_finetunes: int = 3, seed: int = 0) -> ModelFamily:
    """Build the tiny `BertForSequenceClassification` family (labels `negative`, `positive`) under `root`.

    See `build_family` for the arguments.
    """
    return _build("bert", root, n_finetunes=n_finetunes, seed=seed)


def build_t5_family(root: str | os.PathLike, *, n_finetunes: int = 3, seed: int = 0) -> ModelFamily:
    """Build the tiny `T5ForConditionalGeneration` family under `root`; see `build_family` for the arguments."""
    return _build("t5", root, n_finetunes=n_finetunes, seed=seed)


def build_clip_family(root: str | os.PathLike, *, n_finetunes: int = 3, seed: int = 0) -> ModelFamily:
    """Build the tiny `CLIPModel` family (30x30 images, `CLIPProcessor` files) under `root`.

    See `build_family` for the arguments.
    """
    return _build("clip", root, n_finetunes=n_finetunes, seed=seed)


FAMILIES: dict[str, Callable[..., ModelFamily]] = {
    "bert": build_bert_family,
    "t5": build_t5_family,
    "clip": build_clip_family,
}


def build_family(kind: str, root: str | os.PathLike, *, n_finetunes: int = 3, seed: int = 0) -> ModelFamily:
    """Build a tiny model family: a base, fine-tunes sharing its initialization, and troublemakers.

    The build takes a second or two on a CPU, needs no network, and is byte-identical for a given `seed`. Members
    already in `root` under the same names are replaced.

    Args:
        kind (`str`):
            `"bert"`, `"t5"` or `"clip"` (the keys of `FAMILIES`).
        root (`str` or `os.PathLike`):
            The folder to build in; each member goes to `root / name` (see `ModelFamily.folders`).
        n_finetunes (`int`, *optional*, defaults to 3):
            How many fine-tunes of the base to build; the `fp16` and `sharded` troublemakers hold one copy of each.
        seed (`int`, *optional*, defaults to 0):
            Seeds every weight of the family. The tokenizers do not depend on it.

    Returns:
        `ModelFamily`: the folders that were built.

    Raises:
        `HfsoupError`: `kind` is not a known family.

    Example:
        ```py
        >>> from hfsoup.testing.families import build_family
        >>> family = build_family("bert", "tiny/bert", n_finetunes=2)
        >>> sorted(family.folders())[:4]
        ['arch_mismatch', 'base', 'fp16-ft0', 'fp16-ft1']
        ```
    """
    if kind not in FAMILIES:
        raise HfsoupError(f"Unknown model family {kind!r}.", fix=f"Pick one of: {', '.join(FAMILIES)}.")
    if n_finetunes < 1:
        raise HfsoupError(f"A family needs at least one fine-tune, got n_finetunes={n_finetunes}.", fix="Pass >= 1.")
    return FAMILIES[kind](root, n_finetunes=n_finetunes, seed=seed)


def publish_family(
    family: ModelFamily,
    *,
    org: str = DEFAULT_ORG,
    api: HfApi | None = None,
    private: bool = False,
    members: Iterable[str] | None = None,
) -> dict[str, str]:
    """Push every member of `family` to its own Hub model repo, `{org}/{family.repo_name(name)}`, one commit each.

    Repo names are `tiny-{kind}-{name}` for the tiny families and `minilm-drugreview-{name}` for the MiniLM one. The
    cards' `base_model`, where it names the family's base, is rewritten to `{org}/{family.repo_name("base")}` on the
    way, in a staging copy: the local folders are left as they are. The base goes first, so that the repo every card
    names exists when the card arrives.

    Args:
        family (`ModelFamily`):
            A family from `build_family`.
        org (`str`, *optional*, defaults to `"hfsoup-testing"`):
            The user or organization that owns the repos.
        api (`HfApi`, *optional*):
            The client to push with; defaults to `HfApi()`, which follows `HF_ENDPOINT` (the local Hub in tests).
        private (`bool`, *optional*, defaults to `False`):
            Whether to create the repos as private.
        members (`Iterable[str]`, *optional*):
            Publish only these members (names as in `ModelFamily.folders`); all of them by default.

    Returns:
        `dict[str, str]`: member name (as in `ModelFamily.folders`) to repo id.

    Example:
        ```py
        >>> repo_ids = publish_family(build_family("t5", "tiny/t5"), org="me")
        >>> repo_ids["ft0"]
        'me/tiny-t5-ft0'
        ```
    """
    api = api or HfApi()
    base_repo_id = f"{org}/{family.repo_name('base')}"
    repo_ids = {}
    folders = family.folders()
    wanted = list(folders) if members is None else list(members)
    unknown = sorted(set(wanted) - set(folders))
    if unknown:
        raise ValueError(f"{family.kind} family has no members {unknown}; it has {sorted(folders)}")
    with tempfile.TemporaryDirectory(prefix="hfsoup-publish-") as staging:
        for name, folder in folders.items():
            if name not in wanted:
                continue
            repo_id = f"{org}/{family.repo_name(name)}"
            staged = Path(staging) / name
            shutil.copytree(folder, staged)
            card_path = staged / "README.md"
            if card_path.is_file():
                card = ModelCard.load(card_path)
                # Only the family's own base is renamed: the base itself may name a real upstream model (MiniLM
                # names sentence-transformers/all-MiniLM-L6-v2), which must not become a pointer to itself.
                if card.data.base_model == f"{DEFAULT_ORG}/{family.repo_name('base')}":
                    card.data.base_model = base_repo_id
                    card.save(card_path)
            upload(staged, repo_id, private=private, api=api)
            repo_ids[name] = repo_id
    return repo_ids


def publish_folder(folder: str | os.PathLike, repo_id: str, *, api: HfApi | None = None, private: bool = False) -> str:
    """Push one model folder to `repo_id` in one commit (creating the repo if needed); return the repo id."""
    upload(folder, repo_id, private=private, api=api)
    return repo_id
