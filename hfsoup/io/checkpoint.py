"""Checkpoints on disk: lazy per-tensor reads and sharded, streaming safetensors writes.

Reading never loads a whole model: the safetensors header is parsed on its own (so structure can be checked before
any tensor is touched) and tensors are read one at a time from a memory map of the file, as numpy views of the stored
bytes (`get_array`, what the soup engine uses: no torch import, no copy) or as torch tensors (`get`). Writing plans the
shards from the tensor sizes up front, so shard names (`model-00001-of-00003.safetensors`) are known before the
first byte is written and nothing is buffered beyond the block being written.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import queue
import re
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptCheckpointError, MissingWeightsError, option
from .confine import allowed_roots, confined, plain_name
from .headers import bounded_repr, header_length, parse_header
from .jsonread import parse_json, read_bounded

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
PICKLE_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# safetensors dtype codes (https://huggingface.co/docs/safetensors/index#format) -> the numpy dtype that holds the
# stored bytes. numpy has no bfloat16 or float8: those are held as raw unsigned integers of the same width and
# converted explicitly (`soups.kernels`), which keeps torch out of the soup path.
STORAGE: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),
    "F8_E4M3": np.dtype(np.uint8),
    "F8_E5M2": np.dtype(np.uint8),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
# Output dtype names (`--dtype`) -> codes.
NAME_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def torch_dtypes() -> dict[str, torch.dtype]:
    """Codes -> torch dtypes; imports torch, so only callers that work with torch tensors use it."""
    import torch

    return {code: getattr(torch, name) for code, name in _TORCH_NAMES.items()}


def __getattr__(name: str) -> Any:
    # `DTYPES` (code -> torch dtype) and `DTYPE_CODES` (the reverse) are built on first use, so that importing this
    # module does not import torch.
    if name == "DTYPES":
        return torch_dtypes()
    if name == "DTYPE_CODES":
        return {dtype: code for code, dtype in torch_dtypes().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class TensorMeta:
    """Name-independent facts about one stored tensor: its dtype code (`"F32"`...) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * STORAGE[self.dtype].itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES


StructureMap = dict[str, TensorMeta]


def read_safetensors_header(path: str | os.PathLike, *, where: str | None = None) -> StructureMap:
    """Parse a safetensors file's header alone, by `safetensors`' own rules (`hfsoup.io.headers`).

    Raises `CorruptCheckpointError`, naming the file (`where`, by default its path) and the field, when the header is
    truncated, not a JSON object, repeats a name, names an unknown dtype, has a shape or offsets that are not
    non-negative integers, or tensors whose bytes do not tile the data section exactly, so a lying file is refused
    before any tensor is read.
    """
    return _parse_header(path, where=where)[0]


def _parse_header(path: str | os.PathLike, *, where: str | None = None) -> tuple[StructureMap, dict[str, int]]:
    """The structure, and where each tensor's bytes start in the file (validated: they tile the data section)."""
    where = where or str(path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        length = header_length(f.read(8), file_size, where)
        raw = f.read(length)
    if len(raw) != length:  # the file shrank while being read
        raise CorruptCheckpointError(f"{where} was truncated while hfsoup read its header.")
    return structure_from_header(raw, file_size=file_size, where=where)


def structure_from_header(raw: bytes, *, file_size: int, where: str) -> tuple[StructureMap, dict[str, int]]:
    """Check a header's JSON bytes (`raw`, read after the 8-byte length) against a file of `file_size` bytes; return
    the structure and each tensor's first byte in the file. Local files and the Hub's Range reads both come here."""
    entries = parse_header(raw, data_size=file_size - 8 - len(raw), where=where)
    structure: StructureMap = {}
    starts: dict[str, int] = {}
    for name, entry in entries.items():
        if entry.dtype not in STORAGE:
            raise CorruptCheckpointError(
                f"{where}: tensor {bounded_repr(name)} has dtype {entry.dtype!r}, which hfsoup cannot average."
            )
        structure[name] = TensorMeta(entry.dtype, entry.shape)
        starts[name] = 8 + len(raw) + entry.begin
    return structure, starts


@dataclass(frozen=True)
class WeightsLayout:
    """Which files hold a checkpoint's weights, and which tensor lives in which file."""

    format: str  # "safetensors" or "pickle"
    files: tuple[str, ...]
    index_file: str | None = None


def weights_layout(files: Iterable[str]) -> WeightsLayout | None:
    """Pick the weights of a checkpoint from its file names (repo-relative), preferring safetensors.

    Only root-level files count: sub-folders hold other variants (ONNX exports, adapters) that are not the model.
    """
    names = {f for f in files if "/" not in f}
    if SAFE_WEIGHTS_INDEX_NAME in names:
        return WeightsLayout("safetensors", (), SAFE_WEIGHTS_INDEX_NAME)
    if SAFE_WEIGHTS_NAME in names:
        return WeightsLayout("safetensors", (SAFE_WEIGHTS_NAME,))
    if PICKLE_WEIGHTS_INDEX_NAME in names:
        return WeightsLayout("pickle", (), PICKLE_WEIGHTS_INDEX_NAME)
    if PICKLE_WEIGHTS_NAME in names:
        return WeightsLayout("pickle", (PICKLE_WEIGHTS_NAME,))
    return None


def read_weight_map(index_path: str | os.PathLike, *, where: str | None = None) -> dict[str, str]:
    """The tensor name -> shard file map of a `*.index.json` (`where` names it in errors; by default its path).

    Every shard must be a plain relative file name (`confine.plain_name`): an index naming `/etc/passwd` or
    `../other/model.safetensors` is refused before any shard is opened.
    """
    where = where or str(index_path)
    try:
        index = parse_json(read_bounded(Path(index_path)))
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, not JSON or nested too deep; none quotes the content
        raise CorruptCheckpointError(f"{where} is not a valid weights index: {type(e).__name__}.") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptCheckpointError(
            f"{where} is not a valid weights index: expected an object with a non-empty 'weight_map' object of "
            "tensor name -> shard file.",
            fix="The file is corrupt or was written by a buggy tool; re-download or re-export it.",
        )
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CorruptCheckpointError(
                f"{where}: the shard of tensor {bounded_repr(name)} is not a file name string."
            )
        plain_name(shard, where=where, what=f"shard of tensor {bounded_repr(name)}")
    return dict(weight_map)


class CheckpointReader:
    """Read one checkpoint folder tensor by tensor, without loading the whole model.

    Args:
        folder (`str` or `os.PathLike`):
            A folder holding `model.safetensors`, or shards with `model.safetensors.index.json`.
        allow_pickle (`bool`, *optional*, defaults to `False`):
            Also accept `pytorch_model.bin` checkpoints, loaded with `torch.load(weights_only=True)`, which refuses
            anything but tensors and plain containers (no code runs from the file).
        layout (`WeightsLayout`, *optional*):
            The files to read, when they are not a model's (`io.adapter` reads an adapter's safetensors file so).

    Example:
        ```py
        >>> with CheckpointReader("out/") as reader:
        ...     print(len(reader.structure), reader.get("classifier.weight").shape)
        ```
    """

    def __init__(
        self, folder: str | os.PathLike, *, allow_pickle: bool = False, layout: WeightsLayout | None = None
    ) -> None:
        self.folder = Path(folder)
        if layout is None and self.folder.is_dir():
            layout = weights_layout(p.name for p in self.folder.iterdir())
        elif layout is not None:
            layout = WeightsLayout("safetensors", layout.files)  # another file of the same format
        if layout is None:
            raise MissingWeightsError(f"{self.folder} holds no model weights (no {SAFE_WEIGHTS_NAME} or its index).")
        if layout.format == "pickle" and not allow_pickle:
            raise MissingWeightsError(
                f"{self.folder} holds only pickle weights ({layout.index_file or layout.files[0]}), which can run "
                "code when loaded.",
                fix=f"Pass {option('allow_pickle')} to load them with torch.load(weights_only=True), or "
                "convert the checkpoint to safetensors.",
            )
        self.format = layout.format
        # Every file read is confined to the folder (or its Hub snapshot's blobs): a link or an index entry
        # pointing elsewhere is refused before it is opened.
        roots = allowed_roots(self.folder)
        if layout.index_file:
            index = confined(self.folder, layout.index_file, where=str(self.folder), what="weights index", roots=roots)
            self.weight_map = read_weight_map(index, where=str(self.folder / layout.index_file))
        else:
            self.weight_map = None
        files = sorted(set(self.weight_map.values())) if self.weight_map else list(layout.files)
        self._paths = {
            f: confined(self.folder, f, where=str(self.folder), what="weights file", roots=roots) for f in files
        }
        missing = [f for f in files if not self._paths[f].is_file()]
        if missing:
            raise CorruptCheckpointError(f"{self.folder} is missing weight shards named in its index: {missing}.")
        self._handles: dict[str, object] = {}
        self._maps: dict[str, mmap.mmap | bytes] = {}
        self._starts: dict[str, int] = {}
        self.structure: StructureMap = {}
        self._file_of: dict[str, str] = {}
        for file in files:
            metas = self._read_structure(file)
            for name, meta in metas.items():
                self.structure[name] = meta
                self._file_of[name] = file
        if self.weight_map:
            absent = sorted(set(self.weight_map) - set(self._file_of))
            if absent:
                raise CorruptCheckpointError(
                    f"{self.folder}: the weights index names {len(absent)} tensors no shard holds, e.g. {absent[:3]}."
                )

    @property
    def weight_files(self) -> list[Path]:
        """The weight files read, in name order (what a content hash of the checkpoint covers)."""
        return [self._paths[f] for f in sorted(self._paths)]

    def _read_structure(self, file: str) -> StructureMap:
        if self.format == "safetensors":
            structure, starts = _parse_header(self._paths[file], where=str(self.folder / file))
            self._starts.update(starts)
            return structure
        # Pickle: map the file (no full read) and describe what weights_only loading returns.
        state = self._pickle_state(file)
        codes = {dtype: code for code, dtype in torch_dtypes().items()}
        return {name: TensorMeta(codes[t.dtype], tuple(t.shape)) for name, t in state.items()}

    def _pickle_state(self, file: str) -> dict[str, torch.Tensor]:
        import torch

        if file not in self._handles:
            try:
                state = torch.load(self._paths[file], map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # torch raises UnpicklingError, RuntimeError... for refused or broken files
                raise CorruptCheckpointError(
                    f"{self.folder / file} could not be loaded with torch.load(weights_only=True): {e}"
                ) from e
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CorruptCheckpointError(f"{self.folder / file} does not hold a flat dict of tensors.")
            self._handles[file] = state
        return self._handles[file]  # type: ignore[return-value]

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (on the CPU, in its stored dtype)."""
        file = self._file_of[name]
        if self.format == "pickle":
            return self._pickle_state(file)[name]
        if file not in self._handles:
            from safetensors import safe_open

            self._handles[file] = safe_open(self._paths[file], framework="pt", device="cpu")
        return self._handles[file].get_tensor(name)  # type: ignore[attr-defined]

    def get_array(self, name: str) -> np.ndarray:
        """One tensor's stored bytes as a read-only numpy array of its shape, without a copy for safetensors files.

        The dtype is `STORAGE[code]`: bfloat16 and float8 come back as unsigned integers holding their bits.
        """
        meta, file = self.structure[name], self._file_of[name]
        if self.format == "pickle":
            tensor = self._pickle_state(file)[name].contiguous()
            raw = tensor.reshape(-1).view(torch_dtypes()["U8"]).numpy()
            return raw.view(STORAGE[meta.dtype]).reshape(meta.shape)
        if file not in self._maps:
            with open(self._paths[file], "rb") as f:
                # A memory map: pages are read on first touch and belong to the page cache, not to this process's
                # heap, so a soup's memory does not grow with the size or number of its ingredients.
                size = os.fstat(f.fileno()).st_size
                self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            if isinstance(self._maps[file], mmap.mmap) and hasattr(mmap, "MADV_SEQUENTIAL"):
                # Tensors are read front to back: the kernel may read ahead generously and drop pages behind.
                self._maps[file].madvise(mmap.MADV_SEQUENTIAL)  # type: ignore[union-attr]
        array = np.frombuffer(self._maps[file], STORAGE[meta.dtype], meta.numel, self._starts[name])
        return array.reshape(meta.shape)

    def advise(self, name: str, start: int, stop: int, advice: int) -> None:
        """`madvise` the bytes of elements `start:stop` of tensor `name`, when it is memory-mapped here (a no-op
        otherwise, and where the platform lacks `madvise`): `mmap.MADV_WILLNEED` reads them ahead, in the background;
        `mmap.MADV_DONTNEED` takes them out of this process (they stay in the page cache; a later read maps them
        again). The range is widened to whole pages."""
        mapped = self._maps.get(self._file_of.get(name, ""))
        if not isinstance(mapped, mmap.mmap) or not hasattr(mapped, "madvise") or stop <= start:
            return
        itemsize = np.dtype(STORAGE[self.structure[name].dtype]).itemsize
        first = self._starts[name] + start * itemsize
        last = min(self._starts[name] + stop * itemsize, len(mapped))
        first -= first % mmap.PAGESIZE
        if last > first:
            try:
                mapped.madvise(advice, first, last - first)
            except OSError:  # advice only: a kernel that refuses it reads on demand as before
                pass

    def is_mapped(self, name: str) -> bool:
        """Whether tensor `name` is read from a memory map here (after its first `get_array`)."""
        return name in self._file_of and isinstance(self._maps.get(self._file_of[name]), mmap.mmap)

    def release(self, name: str) -> None:
        """Unmap tensor `name`'s pages from this process once it has been read: the resident memory of a soup then
        stays near the read-ahead window whatever the checkpoint's size (the page cache keeps the pages)."""
        if hasattr(mmap, "MADV_DONTNEED") and name in self.structure:
            self.advise(name, 0, self.structure[name].numel, mmap.MADV_DONTNEED)

    def close(self) -> None:
        self._handles.clear()
        maps, self._maps = self._maps, {}
        for mapped in maps.values():
            if isinstance(mapped, mmap.mmap):
                try:
                    mapped.close()
                except BufferError:  # arrays still view it: the map closes when the last of them goes
                    pass

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: How far ahead of the block being computed each ingredient's bytes are asked for (`ReadAhead`).
READ_AHEAD_BYTES = 16 << 20


class ReadAhead:
    """Keep the kernel reading each ingredient's copy of one tensor a bounded window ahead of the block in use.

    From a cold page cache the soup reads N files at once, a block of each in turn; left to itself the kernel reads
    each a little ahead on every fault and the reads of the N files interleave in small pieces. Asking for the next
    `window` bytes of every file (`MADV_WILLNEED`, in the background) while the current block is computed keeps
    the disk busy with large reads, and bounds what is read ahead: a window per ingredient, never a whole tensor.

    Args:
        readers (`Sequence[CheckpointReader]`): the ingredients (and the base), each holding `name`.
        name (`str`): the tensor.
        window (`int`, *optional*): bytes ahead per reader; `READ_AHEAD_BYTES` by default.
    """

    def __init__(self, readers: Sequence[CheckpointReader], name: str, window: int = READ_AHEAD_BYTES) -> None:
        self.parts = [r for r in readers if r.is_mapped(name)]
        self.name = name
        self.numel = self.parts[0].structure[name].numel if self.parts else 0
        itemsize = max((np.dtype(STORAGE[r.structure[name].dtype]).itemsize for r in self.parts), default=1)
        self.window = max(window // itemsize, 1)  # in elements
        self.asked = 0  # elements asked for so far, in every reader
        self.released = 0  # elements unmapped so far

    def advance(self, position: int, done: int = 0) -> None:
        """The block ending at element `position` is about to be read: ask for up to a window beyond it. `done`:
        the elements before it are finished with; once a window of them has gathered they are unmapped from this
        process (`CheckpointReader.advise` with `MADV_DONTNEED`), so even a tensor larger than the window is never
        resident whole."""
        if hasattr(mmap, "MADV_DONTNEED") and done - self.released >= self.window:
            for reader in self.parts:
                reader.advise(self.name, self.released, done, mmap.MADV_DONTNEED)
            self.released = done
        if not hasattr(mmap, "MADV_WILLNEED") or self.asked >= self.numel or position + self.window // 2 < self.asked:
            return
        stop = min(self.numel, position + self.window)
        for reader in self.parts:
            reader.advise(self.name, self.asked, stop, mmap.MADV_WILLNEED)
        self.asked = stop


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_size(size: str | int) -> int:
    """Parse `"5GB"`, `"500MiB"` or a byte count into bytes (decimal units, as `transformers` uses)."""
    if isinstance(size, int):
        return size
    match = _SIZE_RE.match(size)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {size!r} (expected e.g. '5GB', '500MB' or a number of bytes)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def plan_shards(sizes: list[tuple[str, int]], max_shard_size: int) -> list[list[str]]:
    """Group tensors, in order, into shards of at most `max_shard_size` bytes (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    current = 0
    for name, nbytes in sizes:
        if shards[-1] and current + nbytes > max_shard_size:
            shards.append([])
            current = 0
        shards[-1].append(name)
        current += nbytes
    return shards


def shard_file_names(n_shards: int) -> list[str]:
    """File names as `transformers.save_pretrained` gives them."""
    if n_shards == 1:
        return [SAFE_WEIGHTS_NAME]
    return [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]


class DirectFile:
    """A file written front to back with `O_DIRECT`: the bytes go from an aligned buffer to the disk, not through
    the page cache.

    A buffered write copies every byte into the page cache, and on the virtual machines many soups run on that copy
    was the dearest part of a large soup: 1.3 to 6 s of kernel CPU time for the 2.2 GB of a 1B-parameter bf16
    checkpoint, against 0.03 s (and 0.8-1 s of disk time, overlapped with the arithmetic) through `O_DIRECT`. Writes
    are gathered into `CHUNK` bytes of page-aligned memory and written at aligned offsets; the last, unaligned tail is
    written with `O_DIRECT` switched off. Where the filesystem refuses `O_DIRECT` (at open or at the first write),
    the file is written through the page cache instead. `HFSOUP_DIRECT_IO=0` turns it off.
    """

    #: Files smaller than this are written through the page cache: the aligned buffer would cost more than it saves.
    MIN_BYTES = 64 << 20
    CHUNK = 8 << 20
    _ALIGN = 4096

    def __init__(self, fd: int, offset: int = 0) -> None:
        self._fd = fd
        memory = np.empty(self.CHUNK + self._ALIGN, np.uint8)
        skip = -memory.ctypes.data % self._ALIGN  # O_DIRECT writes from aligned memory
        self._view = memoryview(memory[skip : skip + self.CHUNK]).cast("B")
        self._fill = 0
        self._offset = offset
        self._direct = True

    @classmethod
    def open(cls, path: Path, offset: int = 0) -> DirectFile | None:
        """`path` opened for writing with `O_DIRECT` from byte `offset`, or None where this system or filesystem has
        no such thing. At offset 0 the file is created (emptied); at another it must exist (a part of a file that
        several processes write, `SafetensorsStreamWriter`'s `part`) and is written from there without truncation."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return None
        create = os.O_CREAT | os.O_TRUNC if offset == 0 else 0
        try:
            fd = os.open(path, os.O_WRONLY | create | os.O_CLOEXEC | flag, 0o666)
        except OSError as e:
            if e.errno == errno.EINVAL:  # the filesystem does not do O_DIRECT
                return None
            raise
        return cls(fd, offset)

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            n = min(len(view) - done, self.CHUNK - self._fill)
            self._view[self._fill : self._fill + n] = view[done : done + n]
            self._fill += n
            done += n
            if self._fill == self.CHUNK:
                self._flush(self._fill - (self._offset + self._fill) % self._ALIGN)  # up to an aligned offset
        return done

    def _flush(self, length: int) -> None:
        """Write the buffer's first `length` bytes at `_offset` and keep what follows them. From an unaligned offset
        (a part that starts mid-page) the bytes up to the next aligned one go through the page cache first."""
        if self._direct and self._offset % self._ALIGN:
            head = min(length, -self._offset % self._ALIGN)
            self._pwrite(head, direct=False)
            length -= head
        if length > 0:
            self._pwrite(length, direct=self._direct)

    def _pwrite(self, length: int, *, direct: bool) -> None:
        toggled = self._direct and not direct
        if toggled:
            self._set_direct(False)
        written = 0
        try:
            while written < length:
                try:
                    n = os.pwrite(self._fd, self._view[written:length], self._offset + written)
                except OSError as e:
                    if e.errno != errno.EINVAL or not self._direct or toggled:
                        raise
                    self._buffered()  # O_DIRECT opened, but this filesystem refuses its writes
                    continue
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += n
                if self._direct and not toggled and (self._offset + written) % self._ALIGN:
                    self._buffered()  # a short write left an unaligned offset: the rest goes through the page cache
        finally:
            if toggled and self._direct:
                self._set_direct(True)
        self._offset += length
        rest = self._fill - length
        self._view[:rest] = self._view[length : self._fill]
        self._fill = rest

    def _set_direct(self, on: bool) -> None:
        import fcntl

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)

    def _buffered(self) -> None:
        self._set_direct(False)
        self._direct = False

    def discard(self) -> None:
        """Close without writing what is still buffered (the file is being thrown away)."""
        self._fill = 0
        self.close()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            aligned = self._fill - (self._offset + self._fill) % self._ALIGN
            if aligned > 0:
                self._flush(aligned)
            if self._fill:
                if self._direct:
                    self._buffered()
                self._flush(self._fill)
        finally:
            os.close(self._fd)
            self._fd = -1


class SafetensorsStreamWriter:
    """Write one safetensors file tensor by tensor, block by block, holding nothing in memory once written.

    The header is written first: every tensor's shape and dtype are known from the plan, so the offsets are too. The
    file is written under a temporary name and renamed into place by `close`, so a file with the final name is always
    complete. Writing runs on a background thread (it releases the GIL), so it overlaps with the caller computing the
    next block; at most `_QUEUE_BLOCKS` blocks wait in between. Nothing hashes the bytes on the way: a sha256 of the
    output took 1.3 s of CPU per 2.2 GB written (a quarter of a 1B-parameter soup's time on 2 cores), and nothing
    could trust it (`--resume` recomputes a staged shard and compares its bytes; a Hub upload hashes what it sends).

    Args:
        path (`str` or `os.PathLike`): the final file name.
        tensors (`list[tuple[str, TensorMeta]]`): every tensor, in the order they will be written.
        metadata (`dict[str, str]`, *optional*): the header's `__metadata__`.

    Example:
        ```py
        >>> writer = SafetensorsStreamWriter("model.safetensors", [("w", TensorMeta("F32", (2, 2)))])
        >>> writer.add("w", np.eye(2, dtype=np.float32))
        >>> writer.close()
        ```
    """

    _QUEUE_BLOCKS = 8

    def __init__(
        self,
        path: str | os.PathLike,
        tensors: list[tuple[str, TensorMeta]],
        *,
        metadata: dict[str, str] | None = None,
        part: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.writing")
        raw, offsets = _safetensors_header(tensors, metadata)
        self._part = part
        first, last = part if part is not None else (0, len(tensors))
        self._expected = list(tensors[first:last])
        self._size = 8 + len(raw) + offsets[-1]
        self._start = 0 if part is None else 8 + len(raw) + offsets[first]
        self._next = 0
        self._open: tuple[str, TensorMeta, int] | None = None  # the tensor being written, and bytes still due
        self._file = self._open_sink(offsets[last] - offsets[first])
        self._queue: queue.Queue = queue.Queue(self._QUEUE_BLOCKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"write {self.path.name}", daemon=True)
        self._thread.start()
        if part is None:
            self._put(struct.pack("<Q", len(raw)) + raw)

    @classmethod
    def prepare(
        cls, path: str | os.PathLike, tensors: list[tuple[str, TensorMeta]], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Create the file that writers of `part`s of it fill side by side (one per process): its header, and its
        full size (sparse until written). `finish` moves it into place once every part is written."""
        raw, offsets = _safetensors_header(tensors, metadata)
        path = Path(path)
        with open(path.with_name(f".{path.name}.writing"), "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offsets[-1])

    @staticmethod
    def finish(path: str | os.PathLike, *, complete: bool) -> None:
        """Move a file written in parts into place (`complete`), or remove what the parts left."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.writing")
        if complete:
            os.replace(tmp, path)
        else:
            tmp.unlink(missing_ok=True)

    def _open_sink(self, nbytes: int):  # noqa: ANN202 - a binary file; `soups.resume` compares instead of writing
        if nbytes >= DirectFile.MIN_BYTES and os.environ.get("HFSOUP_DIRECT_IO", "1").strip() != "0":
            direct = DirectFile.open(self._tmp, self._start)
            if direct is not None:
                return direct
        if self._part is None:
            return open(self._tmp, "wb")  # noqa: SIM115 - closed in close() or abort()
        sink = open(self._tmp, "r+b")  # noqa: SIM115 - as above; another process writes the other parts
        sink.seek(self._start)
        return sink

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(data)
                except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, raised there
                    self._error = e

    def _put(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def begin(self, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        """Start the next tensor; its bytes follow through `write`."""
        if self._open is not None or self._next >= len(self._expected):
            raise RuntimeError(f"{self.path.name}: tensor {name!r} begun out of order")  # a bug, not input
        expected, meta = self._expected[self._next]
        if name != expected or dtype != meta.dtype or tuple(shape) != meta.shape:
            raise RuntimeError(f"tensor {name!r} does not match the planned {expected!r} {meta}")  # a bug, not input
        self._open = (name, meta, meta.nbytes)

    def write(self, block: np.ndarray) -> None:
        """The next bytes of the open tensor: a C-contiguous array in its storage dtype. It must not change later."""
        if self._open is None:
            raise RuntimeError(f"{self.path.name}: write before begin")
        name, meta, due = self._open
        if block.dtype != STORAGE[meta.dtype] or block.nbytes > due:
            raise RuntimeError(f"{self.path.name}: block of {block.dtype} x {block.size} does not fit {name!r}")
        self._put(memoryview(np.ascontiguousarray(block)).cast("B"))
        self._open = (name, meta, due - block.nbytes)

    def end(self) -> None:
        """Finish the open tensor; all its bytes must have been written."""
        if self._open is None or self._open[2] != 0:
            raise RuntimeError(f"{self.path.name}: tensor {self._open and self._open[0]!r} ended incomplete")
        self._open = None
        self._next += 1

    def add(self, name: str, tensor: np.ndarray | torch.Tensor) -> None:
        """Write a whole tensor: a numpy array in its storage dtype, or a torch tensor."""
        if isinstance(tensor, np.ndarray):
            code = self._expected[self._next][1].dtype if self._next < len(self._expected) else "?"
            if tensor.dtype != STORAGE.get(code):
                raise RuntimeError(f"tensor {name!r}: a {tensor.dtype} array for a {code} slot")
            array = tensor
        else:
            codes = {dtype: code for code, dtype in torch_dtypes().items()}
            code = codes[tensor.dtype]
            # A byte view, without a copy (bfloat16 has no numpy dtype, uint8 does).
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            array = flat.view(torch_dtypes()["U8"]).numpy().view(STORAGE[code]).reshape(tuple(tensor.shape))
        self.begin(name, code, tuple(array.shape))
        self.write(array.reshape(-1))
        self.end()

    def _stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def close(self) -> None:
        """Finish the file and move it into place (a `part`: finish its bytes; `finish` moves the file)."""
        if self._next != len(self._expected):
            raise RuntimeError(f"{self.path.name}: {self._next} of {len(self._expected)} tensors written")
        self._stop()
        self._file.close()
        if self._error is not None:
            if self._part is None:
                self._tmp.unlink(missing_ok=True)
            raise self._error
        if self._part is None:
            # No fsync: a shard that a crash leaves damaged differs from its recomputation on --resume and is
            # written again, so durability costs nothing in correctness and would cost a write-back wait per shard.
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._thread.is_alive():
            self._stop()
        getattr(self._file, "discard", self._file.close)()
        if self._part is None:  # a part's file is the caller's to remove (`finish`), once every writer has stopped
            self._tmp.unlink(missing_ok=True)


def _safetensors_header(
    tensors: Sequence[tuple[str, TensorMeta]], metadata: dict[str, str] | None
) -> tuple[bytes, list[int]]:
    """The header of a safetensors file of `tensors` (padded so the data starts 8-byte aligned, as safetensors
    writes it) and the data offsets: tensor k's bytes start at `offsets[k]`, the data ends at `offsets[-1]`."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offsets = [0]
    for name, meta in tensors:
        header[name] = {
            "dtype": meta.dtype,
            "shape": list(meta.shape),
            "data_offsets": [offsets[-1], offsets[-1] + meta.nbytes],
        }
        offsets.append(offsets[-1] + meta.nbytes)
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8), offsets


def write_index(folder: str | os.PathLike, weight_map: dict[str, str], total_size: int) -> None:
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    Path(folder, SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()
