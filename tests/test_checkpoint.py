"""Lazy safetensors reads, header validation and sharded streaming writes."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfsoup.checkpoint import (
    CheckpointReader,
    ShardedWriter,
    parse_size,
    plan_shards,
    read_safetensors_header,
    weights_layout,
)
from hfsoup.errors import CorruptCheckpointError, MissingWeightsError


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


def test_sharded_write_round_trips(tmp_path):
    tensors = {f"layer.{i}.weight": torch.randn(16, 16) for i in range(5)}  # 1 KiB each
    names = sorted(tensors)
    plan = plan_shards([(n, tensors[n].nbytes) for n in names], max_shard_size=2500)
    assert [len(s) for s in plan] == [2, 2, 1]
    writer = ShardedWriter(tmp_path, plan)
    for n in names:
        writer.add(n, tensors[n])
    files = writer.finish()
    assert files[-1] == "model.safetensors.index.json" and len(files) == 4
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    with CheckpointReader(tmp_path) as reader:
        assert set(reader.structure) == set(tensors)
        for n, t in tensors.items():
            assert torch.equal(reader.get(n), t)
    assert set(load_file(tmp_path / index["weight_map"][names[0]])) == set(plan[0])


def test_single_shard_is_model_safetensors(tmp_path):
    writer = ShardedWriter(tmp_path, [["x"]])
    writer.add("x", torch.ones(2))
    assert writer.finish() == ["model.safetensors"]


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
