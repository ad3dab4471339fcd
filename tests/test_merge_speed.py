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


_FORKING = """
import os, sys, time
import numpy as np
shared = np.ones(40 << 20, np.uint8)  # 40 MB the worker shares copy-on-write
pid = os.fork()
if pid == 0:
    own = np.ones(int(sys.argv[1]) << 20, np.uint8)  # the worker's own pages
    int(shared[::4096].sum())  # read only: still shared
    time.sleep(1.0)
    os._exit(0)
os.waitpid(pid, 0)
"""


def _measured_anon(tmp_path, worker_mb: int) -> int:
    import json

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from merge_speed import MEASURE_WRAPPER
    finally:
        sys.path.remove(str(SCRIPT.parent))
    out = tmp_path / f"measured-{worker_mb}.json"
    cmd = [sys.executable, "-S", "-c", MEASURE_WRAPPER, str(out), sys.executable, "-c", _FORKING, str(worker_mb)]
    subprocess.run(cmd, check=True, timeout=60)
    measured = json.loads(out.read_text())
    assert measured["rc"] == 0
    return measured["anon"]


def test_the_memory_measure_counts_a_forked_workers_own_pages_once(tmp_path):
    mb = 1 << 20
    alone = _measured_anon(tmp_path, 0)
    with_own = _measured_anon(tmp_path, 120)
    assert 40 * mb <= alone < 100 * mb  # the shared 40 MB counted once, not once per process
    assert 110 * mb <= with_own - alone <= 135 * mb  # the worker's 120 MB counted
