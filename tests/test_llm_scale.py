"""benchmarks/llm_scale.py builds Llama-shaped checkpoints transformers reads as its own, and its smallest size runs
end to end (hfsoup alone), so the benchmark cannot rot; hfsoup's soup there is the float64 mean rounded to bf16."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "llm_scale.py"


def test_the_benchmark_checkpoints_are_what_transformers_builds_from_their_config(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import llm_scale
    finally:
        sys.path.remove(str(SCRIPT.parent))
    folders = llm_scale.build_checkpoints(tmp_path, "tiny")
    config = AutoConfig.from_pretrained(folders[0])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert dict(llm_scale.llama_shapes("tiny")) == expected
    index = json.loads((folders[0] / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(expected)
    loaded = AutoModelForCausalLM.from_pretrained(folders[1])  # the files load as a real checkpoint
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16


def test_llm_scale_runs_on_the_tiny_size_without_mergekit(tmp_path):
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--sizes",
        "tiny",
        "--no-mergekit",
        "--wait-idle",
        "0",
        "--cache",
        str(tmp_path),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]  # 1: a target missed at this size
    assert not (tmp_path / "mergekit-venv").exists()
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| hfsoup |")]
    assert [r[1].strip() for r in rows] == ["cold", "warm"]
    for row in rows:
        assert float(row[-1]) <= 2**-8  # the float64 mean, rounded once to bfloat16 (8 significant bits)
        assert 0 < float(row[6]) < 500  # anonymous memory, MB
    assert "## Targets" in run.stdout
