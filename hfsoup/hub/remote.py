"""An ingredient's tensor names, dtypes and shapes read from the Hub before any weights are downloaded.

A safetensors file opens with its header, so a few Range reads of each weights file tell what the checkpoint holds;
compatibility is checked on that, and a soup of mismatched models is refused before gigabytes are fetched. Every
read is bounded: a server that ignores the Range, or sends an endless body, is read only as far as the header goes.
"""

from __future__ import annotations

import logging

from .. import constants
from ..errors import CorruptCheckpointError, HubError
from ..io.checkpoint import StructureMap, structure_from_header
from ..io.headers import header_length
from .download import ingredient_errors, shard_names
from .refs import PinnedIngredient
from .retries import with_retries

logger = logging.getLogger(__name__)

# How many times a header that does not parse is read again: damage in transit differs between reads, damage on the
# Hub gives the same answer every time.
_HEADER_READS = 3
# The first Range read: most headers fit (as huggingface_hub reads them), so one request usually does.
_FIRST_READ = 100_000
# How much of an error answer to a Range read is kept for the message (the Hub's JSON errors are a few hundred bytes).
_ERROR_BODY_LIMIT = 64 * 1024


def remote_structure(ingredient: PinnedIngredient, *, token: str | bool | None = None) -> StructureMap | None:
    """Tensor names, dtypes and shapes from the safetensors headers on the Hub (Range reads, no weights download),
    checked by the same rules as a local file (`checkpoint.structure_from_header`).

    Returns `None` when the headers cannot be read remotely (pickle weights, or `HF_HUB_OFFLINE`, where the files are
    in the Hub cache); the caller then reads them after fetch.
    """
    if ingredient.ref.is_local or constants.hub_offline():
        return None
    if ingredient.layout.format not in ("safetensors", "adapter"):  # an adapter's file is safetensors too
        return None
    ref = ingredient.ref
    structure: StructureMap = {}
    with ingredient_errors(ref):
        files = list(ingredient.layout.files)
        if ingredient.layout.index_file:
            what = f"reading the index of {ref.spec}"
            files = with_retries(lambda: shard_names(ingredient, token=token), what=what)
        for file in files:
            for attempt in range(_HEADER_READS):
                try:
                    tensors, starts = with_retries(
                        lambda file=file: _remote_header(ingredient, file, token=token),
                        what=f"reading the safetensors header of {ref.spec}",
                    )
                    structure.update(tensors)
                    ingredient.locations.update({name: (file, start) for name, start in starts.items()})
                    break
                except CorruptCheckpointError as e:
                    if attempt == _HEADER_READS - 1:
                        raise CorruptCheckpointError(
                            f"Ingredient {ref.spec!r} at {ingredient.sha}: {e.message} (read {_HEADER_READS} times).",
                            fix="The file on the Hub is not valid safetensors; ask its author to re-upload it, or "
                            "leave the ingredient out.",
                        ) from e
                    logger.warning("the safetensors header of %s did not parse; reading it again", ref.spec)
    return structure


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


def _range_reader(ingredient: PinnedIngredient, file: str, *, token: str | bool | None):  # noqa: ANN202
    """`get(first, last)`: bytes `first..last` of `file` at the pinned commit, and the file's size (one Range read)."""
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

    return get


def read_range(ingredient: PinnedIngredient, file: str, first: int, last: int, *, token: str | bool | None) -> bytes:
    """Bytes `first..last` (inclusive) of one file of a pinned Hub ingredient, by a Range read (retried); the
    sampled shared-initialization estimate reads a few kilobytes of weights this way."""
    get = _range_reader(ingredient, file, token=token)
    with ingredient_errors(ingredient.ref):
        data = with_retries(lambda: get(first, last)[0], what=f"reading {file} of {ingredient.ref.spec}")
    if len(data) != last - first + 1:
        raise CorruptCheckpointError(
            f"{ingredient.ref.repo_id}/{file}: the Hub sent {len(data)} of the {last - first + 1} bytes asked for."
        )
    return data  # type: ignore[return-value]


def _remote_header(
    ingredient: PinnedIngredient, file: str, *, token: str | bool | None
) -> tuple[StructureMap, dict[str, int]]:
    get = _range_reader(ingredient, file, token=token)
    where = f"{ingredient.ref.repo_id}/{file}"
    head, size = get(0, _FIRST_READ - 1)
    length = header_length(head[:8], size, where)
    raw = head[8 : 8 + length] if len(head) >= 8 + length else get(8, 8 + length - 1)[0]
    if len(raw) != length:
        raise CorruptCheckpointError(f"{where}: the Hub sent {len(raw)} of the header's {length} bytes.")
    return structure_from_header(raw, file_size=size, where=where)
