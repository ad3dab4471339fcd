"""A large output shard split between forked processes (`soups.engine`, `FORK_MIN_BYTES`): the same bytes and
figures as one process, progress for every tensor, and a worker's error raised as the error it was, nothing left."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys

import numpy as np
import pytest

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import IncompatibleIngredientsError, SoupWorkerError
from hfsoup.io.checkpoint import SafetensorsStreamWriter, TensorMeta
from hfsoup.soups import engine
from hfsoup.soups.engine import _run_forked, byte_parts

from .test_checkpoint import _direct_or_skip
from .test_soup_local import make_checkpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the soup forks workers on Linux only")

SHAPES = {f"layer.{i}.weight": (64, 48 + i) for i in range(7)} | {"layer.0.bias": (64,), "head.weight": (2, 64)}


@pytest.fixture
def ingredients(tmp_path):
    return [make_checkpoint(tmp_path / f"ft{i}", seed=i, shapes=SHAPES) for i in range(3)]


@pytest.fixture
def forks(monkeypatch):
    """Every shard forks (three workers), and the forks are counted in this process."""
    monkeypatch.setattr(engine, "FORK_MIN_BYTES", 0)
    monkeypatch.setenv("HFSOUP_NUM_THREADS", "3")
    monkeypatch.delenv("HFSOUP_FORK", raising=False)
    count, real = [], os.fork

    def counted() -> int:
        count.append(1)
        return real()

    monkeypatch.setattr(os, "fork", counted)
    return count


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "hfsoup.json"}


def test_byte_parts_are_contiguous_balanced_and_never_empty():
    assert byte_parts([10] * 8, 2) == [(0, 4), (4, 8)]
    assert byte_parts([10] * 9, 3) == [(0, 3), (3, 6), (6, 9)]
    assert byte_parts([100, 1, 1, 1], 2) == [(0, 1), (1, 4)]  # a tensor is never split: the big one alone
    assert byte_parts([5], 4) == [(0, 1)]  # one tensor: one part
    assert byte_parts([1, 1], 8) == [(0, 1), (1, 2)]  # no more parts than tensors
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(1, 1000, rng.integers(1, 40)).tolist()
        k = int(rng.integers(1, 6))
        parts = byte_parts(sizes, k)
        assert parts[0][0] == 0 and parts[-1][1] == len(sizes) and len(parts) <= k
        assert all(a < b for a, b in parts) and all(p[1] == q[0] for p, q in zip(parts, parts[1:], strict=False))
        # Each cut is at the boundary nearest its share, so no part exceeds its share by more than a tensor.
        for a, b in parts:
            assert sum(sizes[a:b]) <= sum(sizes) / len(parts) + max(sizes) * 2


def test_forked_soup_is_byte_identical_to_one_process(tmp_path, ingredients, forks, monkeypatch):
    forked = hfsoup.soup(ingredients, tmp_path / "forked", max_shard_size="30KB")
    shards = len(list(forked.output_dir.glob("*.safetensors")))
    assert shards > 1 and len(forks) >= 2 * shards  # every shard by two or three workers
    monkeypatch.setenv("HFSOUP_FORK", "0")
    before = len(forks)
    single = hfsoup.soup(ingredients, tmp_path / "single", max_shard_size="30KB")
    assert len(forks) == before
    assert _files(forked.output_dir) == _files(single.output_dir)
    # The shared-initialization figures: the parts' sums added in tensor order, equal to one process's to rounding.
    a, b = (json.loads(r.provenance_path.read_text())["compatibility"] for r in (forked, single))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert not [p for p in forked.output_dir.rglob("*") if p.name.startswith(".")]


def test_forked_soup_of_one_shard_with_o_direct_parts(tmp_path, ingredients, forks, monkeypatch):
    direct_file = _direct_or_skip(tmp_path)
    monkeypatch.setattr(direct_file, "MIN_BYTES", 0)
    monkeypatch.setattr(direct_file, "CHUNK", 2 * 4096)  # several chunks per part, parts starting mid-page
    forked = hfsoup.soup(ingredients, tmp_path / "forked")
    monkeypatch.setenv("HFSOUP_DIRECT_IO", "0")
    monkeypatch.setenv("HFSOUP_FORK", "0")
    single = hfsoup.soup(ingredients, tmp_path / "single")
    assert len(forks) == 3
    assert _files(forked.output_dir) == _files(single.output_dir)


def test_parts_written_at_unaligned_offsets_make_the_whole_file(tmp_path, monkeypatch):
    direct_file = _direct_or_skip(tmp_path)
    monkeypatch.setattr(direct_file, "MIN_BYTES", 0)
    monkeypatch.setattr(direct_file, "CHUNK", 4096)
    rng = np.random.default_rng(5)
    tensors = {f"t{i}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate((3001, 1, 5000, 777, 2048))}
    listing = [(n, TensorMeta("F32", t.shape)) for n, t in tensors.items()]

    def write(path, part=None):
        writer = SafetensorsStreamWriter(path, listing, **({} if part is None else {"part": part}))
        names = list(tensors)[slice(*part) if part else slice(None)]
        for name in names:
            writer.begin(name, "F32", tensors[name].shape)
            for start in range(0, tensors[name].size, 1000):
                writer.write(tensors[name][start : start + 1000])
            writer.end()
        writer.close()

    write(tmp_path / "whole.safetensors")
    SafetensorsStreamWriter.prepare(tmp_path / "parts.safetensors", listing)
    for part in [(3, 5), (0, 1), (1, 3)]:  # in any order, as the workers finish
        write(tmp_path / "parts.safetensors", part)
    assert not (tmp_path / "parts.safetensors").exists()  # moved into place only when every part is written
    SafetensorsStreamWriter.finish(tmp_path / "parts.safetensors", complete=True)
    assert (tmp_path / "parts.safetensors").read_bytes() == (tmp_path / "whole.safetensors").read_bytes()


def _work(part, send):
    first, last = part
    for _ in range(first, last):
        send(("tick", 1))
    if first == 2:
        raise IncompatibleIngredientsError("Part two differs.", fix="Leave it out.", problems=["a", "b"])
    if first == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if first == 4:
        raise OSError(errno.ENOSPC, "No space left on device")
    if first == 6:
        raise ValueError("a bug of hfsoup's")
    return {"part": part}


def test_run_forked_returns_results_in_order_and_counts_progress():
    ticks = []
    assert _run_forked([(0, 1), (1, 2), (5, 9)], _work, ticks.append, what="x") == [
        {"part": [0, 1]},  # through JSON
        {"part": [1, 2]},
        {"part": [5, 9]},
    ]
    assert sum(ticks) == 6


@pytest.mark.parametrize(
    ("part", "error", "text"),
    [
        ((2, 3), IncompatibleIngredientsError, "Part two differs."),
        ((3, 4), SoupWorkerError, "killed by signal 9"),
        ((4, 5), OSError, "No space left"),
        ((6, 7), SoupWorkerError, "ValueError: a bug of hfsoup's"),
    ],
)
def test_a_workers_error_is_raised_as_it_was_and_every_worker_is_reaped(part, error, text):
    with pytest.raises(error) as caught:
        _run_forked([(0, 1), part, (5, 50)], _work, lambda n: None, what="model.safetensors")
    assert text in str(caught.value)
    if error is IncompatibleIngredientsError:
        assert caught.value.fix == "Leave it out." and caught.value.problems == ["a", "b"]
        assert caught.value.report is None  # every attribute there, as the worker's instance had it
    if error is OSError:
        assert caught.value.errno == errno.ENOSPC
    if "killed" not in text:  # a killed worker sent nothing; the others send their traceback, for HFSOUP_DEBUG=1
        assert "In the worker process" in caught.value.__notes__[0]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no worker left behind, not even a zombie


def test_a_worker_failing_mid_soup_leaves_nothing(tmp_path, ingredients, forks, monkeypatch, capsys):
    parent, real = os.getpid(), engine._mix_blocks

    def failing(name, *args, **kwargs):
        if os.getpid() != parent and name == "layer.5.weight":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(engine, "_mix_blocks", failing)
    out = tmp_path / "out"
    assert main(["soup", *map(str, ingredients), "-o", str(out)]) != 0
    err = capsys.readouterr().err
    assert "disk" in err.lower() and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name not in {f"ft{i}" for i in range(3)}]


def test_unequal_integer_buffers_met_by_a_worker_carry_the_report_as_in_one_process(tmp_path, forks):
    import torch

    from hfsoup.compat import CompatReport

    specs = [
        make_checkpoint(tmp_path / "a", seed=0, shapes=SHAPES),
        make_checkpoint(tmp_path / "b", seed=1, shapes=SHAPES, extra={"position_ids": torch.arange(6) + 1}),
    ]
    with pytest.raises(IncompatibleIngredientsError, match="'position_ids'") as info:
        hfsoup.soup(specs, tmp_path / "out")
    assert forks  # the worker with the last part (position_ids sorts last) met them
    report = info.value.report  # the pipeline adds its report to the engine's error, which carried none
    assert isinstance(report, CompatReport) and [f.check for f in report.errors] == ["dtypes"]
    assert "position_ids" in report.errors[0].message
    assert not (tmp_path / "out").exists()
