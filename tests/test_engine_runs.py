"""How the soup engine runs: bf16 arithmetic, two processes, and kill-and-resume. Outputs must be bit-identical."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest
import torch

import hfsoup
from hfsoup.constants import PROGRESS_DIR
from hfsoup.io.checkpoint import CheckpointReader
from hfsoup.io.staging import staging_path
from hfsoup.testing.reference import max_relative_deviation, reference_average, ulp_error

from .test_soup_local import make_checkpoint

SHAPES = {f"layer.{i}.weight": (64, 48) for i in range(6)} | {"layer.0.bias": (64,), "head.weight": (2, 64)}


@pytest.fixture
def ingredients(tmp_path):
    return [make_checkpoint(tmp_path / f"ft{i}", seed=i, shapes=SHAPES) for i in range(3)]


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "hfsoup.json"}


def soup_command(ingredients, out) -> list[str]:
    """`hfsoup soup` in a subprocess, small shards so that the run has several to interrupt."""
    return [
        sys.executable,
        "-m",
        "hfsoup.cli",
        "-q",
        "soup",
        *map(str, ingredients),
        "-o",
        str(out),
        "--max-shard-size",
        "30KB",
    ]


def test_bf16_is_averaged_in_float32_and_written_bf16(tmp_path):
    folders = [make_checkpoint(tmp_path / f"b{i}", seed=i, shapes=SHAPES, dtype=torch.bfloat16) for i in range(4)]
    result = hfsoup.soup(folders, tmp_path / "out")
    reference = reference_average(folders)
    with CheckpointReader(result.output_dir) as soup:
        for name, ref in reference.items():
            got = soup.get(name)
            assert got.dtype == torch.bfloat16
            assert ulp_error(got, ref) <= 0.5 + 1e-3, name
    # Averaging in bf16 itself would round after each addition and miss the correctly rounded mean somewhere.
    with CheckpointReader(folders[0]) as r0:
        naive = {n: sum(CheckpointReader(f).get(n) for f in folders) / 4 for n in reference}  # bf16 arithmetic
        assert max(ulp_error(naive[n], reference[n]) for n in reference) > 0.5 + 1e-3
        assert r0.structure["layer.0.weight"].dtype == "BF16"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_same_bytes_as_one(tmp_path, ingredients):
    single = hfsoup.soup(ingredients, tmp_path / "single", max_shard_size="30KB")
    assert len([f for f in single.files if f.endswith(".safetensors")]) >= 3
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "hfsoup.cli",
        "-q",
        "soup",
        *map(str, ingredients),
        "-o",
        str(tmp_path / "double"),
        "--max-shard-size",
        "30KB",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HFSOUP_DEBUG": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert files_of(tmp_path / "double") == files_of(single.output_dir)


def test_kill_and_resume_gives_identical_output(tmp_path, ingredients, caplog):
    reference = hfsoup.soup(ingredients, tmp_path / "uninterrupted", max_shard_size="30KB")
    out = tmp_path / "out"
    cmd = soup_command(ingredients, out)
    killed = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HFSOUP_FAULT": "shard-written:2"})
    assert killed.returncode == 77, killed.stderr
    # Half-written output never looks complete: no output folder, only the hidden staging folder.
    staging = staging_path(out)
    assert not out.exists() and staging.is_dir()
    assert len(list((staging / PROGRESS_DIR).glob("*.json"))) == 2

    # Corrupt one completed shard: recomputing it catches it and it is written again.
    first = sorted(staging.glob("model-*.safetensors"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))

    with caplog.at_level(logging.INFO, logger="hfsoup"):
        resumed = hfsoup.soup(ingredients, out, max_shard_size="30KB", resume=True)
    assert "reused 1 completed shards" in caplog.text and "not what the ingredients give" in caplog.text
    assert files_of(resumed.output_dir) == files_of(reference.output_dir)
    assert not staging.exists()
    assert max_relative_deviation(out, reference_average(ingredients)) < 1e-6


def test_rerun_without_resume_starts_over(tmp_path, ingredients):
    out = tmp_path / "out"
    cmd = soup_command(ingredients, out)
    subprocess.run(cmd, capture_output=True, env={**os.environ, "HFSOUP_FAULT": "shard-written:1"})
    assert staging_path(out).is_dir()
    result = hfsoup.soup(ingredients, out, max_shard_size="30KB")
    assert max_relative_deviation(result.output_dir, reference_average(ingredients)) < 1e-6
    assert not staging_path(out).exists()
