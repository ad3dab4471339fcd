"""Safetensors headers, checked by the rules `safetensors` itself applies, before any tensor is read.

A header is 8 bytes of little-endian length, then that many bytes of JSON: an object mapping each tensor name to
`{"dtype", "shape", "data_offsets"}`, plus an optional `__metadata__` map of strings to strings. `safetensors`
refuses (see its Rust `Metadata::validate`): a header longer than 100 MB or than the file, JSON that is not an
object, a duplicate field, an unknown dtype, a shape that is not a list of non-negative integers, offsets that are
not two integers, tensors whose bytes overlap or leave a gap (sorted by offset they must tile the data section from 0
to its end exactly), and a byte count that does not match the shape and dtype. hfsoup refuses the same files, and also
a repeated tensor name (which `safetensors`' JSON reader resolves silently by keeping the last), so that two names can
never alias the same bytes and a reader never trusts what the writer did not mean.

Every refusal is one `CorruptCheckpointError` naming the file and the field. Bytes of a file that is not safetensors
are never quoted: a text file's first 8 bytes would otherwise be printed as a "header length".
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from .. import constants
from ..errors import CorruptCheckpointError

# Bits per element of every dtype `safetensors` 0.8 knows (its `Dtype` enum); sub-byte types pack elements.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
_FIX = "The file is corrupt or was written by a buggy or hostile tool; re-download or re-export it."
# Names quoted in messages are cut here: a header may hold a name of megabytes.
_QUOTE_CHARS = 120


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor as its header describes it: dtype code, shape, and its bytes' span in the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def bounded_repr(value: object) -> str:
    """`repr(value)`, cut to a bounded length."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]}...'"


def header_length(prefix: bytes, file_size: int, where: str) -> int:
    """The header's length from the file's first 8 bytes, checked against the file and the bound.

    The bytes themselves are never quoted: for a file that is not safetensors they are its content.
    """
    if len(prefix) < 8 or file_size < 8:
        raise CorruptCheckpointError(f"{where} is not a safetensors file: it is {file_size} bytes long.", fix=_FIX)
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > constants.SAFETENSORS_MAX_HEADER_BYTES:
        raise CorruptCheckpointError(
            f"{where} is not a safetensors file hfsoup will read: its first 8 bytes announce a header larger than "
            f"the {constants.SAFETENSORS_MAX_HEADER_BYTES}-byte bound (safetensors' own).",
            fix=_FIX,
        )
    if length > file_size - 8:
        raise CorruptCheckpointError(
            f"{where} is not a safetensors file: its first 8 bytes do not give a header length that fits its "
            f"{file_size} bytes (it is truncated, or another kind of file).",
            fix=_FIX,
        )
    return length


def parse_header(raw: bytes, *, data_size: int, where: str) -> dict[str, HeaderEntry]:
    """Every tensor of a header (`raw`: the JSON bytes after the length), checked; `data_size` is the number of bytes
    after the header (the file's size less 8 and the header)."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as e:
        # str(e) would quote the offending byte: say where, not what.
        raise CorruptCheckpointError(
            f"{where} is not a valid safetensors file: its header is not UTF-8 text (byte {e.start}).", fix=_FIX
        ) from None
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(
            f"{where} is not a valid safetensors file: its header is not JSON ({e.msg} at byte {e.pos}).", fix=_FIX
        ) from None
    except _DuplicateKey as e:
        raise CorruptCheckpointError(
            f"{where}: the safetensors header names {bounded_repr(e.key)} twice; a repeated name would alias or hide "
            "bytes.",
            fix=_FIX,
        ) from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(
            f"{where}: the safetensors header is a JSON {_kind(header)}, where an object of tensors belongs.", fix=_FIX
        )
    _check_metadata(header.get("__metadata__"), where)
    entries = {name: _entry(name, info, data_size, where) for name, info in header.items() if name != "__metadata__"}
    _check_tiling(entries, data_size, where)
    return entries


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of repeated keys silently; safetensors refuses repeated fields.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _kind(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _is_count(value: object) -> bool:
    # bool is an int subclass in Python; safetensors reads only JSON integers (usize) here.
    return type(value) is int and value >= 0


def _check_metadata(metadata: object, where: str) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise CorruptCheckpointError(
            f"{where}: the safetensors header's __metadata__ is a JSON {_kind(metadata)}, not a map of strings.",
            fix=_FIX,
        )
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise CorruptCheckpointError(
                f"{where}: __metadata__[{bounded_repr(key)}] is a JSON {_kind(value)}; safetensors metadata values "
                "are strings.",
                fix=_FIX,
            )


def _entry(name: str, info: object, data_size: int, where: str) -> HeaderEntry:
    # The common case in one pass of cheap checks; what failed is worked out, and said, only for a bad entry.
    if type(info) is dict and len(info.keys() & _FIELDS) == 3:
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if (
            type(dtype) is str
            and dtype in DTYPE_BITS
            and type(shape) is list
            and all(type(d) is int and d >= 0 for d in shape)
            and type(offsets) is list
            and len(offsets) == 2
            and type(offsets[0]) is int
            and type(offsets[1]) is int
            and 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            bits = DTYPE_BITS[dtype]
            for dim in shape:
                bits *= dim
            if bits % 8 == 0 and offsets[1] - offsets[0] == bits // 8:
                return HeaderEntry(dtype, tuple(shape), offsets[0], offsets[1])
    _refuse_entry(f"{where}: tensor {bounded_repr(name)}", info, data_size)
    raise AssertionError("unreachable")  # pragma: no cover


_FIELDS = {"dtype", "shape", "data_offsets"}


def _refuse_entry(field: str, info: object, data_size: int) -> None:
    """Raise the error that says which rule a header entry breaks."""
    if not isinstance(info, dict):
        raise CorruptCheckpointError(f"{field} is a JSON {_kind(info)}, where an object belongs.", fix=_FIX)
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in info]
    if missing:
        raise CorruptCheckpointError(f"{field} has no {', '.join(missing)}.", fix=_FIX)
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CorruptCheckpointError(
            f"{field} has dtype {bounded_repr(dtype)}, which is not a safetensors dtype ({', '.join(DTYPE_BITS)}).",
            fix=_FIX,
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CorruptCheckpointError(
            f"{field} has shape {bounded_repr(shape)}: a shape is a list of non-negative integers.", fix=_FIX
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise CorruptCheckpointError(
            f"{field} has data_offsets {bounded_repr(offsets)}: they are two non-negative integers [begin, end].",
            fix=_FIX,
        )
    begin, end = offsets
    bits = DTYPE_BITS[dtype]
    for dim in shape:
        bits *= dim
    if begin > end or bits % 8 or end - begin != bits // 8:
        raise CorruptCheckpointError(
            f"{field} claims bytes {begin}..{end}, which does not match its shape {shape} and dtype {dtype} "
            f"({bits / 8:g} bytes).",
            fix=_FIX,
        )
    raise CorruptCheckpointError(
        f"{field} claims bytes {begin}..{end} of a {data_size}-byte data section, past its end.", fix=_FIX
    )


def _check_tiling(entries: dict[str, HeaderEntry], data_size: int, where: str) -> None:
    """Sorted by offset, the tensors' bytes follow each other from 0 to the end of the data, with no gap or overlap."""
    position, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            if entry.begin < position:
                what = (
                    f"overlaps the bytes of tensor {bounded_repr(previous)} (starts at {entry.begin}, before "
                    f"{position})"
                )
            else:
                what = f"leaves a gap: it starts at byte {entry.begin}, the previous tensor ends at {position}"
            raise CorruptCheckpointError(f"{where}: tensor {bounded_repr(name)} {what}.", fix=_FIX)
        position, previous = entry.end, name
    if position != data_size:
        raise CorruptCheckpointError(
            f"{where}: the tensors cover {position} bytes of a {data_size}-byte data section; the file is "
            f"{'truncated' if position > data_size else 'longer than its header says'}.",
            fix=_FIX,
        )
