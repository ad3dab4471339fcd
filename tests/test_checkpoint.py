"""Lazy safetensors reads, header validation and sharded streaming writes."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfsoup.errors import CorruptCheckpointError, MissingWeightsError
from hfsoup.io.checkpoint import (
    DTYPE_CODES,
    CheckpointReader,
    SafetensorsStreamWriter,
    TensorMeta,
    parse_size,
    plan_shards,
    read_safetensors_header,
    shard_file_names,
    weights_layout,
)


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "b.bias": torch.randn(7, generator=g).half(),
        "c.ids": torch.arange(5),
    }


def test_header_matches_tensors(tmp_path):
    save_file(_tensors(), tmp_path / "model.safetensors")
    header = read_safetensors_header(tmp_path / "model.safetensors")
    assert {n: (m.dtype, m.shape) for n, m in header.items()} == {
        "a.weight": ("F32", (4, 3)),
        "b.bias": ("F16", (7,)),
        "c.ids": ("I64", (5,)),
    }
    assert header["a.weight"].is_float and not header["c.ids"].is_float


def _rewrite_header(path, mutate):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    mutate(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h["a.weight"].update(data_offsets=[0, 10**9]),  # past the end of the file
        lambda h: h["a.weight"].update(shape=[400, 3]),  # shape disagrees with the byte count
        lambda h: h["a.weight"].update(dtype="F99"),  # unknown dtype
        lambda h: h["a.weight"].pop("data_offsets"),  # malformed entry
    ],
    ids=["offsets", "shape", "dtype", "malformed"],
)
def test_lying_header_is_refused(tmp_path, mutate):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path)
    _rewrite_header(path, mutate)
    with pytest.raises(CorruptCheckpointError):
        read_safetensors_header(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CorruptCheckpointError, match="header length"):
        read_safetensors_header(path)


def test_layout_prefers_safetensors_and_ignores_subfolders():
    assert weights_layout(["model.safetensors", "pytorch_model.bin"]).format == "safetensors"
    assert weights_layout(["model.safetensors.index.json", "model-00001-of-00002.safetensors"]).index_file
    assert weights_layout(["pytorch_model.bin"]).format == "pickle"
    assert weights_layout(["onnx/model.safetensors", "config.json"]) is None


def test_reader_refuses_pickle_unless_allowed(tmp_path):
    torch.save(_tensors(), tmp_path / "pytorch_model.bin")
    with pytest.raises(MissingWeightsError, match="--allow-pickle"):
        CheckpointReader(tmp_path)
    with CheckpointReader(tmp_path, allow_pickle=True) as reader:
        assert torch.equal(reader.get("a.weight"), _tensors()["a.weight"])


def test_reader_refuses_pickle_with_code_even_when_allowed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(1), "x": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CorruptCheckpointError, match="weights_only"):
        CheckpointReader(tmp_path, allow_pickle=True)


def test_stream_writer_round_trips(tmp_path):
    tensors = {"a": torch.randn(16, 16), "b": torch.randn(3).bfloat16(), "c": torch.arange(7)}
    metas = [(n, TensorMeta(DTYPE_CODES[t.dtype], tuple(t.shape))) for n, t in tensors.items()]
    writer = SafetensorsStreamWriter(tmp_path / "model.safetensors", metas, metadata={"format": "pt"})
    assert not (tmp_path / "model.safetensors").exists()  # only a finished file gets the final name
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    writer.close()
    loaded = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    assert read_safetensors_header(tmp_path / "model.safetensors")["b"].dtype == "BF16"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_stream_writer_refuses_unplanned_tensor_and_aborts_cleanly(tmp_path):
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors", [("a", TensorMeta("F32", (2,)))])
    with pytest.raises(RuntimeError):
        writer.add("a", torch.zeros(3))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_plan_shards_and_names():
    plan = plan_shards([(f"t{i}", 1024) for i in range(5)], max_shard_size=2500)
    assert [len(s) for s in plan] == [2, 2, 1]
    assert shard_file_names(3)[0] == "model-00001-of-00003.safetensors" and shard_file_names(1) == [
        "model.safetensors"
    ]


def test_index_naming_missing_shard_is_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-1.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="missing weight shards"):
        CheckpointReader(tmp_path)


@pytest.mark.parametrize(("text", "expected"), [("5GB", 5 * 10**9), ("500MiB", 500 * 2**20), ("1234", 1234)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_rejects_nonsense():
    with pytest.raises(ValueError):
        parse_size("five gigs")


def _rss_file() -> int:
    """This process's resident file-backed memory (memory-mapped files), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise")
def test_a_released_tensor_leaves_the_process_but_reads_the_same_again(tmp_path):
    """`release` unmaps a tensor's pages once read, so a soup's resident memory stays a window whatever the size;
    the bytes read afterwards are the same (the page cache kept them)."""
    import numpy as np

    big = torch.arange(16 << 20, dtype=torch.float32).reshape(4096, -1)  # 64 MiB
    save_file({"big": big, "small": torch.ones(3)}, str(tmp_path / "model.safetensors"))
    with CheckpointReader(tmp_path) as reader:
        before = _rss_file()
        array = reader.get_array("big")
        checksum = float(array.sum(dtype=np.float64))  # touches every page
        touched = _rss_file() - before
        reader.release("big")
        released = _rss_file() - before
        assert touched > 48 << 20 and released < 8 << 20, (touched, released)
        assert float(reader.get_array("big").sum(dtype=np.float64)) == checksum == float(big.double().sum())


def test_read_ahead_asks_for_bounded_windows_in_order(tmp_path, monkeypatch):
    """`ReadAhead` asks every reader for the window beyond the block in use, never more, front to back, each byte
    once, and unmaps what is behind a window at a time."""
    import mmap

    from hfsoup.io.checkpoint import ReadAhead

    readers = []
    for i in range(2):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        save_file({"w": torch.zeros(10_000, dtype=torch.bfloat16)}, str(folder / "model.safetensors"))
        readers.append(CheckpointReader(folder))
    asked: list[tuple[int, int, int]] = []
    for i, reader in enumerate(readers):
        reader.get_array("w")
        monkeypatch.setattr(reader, "advise", lambda name, a, b, advice, i=i: asked.append((i, a, b, advice)))
    ahead = ReadAhead(readers, "w", window=2000)  # bytes: 1000 bfloat16 elements
    for stop in range(100, 10_001, 100):
        ahead.advance(stop, stop - 100)
    for i in range(2):
        ranges = [(a, b) for j, a, b, advice in asked if j == i and advice == mmap.MADV_WILLNEED]
        assert ranges[0][0] == 0 and ranges[-1][1] == 10_000
        assert all(0 < b - a <= 1000 + 100 for a, b in ranges)  # a window beyond the block in use, at most
        assert all(ranges[k][1] == ranges[k + 1][0] for k in range(len(ranges) - 1))
        # Behind: what is done with is let go a window at a time, never the block in use.
        released = [(a, b) for j, a, b, advice in asked if j == i and advice == mmap.MADV_DONTNEED]
        assert released[0][0] == 0 and released[-1][1] >= 9000 - 100 and len(released) >= 8
        assert all(released[k][1] == released[k + 1][0] for k in range(len(released) - 1))
    for reader in readers:
        reader.close()


# ---- writing large shards with O_DIRECT ---------------------------------------------------------------------------
def _direct_or_skip(tmp_path):
    from hfsoup.io.checkpoint import DirectFile

    probe = DirectFile.open(tmp_path / "probe")
    if probe is None:
        pytest.skip("this filesystem has no O_DIRECT")
    probe.discard()
    (tmp_path / "probe").unlink()
    return DirectFile


def _awkward_shard(path, monkeypatch, *, direct: bool):
    """A shard of odd-sized tensors written in odd-sized blocks; returns the writer's sink type."""
    import numpy as np

    monkeypatch.setenv("HFSOUP_DIRECT_IO", "1" if direct else "0")
    rng = np.random.default_rng(3)
    tensors = {f"t{i}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate((5000, 1, 12_345, 777))}
    writer = SafetensorsStreamWriter(path, [(n, TensorMeta("F32", t.shape)) for n, t in tensors.items()])
    sink = type(writer._file)
    try:
        for name, t in tensors.items():
            writer.begin(name, "F32", t.shape)
            for start in range(0, t.size, 999):
                writer.write(t[start : start + 999])
            writer.end()
        writer.close()
    except BaseException:
        writer.abort()  # as the soup engine does
        raise
    return sink, tensors


def test_a_large_shard_is_written_with_o_direct_byte_for_byte(tmp_path, monkeypatch):
    direct_file = _direct_or_skip(tmp_path)
    monkeypatch.setattr(direct_file, "MIN_BYTES", 0)
    monkeypatch.setattr(direct_file, "CHUNK", 3 * 4096)  # several chunks, a partial one and an unaligned tail
    sink, tensors = _awkward_shard(tmp_path / "direct.safetensors", monkeypatch, direct=True)
    assert sink is direct_file
    buffered, _ = _awkward_shard(tmp_path / "buffered.safetensors", monkeypatch, direct=False)
    assert buffered is not direct_file
    data = (tmp_path / "direct.safetensors").read_bytes()
    assert data == (tmp_path / "buffered.safetensors").read_bytes()
    assert len(data) % 4096 != 0
    loaded = load_file(tmp_path / "direct.safetensors")
    assert all(torch.equal(loaded[n], torch.from_numpy(t)) for n, t in tensors.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffered.safetensors", "direct.safetensors"]


def test_o_direct_refused_at_write_falls_back_and_a_full_disk_is_an_error(tmp_path, monkeypatch):
    import errno
    import fcntl
    import os

    direct_file = _direct_or_skip(tmp_path)
    monkeypatch.setattr(direct_file, "MIN_BYTES", 0)
    monkeypatch.setattr(direct_file, "CHUNK", 4096)
    real_pwrite = os.pwrite

    def refuses_direct(fd, data, offset):  # a filesystem that opens O_DIRECT files but refuses their writes
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuses_direct)
    _awkward_shard(tmp_path / "fallback.safetensors", monkeypatch, direct=True)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    _awkward_shard(tmp_path / "plain.safetensors", monkeypatch, direct=False)
    assert (tmp_path / "fallback.safetensors").read_bytes() == (tmp_path / "plain.safetensors").read_bytes()

    room = [20_000]

    def fills_up(fd, data, offset):
        if len(data) > room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= len(data)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", fills_up)
    with pytest.raises(OSError, match="No space left"):
        _awkward_shard(tmp_path / "full.safetensors", monkeypatch, direct=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fallback.safetensors", "plain.safetensors"]
