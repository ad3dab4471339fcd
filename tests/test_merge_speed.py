"""benchmarks/merge_speed.py's smallest configuration runs (tiny BERTs, hfsoup alone), so the benchmark cannot rot,
and every method's output matches its float64 transcription there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "merge_speed.py"
METHODS = ["task-arithmetic", "ties", "dare-linear", "dare-ties", "slerp", "model-stock", "wise-ft"]


def test_merge_speed_runs_on_tiny_checkpoints_without_mergekit(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--size", "tiny", "--no-mergekit", "--runs", "1", "--cache", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not (tmp_path / "mergekit-venv").exists()
    rows = {cells[0]: cells for cells in map(str.split, run.stdout.splitlines()) if len(cells) == 9}
    for method in METHODS:
        row = rows[method]
        dev_ref, dev_mk = float(row[-2]), row[-1]
        assert dev_ref < 1e-5, (method, row)
        assert dev_mk == "-"
    assert "acceptance" in run.stdout
