"""Ingredients on the Hub or on disk: parse `org/name@revision`, pin it to a commit SHA, fetch only what a soup needs.

Every Hub ingredient is resolved to a 40-hex commit SHA once, up front; all later reads use that SHA, so a branch
moving during a long soup cannot mix two versions of a model. Downloads go through the Hub cache
(`snapshot_download`), with `huggingface_hub`'s progress bars.

On a flaky network: `huggingface_hub` resumes a file download whose connection dropped or timed out and checks its
size, but it does not retry API calls (repo info, headers) or file answers of HTTP 5xx, and it never checks the
content. So every Hub call here is retried a bounded number of times on transient failures (`with_retries`), and
every downloaded file is compared with the checksum the Hub lists for it (the LFS sha256, or the git blob id of a
small file): a file that does not match is deleted from the cache and downloaded again, and is never used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import constants
from ..errors import (
    CorruptCheckpointError,
    CorruptDownloadError,
    DiskFullError,
    HubError,
    IngredientNotFoundError,
    MissingWeightsError,
    UnsafePathError,
    option,
)
from ..io.checkpoint import (
    SAFE_WEIGHTS_NAME,
    StructureMap,
    WeightsLayout,
    read_weight_map,
    structure_from_header,
    weights_layout,
)
from ..io.confine import allowed_roots, confined, refuse_links_out
from ..io.headers import header_length
from ..scrub import cut

logger = logging.getLogger(__name__)

# Files a soup carries over from an ingredient besides its weights. Everything else in a repo (other weight formats,
# ONNX exports, training logs, images) is never downloaded.
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
CARD_FILE = "README.md"
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
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    expanded = Path(os.path.expanduser(spec))
    if expanded.is_dir():
        return IngredientRef(spec, path=expanded.resolve())
    if spec.startswith((".", "/", "~")) or os.sep != "/" and os.sep in spec:
        raise IngredientNotFoundError(
            f"Ingredient {spec!r} looks like a local path, but no such folder exists.",
            fix="Check the path, or name a Hub model as 'org/name' or 'org/name@revision'.",
        )
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


@dataclass
class Ingredient:
    """An ingredient pinned to an exact version, with the files a soup needs from it."""

    ref: IngredientRef
    sha: str | None  # the commit SHA of a Hub ingredient; None for a local folder
    layout: WeightsLayout
    files: list[str]  # repo-relative files to fetch (weights resolved later for indexed checkpoints)
    local_dir: Path | None = None  # where its files are once fetched (a cache snapshot, or the folder itself)
    structure: StructureMap = field(default_factory=dict)
    #: What the Hub lists for each file: ("sha256", LFS oid) or ("git-sha1", blob id); downloads are checked on it.
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref.spec

    def provenance(self) -> dict[str, object]:
        if self.ref.is_local:  # published with the soup: its public name and checksums, never the local path
            from ..publish.naming import weights_checksums

            folder, index = self.ref.path, self.layout.index_file
            files = sorted(set(read_weight_map(folder / index).values())) if index else list(self.layout.files)
            return {
                "spec": self.ref.spec,
                "folder": folder.name,
                "weights_format": self.layout.format,
                "checksums": weights_checksums(folder, files, index),
            }
        return {
            "spec": self.ref.spec,
            "repo_id": self.ref.repo_id,
            "revision": self.ref.revision or "main",
            "sha": self.sha,
            "weights_format": self.layout.format,
        }


def _check_layout(name: str, layout: WeightsLayout | None, *, allow_pickle: bool) -> WeightsLayout:
    if layout is None:
        raise MissingWeightsError(
            f"Ingredient {name!r} holds no model weights: expected {SAFE_WEIGHTS_NAME} (or sharded safetensors with "
            "model.safetensors.index.json) at the root of the repo.",
            fix="Check that it is a model checkpoint and not, e.g., a tokenizer-only or adapter repo.",
        )
    if layout.format == "pickle" and not allow_pickle:
        raise MissingWeightsError(
            f"Ingredient {name!r} has only pickle weights ({layout.index_file or layout.files[0]}); unpickling can "
            "run arbitrary code, so hfsoup refuses it by default.",
            fix=f"If you trust it, pass {option('allow_pickle')}: hfsoup then loads it with "
            "torch.load(weights_only=True), which accepts tensors only.",
        )
    return layout


def resolve(spec: str | IngredientRef, *, token: str | bool | None = None, allow_pickle: bool = False) -> Ingredient:
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
        layout = _check_layout(ref.spec, weights_layout(names), allow_pickle=allow_pickle)
        files = sorted(n for n in names if n in SUPPORT_FILES)
        return Ingredient(ref, None, layout, files, local_dir=ref.path)

    from huggingface_hub import HfApi

    with hub_errors(ref):
        # files_metadata: the LFS sha256 and git blob id of every file, which each download is checked against.
        info = with_retries(
            lambda: HfApi(token=token).model_info(ref.repo_id, revision=ref.revision, files_metadata=True),
            what=f"resolving {ref.spec}",
        )
    siblings = [s.rfilename for s in info.siblings or []]
    layout = _check_layout(ref.spec, weights_layout(siblings), allow_pickle=allow_pickle)
    files = sorted(n for n in siblings if n in SUPPORT_FILES)
    checksums = {}
    for sibling in info.siblings or []:
        if sibling.lfs is not None:
            checksums[sibling.rfilename] = ("sha256", sibling.lfs.sha256)
        elif sibling.blob_id:
            checksums[sibling.rfilename] = ("git-sha1", sibling.blob_id)
    logger.info("resolved %s to %s", ref.spec, info.sha)
    return Ingredient(ref, info.sha, layout, files, checksums=checksums)


def fetch(ingredient: Ingredient, *, token: str | bool | None = None, weights: bool = True) -> Path:
    """Download the ingredient's config, tokenizer, card and (unless `weights=False`) weights at its pinned SHA.

    Returns the local folder (a snapshot in the Hub cache, or the ingredient's own folder when it is local).
    """
    if ingredient.ref.path is not None:
        return ingredient.ref.path
    from huggingface_hub import snapshot_download

    ref, layout = ingredient.ref, ingredient.layout

    def download() -> Path:
        weight_files = list(layout.files) if weights else []
        if weights and layout.index_file:
            weight_files = [layout.index_file, *_shard_names(ingredient, token=token)]
        wanted = [*ingredient.files, *weight_files]
        folder = Path(snapshot_download(ref.repo_id, revision=ingredient.sha, allow_patterns=wanted, token=token))
        _verify(ingredient, folder, wanted)
        roots = allowed_roots(folder)
        for name in wanted:  # each lands in this repo's own blob store, never elsewhere on the disk
            confined(folder, name, where=f"Ingredient {ref.spec!r} at {ingredient.sha}", roots=roots)
        return folder

    with hub_errors(ref):
        try:
            ingredient.local_dir = with_retries(download, what=f"downloading {ref.spec}")
        except _ChecksumMismatch as e:
            raise CorruptDownloadError(
                f"{e} in ingredient {ref.spec!r} at {ingredient.sha} did not match the checksum the Hub lists for "
                f"it, {constants.hub_retries() + 1} downloads in a row; the damaged copies were deleted and never "
                "used.",
                fix="Something between you and the Hub alters the data (a proxy, a failing disk or network card): "
                "retry on another network or machine; raise HFSOUP_HUB_RETRIES to try more times.",
            ) from e
    return ingredient.local_dir


def _shard_names(ingredient: Ingredient, *, token: str | bool | None) -> list[str]:
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


class _ChecksumMismatch(Exception):
    """A downloaded file whose content is not what the Hub lists (removed from the cache; retried)."""


def _verify(ingredient: Ingredient, folder: Path, names: list[str]) -> None:
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
        raise _ChecksumMismatch(", ".join(bad))


def _checksum(path: Path, kind: str) -> str:
    """The sha256 of the content (LFS oid), or the git blob id: sha1 of `blob <size>\\0` and the content."""
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_HEADER_READS = 3


def with_retries(call: Callable[[], object], *, what: str) -> object:
    """`call()`, tried again on transient failures: HTTP 408, 429 and 5xx, timeouts, dropped connections, a
    truncated download, a checksum mismatch. At most `HFSOUP_HUB_RETRIES` retries (default 5), waiting
    `HFSOUP_HUB_RETRY_WAIT` seconds (default 1), doubling each time; then the last error is raised.

    Example:
        ```py
        >>> info = with_retries(lambda: HfApi().model_info("org/name"), what="resolving org/name")
        ```
    """
    retries, wait = constants.hub_retries(), constants.hub_retry_wait()
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == retries or not _is_transient(exc):
                raise
            logger.warning(
                "%s failed (%s); trying again in %.1f s (retry %d of %d)",
                what,
                _first_line(exc),
                wait,
                attempt + 1,
                retries,
            )
            time.sleep(wait)
            wait = min(2 * wait, 16.0)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, _ChecksumMismatch | json.JSONDecodeError | UnicodeDecodeError):
        return True  # a file, or an API answer, damaged in transit
    if isinstance(exc, HfHubHTTPError):
        return exc.response is not None and exc.response.status_code in _TRANSIENT_STATUS
    if isinstance(exc, OSError) and exc.errno is None and "Consistency check failed" in str(exc):
        return True  # huggingface_hub's size check after its own resume attempts
    return _is_connection_error(exc)


def remote_structure(ingredient: Ingredient, *, token: str | bool | None = None) -> StructureMap | None:
    """Tensor names, dtypes and shapes from the safetensors headers on the Hub (Range reads, no weights download),
    checked by the same rules as a local file (`checkpoint.structure_from_header`).

    Returns `None` when the headers cannot be read remotely (pickle weights); the caller then reads them after fetch.
    """
    if ingredient.ref.is_local or ingredient.layout.format != "safetensors":
        return None
    ref = ingredient.ref
    structure: StructureMap = {}
    with hub_errors(ref):
        files = list(ingredient.layout.files)
        if ingredient.layout.index_file:
            what = f"reading the index of {ref.spec}"
            files = with_retries(lambda: _shard_names(ingredient, token=token), what=what)
        for file in files:
            for attempt in range(_HEADER_READS):
                try:
                    structure.update(
                        with_retries(
                            lambda file=file: _remote_header(ingredient, file, token=token),
                            what=f"reading the safetensors header of {ref.spec}",
                        )
                    )
                    break
                except CorruptCheckpointError as e:
                    # Damaged in transit (read again) or damaged on the Hub (the same answer every time).
                    if attempt == _HEADER_READS - 1:
                        raise CorruptCheckpointError(
                            f"Ingredient {ref.spec!r} at {ingredient.sha}: {e.message} (read {_HEADER_READS} times).",
                            fix="The file on the Hub is not valid safetensors; ask its author to re-upload it, or "
                            "leave the ingredient out.",
                        ) from e
                    logger.warning("the safetensors header of %s did not parse; reading it again", ref.spec)
    return structure


# The first Range read: most headers fit (as huggingface_hub reads them), so one request usually does.
_FIRST_READ = 100_000
# How much of an error answer to a Range read is kept for the message (the Hub's JSON errors are a few hundred bytes).
_ERROR_BODY_LIMIT = 64 * 1024


def _read_at_most(response, limit: int) -> bytes:  # noqa: ANN001 - an httpx response being streamed
    """The first `limit` bytes of a streamed body; the rest is never read (the connection is closed after)."""
    chunks, have = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk[: limit - have])
        have += len(chunks[-1])
        if have >= limit:
            break
    return b"".join(chunks)


def _with_body(response, body: bytes):  # noqa: ANN001, ANN202 - httpx responses
    """A read copy of a streamed error answer, holding only `body`, for `hf_raise_for_status` to word."""
    return type(response)(response.status_code, headers=response.headers, content=body, request=response.request)


def _remote_header(ingredient: Ingredient, file: str, *, token: str | bool | None) -> StructureMap:
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(ingredient.ref.repo_id, file, revision=ingredient.sha, endpoint=constants.hub_endpoint())
    headers = build_hf_headers(token=token)
    timeout = hf_constants.HF_HUB_DOWNLOAD_TIMEOUT

    def get(first: int, last: int) -> tuple[bytes, int]:
        # Streamed and read only as far as asked: a server that ignores the Range (or lies) could otherwise make us
        # hold a whole weights file, or an endless body, in memory for a header of a few kB.
        with get_session().stream(
            "GET", url, headers={**headers, "Range": f"bytes={first}-{last}"}, timeout=timeout
        ) as response:
            if response.status_code >= 400:  # the error's words, bounded, for the client's own error types
                body = _read_at_most(response, _ERROR_BODY_LIMIT)
                hf_raise_for_status(_with_body(response, body))
            if response.status_code == 200:  # no Range support: the whole file comes; read only up to `last`
                size = response.headers.get("Content-Length", "")
                body = _read_at_most(response, last + 1)
                return body[first:], int(size) if size.isdigit() else len(body)
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if not total.isdigit():
                raise HubError(f"The Hub answered a Range read of {file} of {ingredient.ref.spec!r} without its size.")
            return _read_at_most(response, last - first + 1), int(total)

    where = f"{ingredient.ref.repo_id}/{file}"
    head, size = get(0, _FIRST_READ - 1)
    length = header_length(head[:8], size, where)
    raw = head[8 : 8 + length] if len(head) >= 8 + length else get(8, 8 + length - 1)[0]
    if len(raw) != length:
        raise CorruptCheckpointError(f"{where}: the Hub sent {len(raw)} of the header's {length} bytes.")
    return structure_from_header(raw, file_size=size, where=where)[0]


@contextlib.contextmanager
def hub_errors(ref: IngredientRef) -> Iterator[None]:
    """Turn the Hub client's errors about an ingredient into hfsoup errors that name the ingredient and the fix."""
    try:
        yield
    except Exception as exc:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        endpoint = constants.hub_endpoint()
        if isinstance(exc, GatedRepoError):
            raise IngredientNotFoundError(
                f"Ingredient {ref.repo_id!r} is a gated repo on {endpoint} and this account has not been granted "
                "access to it.",
                fix="Accept its conditions on the model page, then log in with 'hf auth login' or set HF_TOKEN.",
            ) from exc
        if isinstance(exc, RepositoryNotFoundError):
            raise IngredientNotFoundError(
                f"Ingredient {ref.repo_id!r} was not found on {endpoint}: the repo does not exist, or it is private "
                "and no valid token was sent.",
                fix="Check the spelling of 'org/name'; for a private repo log in with 'hf auth login', set HF_TOKEN "
                f"or pass {option('token', 'hf_...')}.",
            ) from exc
        if isinstance(exc, RevisionNotFoundError):
            raise IngredientNotFoundError(
                f"Revision {ref.revision!r} of ingredient {ref.repo_id!r} was not found on {endpoint}.",
                fix="Name an existing branch, tag or full commit SHA after '@' (see the repo's 'Files and versions' "
                "tab, or HfApi().list_repo_refs), or drop '@...' to use main.",
            ) from exc
        if isinstance(exc, EntryNotFoundError):
            raise IngredientNotFoundError(
                f"A file of ingredient {ref.spec!r} listed by the Hub could not be downloaded "
                f"({cut(' '.join(str(exc).split()))}).",
                fix="The repo may have changed during the download; run the command again.",
            ) from exc
        if isinstance(exc, OfflineModeIsEnabled):
            raise HubError(
                f"Ingredient {ref.spec!r} must be resolved on the Hub, but HF_HUB_OFFLINE is set.",
                fix="Unset HF_HUB_OFFLINE, or name the ingredient by its downloaded local folder.",
            ) from exc
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            if status == 401:
                raise HubError(
                    f"The Hub at {endpoint} refused the token sent for ingredient {ref.spec!r} (HTTP 401): it is "
                    "invalid, expired or revoked.",
                    fix="Create a new token at https://huggingface.co/settings/tokens and log in again with "
                    f"'hf auth login', set HF_TOKEN or pass {option('token', 'hf_...')}.",
                ) from exc
            tries = f" after {constants.hub_retries() + 1} tries" if status in _TRANSIENT_STATUS else ""
            raise HubError(
                f"The Hub at {endpoint} answered HTTP {status} for ingredient {ref.spec!r}{tries}: {_first_line(exc)}",
                fix="Retry later (a rerun resumes from what is in the cache); if it persists, check HF_ENDPOINT and "
                "your token; HFSOUP_HUB_RETRIES sets how many times hfsoup retries.",
            ) from exc
        if _is_connection_error(exc) or _is_transient(exc):
            raise HubError(
                f"Could not get ingredient {ref.spec!r} from the Hub at {endpoint} ({_first_line(exc)}), "
                f"{constants.hub_retries() + 1} tries in a row.",
                fix="Check your network or HF_ENDPOINT, then rerun: completed files are kept in the cache and a "
                "partial one resumes; HFSOUP_HUB_RETRIES sets how many times hfsoup retries. Models already "
                "downloaded can also be named by their local folder.",
            ) from exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"No space left on the device while downloading ingredient {ref.spec!r} into the Hub cache "
                f"({exc.filename or constants.hub_cache()}).",
                fix="Free some space, or point HF_HUB_CACHE (or HF_HOME) at a larger disk, then rerun.",
            ) from exc
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return cut(text.splitlines()[0] if text else type(exc).__name__)


def _is_connection_error(exc: BaseException) -> bool:
    # huggingface_hub >= 2 talks HTTP through `httpx2` (earlier versions: `httpx`); both name their errors alike.
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if isinstance(exc, module.TransportError):
            return True
    return isinstance(exc, ConnectionError | TimeoutError)
