"""Pin an ingredient to a commit (`resolve`) and download only what a soup needs from it (`fetch`), verified.

Every Hub ingredient is resolved to a 40-hex commit SHA once, up front; all later reads use that SHA, so a branch
moving during a long soup cannot mix two versions of a model. Downloads go through the Hub cache
(`snapshot_download`), with `huggingface_hub`'s progress bars. `huggingface_hub` checks a file's size, never its
content: so every downloaded file is compared with the checksum the Hub lists for it (the LFS sha256, or the git blob
id of a small file), and one that does not match is deleted from the cache and downloaded again, and never used.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .. import constants
from ..errors import CorruptDownloadError, MissingWeightsError, UnsafePathError, option
from ..io.adapter import ADAPTER_CONFIG_NAME, ADAPTER_LAYOUT, ADAPTER_PICKLE_NAME, ADAPTER_WEIGHTS_NAME
from ..io.checkpoint import SAFE_WEIGHTS_NAME, WeightsLayout, read_weight_map, weights_layout
from ..io.confine import allowed_roots, confined, refuse_links_out
from .errors import hub_errors
from .refs import SUPPORT_FILES, IngredientRef, PinnedIngredient, parse_ingredient
from .retries import ChecksumMismatch, with_retries

logger = logging.getLogger(__name__)


def _layout(name: str, files: list[str], *, allow_pickle: bool) -> tuple[WeightsLayout, list[str]]:
    """The weights of an ingredient with these (root-level) files, and the support files to fetch with its config:
    a model's, or a LoRA adapter's (`io.adapter`: its config comes with the support files, its base is another
    ingredient, named by that config)."""
    layout = weights_layout(files)
    support = sorted(n for n in files if n in SUPPORT_FILES)
    if layout is None and ADAPTER_CONFIG_NAME in files:
        if ADAPTER_WEIGHTS_NAME not in files:
            held = ADAPTER_PICKLE_NAME if ADAPTER_PICKLE_NAME in files else "no adapter weights"
            raise MissingWeightsError(
                f"Ingredient {name!r} is a PEFT adapter with {held} and no {ADAPTER_WEIGHTS_NAME}; hfsoup reads "
                "adapters in safetensors only (a pickle can run code when loaded).",
                fix="Load it with peft and save it again with save_pretrained (safetensors is its default).",
            )
        return ADAPTER_LAYOUT, sorted([*support, ADAPTER_CONFIG_NAME])
    return _check_layout(name, layout, allow_pickle=allow_pickle), support


def _check_layout(name: str, layout: WeightsLayout | None, *, allow_pickle: bool) -> WeightsLayout:
    if layout is None:
        raise MissingWeightsError(
            f"Ingredient {name!r} holds no model weights: expected {SAFE_WEIGHTS_NAME} (or sharded safetensors with "
            "model.safetensors.index.json) at the root of the repo.",
            fix="Check that it is a model checkpoint (or a PEFT LoRA adapter, with adapter_config.json) and not, "
            "e.g., a tokenizer-only repo.",
        )
    if layout.format == "pickle" and not allow_pickle:
        raise MissingWeightsError(
            f"Ingredient {name!r} has only pickle weights ({layout.index_file or layout.files[0]}); unpickling can "
            "run arbitrary code, so hfsoup refuses it by default.",
            fix=f"If you trust it, pass {option('allow_pickle')}: hfsoup then loads it with "
            "torch.load(weights_only=True), which accepts tensors only.",
        )
    return layout


def resolve(
    spec: str | IngredientRef, *, token: str | bool | None = None, allow_pickle: bool = False
) -> PinnedIngredient:
    """Pin an ingredient to a commit SHA and choose its files, downloading nothing.

    Raises `IngredientNotFoundError` for a missing repo, revision or folder and `MissingWeightsError` for one without
    usable weights.
    """
    ref = spec if isinstance(spec, IngredientRef) else parse_ingredient(spec)
    if ref.path is not None:
        # Before anything in the folder is read: a link at its root that leaves it (a `vocab.txt` pointing at a
        # secret) would be read, copied into the soup and pushed.
        refuse_links_out(ref.path, where=f"Ingredient {ref.spec!r} ({ref.path})")
        names = [p.name for p in ref.path.iterdir() if p.is_file()]
        layout, files = _layout(ref.spec, names, allow_pickle=allow_pickle)
        return PinnedIngredient(ref, None, layout, files, local_dir=ref.path)

    if constants.hub_offline():  # nothing to ask: the cache is the Hub, and a miss is final (never retried)
        return _resolve_from_cache(ref, allow_pickle=allow_pickle)

    from huggingface_hub import HfApi

    with ingredient_errors(ref):
        # files_metadata: the LFS sha256 and git blob id of every file, which each download is checked against.
        info = with_retries(
            lambda: HfApi(token=token).model_info(ref.repo_id, revision=ref.revision, files_metadata=True),
            what=f"resolving {ref.spec}",
        )
    siblings = [s.rfilename for s in info.siblings or []]
    layout, files = _layout(ref.spec, [n for n in siblings if "/" not in n], allow_pickle=allow_pickle)
    checksums = {}
    for sibling in info.siblings or []:
        if sibling.lfs is not None:
            checksums[sibling.rfilename] = ("sha256", sibling.lfs.sha256)
        elif sibling.blob_id:
            checksums[sibling.rfilename] = ("git-sha1", sibling.blob_id)
    logger.info("resolved %s to %s", ref.spec, info.sha)
    return PinnedIngredient(ref, info.sha, layout, files, checksums=checksums)


def _resolve_from_cache(ref: IngredientRef, *, allow_pickle: bool) -> PinnedIngredient:
    """Pin a Hub ingredient to the snapshot the Hub cache holds for its revision, asking the Hub nothing.

    The revision is looked up as `huggingface_hub` records it (`refs/<revision>`, which hfsoup also writes when it
    downloads by SHA), or is a commit SHA with a snapshot. The cache names each blob by the checksum the Hub listed for
    it (the LFS sha256, or the git blob id), so the files are verified on those as an online fetch would be.
    """
    with ingredient_errors(ref):
        folder = _cached_snapshot(ref)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    layout, files = _layout(ref.spec, names, allow_pickle=allow_pickle)
    checksums = {}
    for name in names:
        blob = Path(os.path.realpath(folder / name)).name
        if len(blob) in (40, 64) and all(c in "0123456789abcdef" for c in blob):
            checksums[name] = ("sha256" if len(blob) == 64 else "git-sha1", blob)
    logger.info("HF_HUB_OFFLINE: resolved %s to %s from the Hub cache", ref.spec, folder.name)
    return PinnedIngredient(ref, folder.name, layout, files, checksums=checksums)


def _cached_snapshot(ref: IngredientRef, sha: str | None = None) -> Path:
    """The cache's snapshot folder of `ref` at `sha` (default: the commit its revision was last pinned to);
    `LocalEntryNotFoundError` when the cache has none, which `hub.errors` words for `HF_HUB_OFFLINE`."""
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    root = Path(constants.hub_cache()) / repo_folder_name(repo_id=ref.repo_id, repo_type="model")
    revision = ref.revision or "main"
    if sha is None:
        if ".." in revision.split("/") or revision.startswith("/"):  # a name, never a path out of the cache
            raise LocalEntryNotFoundError(f"revision {revision!r} of {ref.repo_id} is not in the cache")
        recorded = root / "refs" / revision
        sha = recorded.read_text().strip() if recorded.is_file() else revision
    folder = root / "snapshots" / sha
    if not (len(sha) == 40 and all(c in "0123456789abcdef" for c in sha) and folder.is_dir()):
        raise LocalEntryNotFoundError(f"{ref.repo_id} at {revision} is not in the cache ({root})")
    return folder


def ingredient_errors(ref: IngredientRef):  # noqa: ANN201 - hub_errors' context manager
    """`hub_errors` for a Hub ingredient: its messages name the ingredient as the user wrote it."""
    return hub_errors("model", ref.repo_id, revision=ref.revision, label=ref.spec)


def fetch(ingredient: PinnedIngredient, *, token: str | bool | None = None, weights: bool = True) -> Path:
    """Download the ingredient's config, tokenizer, card and (unless `weights=False`) weights at its pinned SHA.

    Returns the local folder (a snapshot in the Hub cache, or the ingredient's own folder when it is local).
    """
    if ingredient.ref.path is not None:
        return ingredient.ref.path
    from huggingface_hub import snapshot_download

    from ..progress import download_bar_class

    ref, layout = ingredient.ref, ingredient.layout

    def download() -> Path:
        weight_files = list(layout.files) if weights else []
        if weights and layout.index_file:
            weight_files = [layout.index_file, *shard_names(ingredient, token=token)]
        wanted = [*ingredient.files, *weight_files]
        if constants.hub_offline():  # the snapshot resolve found; a file it lacks is a miss, worded as one
            folder = _cached_snapshot(ref, ingredient.sha)
            if any(not (folder / name).is_file() for name in wanted):
                from huggingface_hub.errors import LocalEntryNotFoundError

                raise LocalEntryNotFoundError(f"{ref.repo_id} at {ingredient.sha} is only partly in the cache")
        else:
            folder = Path(
                snapshot_download(
                    ref.repo_id,
                    revision=ingredient.sha,
                    allow_patterns=wanted,
                    token=token,
                    tqdm_class=download_bar_class(ref.spec),  # one bar per ingredient, not one per file
                )
            )
        _verify(ingredient, folder, wanted)
        roots = allowed_roots(folder)
        for name in wanted:  # each lands in this repo's own blob store, never elsewhere on the disk
            confined(folder, name, where=f"Ingredient {ref.spec!r} at {ingredient.sha}", roots=roots)
        return folder

    with ingredient_errors(ref):
        try:
            ingredient.local_dir = with_retries(download, what=f"downloading {ref.spec}")
            _remember_revision(ref, ingredient)
        except ChecksumMismatch as e:
            raise CorruptDownloadError(
                f"{e} in ingredient {ref.spec!r} at {ingredient.sha} did not match the checksum the Hub lists for "
                f"it, {constants.hub_retries() + 1} downloads in a row; the damaged copies were deleted and never "
                "used.",
                fix="Something between you and the Hub alters the data (a proxy, a failing disk or network card): "
                "retry on another network or machine; raise HFSOUP_HUB_RETRIES to try more times.",
            ) from e
    return ingredient.local_dir


def _remember_revision(ref: IngredientRef, ingredient: PinnedIngredient) -> None:
    """Record in the Hub cache which commit the ingredient's revision (`main`, a tag) was pinned to, as
    `huggingface_hub` does when it downloads by revision: hfsoup downloads by SHA, and without the record an
    `HF_HUB_OFFLINE` run could not find the snapshot by the name the user gives."""
    revision, sha = ref.revision or "main", ingredient.sha
    if sha is None or revision == sha or ".." in revision.split("/") or revision.startswith("/"):
        return
    from huggingface_hub.file_download import repo_folder_name

    path = Path(constants.hub_cache()) / repo_folder_name(repo_id=ref.repo_id, repo_type="model") / "refs" / revision
    try:
        if path.is_file() and path.read_text() == sha:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        staged.write_text(sha)
        os.replace(staged, path)  # readers never see half a SHA
    except OSError as exc:  # a read-only shared cache: only offline reuse is lost
        logger.debug("could not record %s -> %s in the Hub cache: %s", ref.spec, sha, exc)


def shard_names(ingredient: PinnedIngredient, *, token: str | bool | None) -> list[str]:
    """The shards a Hub ingredient's (checksum-verified) index names, each a plain name the repo lists with a checksum:
    a shard outside the repo's file list (an absolute path, say) would be read unverified, or from the user's disk."""
    from huggingface_hub import hf_hub_download

    ref, index_file = ingredient.ref, ingredient.layout.index_file
    assert index_file is not None
    index_path = hf_hub_download(ref.repo_id, index_file, revision=ingredient.sha, token=token)
    _verify(ingredient, Path(index_path).parent, [index_file])
    where = f"Ingredient {ref.spec!r} at {ingredient.sha}: {index_file}"
    names = sorted(set(read_weight_map(index_path, where=where).values()))
    unlisted = [name for name in names if name not in ingredient.checksums]
    if unlisted:
        raise UnsafePathError(
            f"{where} names the shard {unlisted[0]!r}, which the repo does not list as one of its files with a "
            "checksum; hfsoup reads only files of the repo, verified.",
            fix="The repo's index is broken or hostile: ask its author to fix it, or leave the ingredient out.",
        )
    return names


def _verify(ingredient: PinnedIngredient, folder: Path, names: list[str]) -> None:
    """Compare each downloaded file with the Hub's checksum; delete and report the ones that differ.

    A file already checked is remembered by a marker (its blob's size and mtime) in the cache, so a rerun does not
    hash gigabytes again.
    """
    bad = []
    roots = allowed_roots(folder)
    for name in names:
        expected = ingredient.checksums.get(name)
        path = folder / name
        if expected is None or not path.exists():
            continue
        blob = Path(os.path.realpath(path))
        if not any(blob.is_relative_to(root) for root in roots):
            # A cached link that leaves this repo's blob store: neither hash nor delete its target (not ours); drop
            # the link, so the file is downloaded again.
            logger.warning("%s of %s in the Hub cache links outside its repo; replacing it", name, ingredient.ref.spec)
            bad.append(name)
            path.unlink()
            continue
        stat = blob.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        marker = folder.parent.parent / ".hfsoup-verified" / expected[1]
        if marker.is_file() and marker.read_text() == stamp:
            continue
        if _checksum(blob, expected[0]) == expected[1]:
            marker.parent.mkdir(exist_ok=True)
            marker.write_text(stamp)
            continue
        logger.warning("%s of %s does not match its checksum on the Hub; deleting it", name, ingredient.ref.spec)
        bad.append(name)
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
    if bad:
        raise ChecksumMismatch(", ".join(bad))


def _checksum(path: Path, kind: str) -> str:
    """The sha256 of the content (LFS oid), or the git blob id: sha1 of `blob <size>\\0` and the content."""
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()
