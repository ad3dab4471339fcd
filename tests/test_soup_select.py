"""`hfsoup soup --method greedy|learned --task ...` end to end: tiny BERT fine-tunes and a tiny GLUE on the local Hub.

The scores are those of random tiny models on random labels; what is checked is the machinery: honest parts, the
table's rows and files, the greedy soup's guarantee, the written weights against the ingredients, and the written
soup's score against the table's.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hfsoup.cli import main
from hfsoup.evaluation.evaluator import Evaluator
from hfsoup.selection.heldout import carve

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hub(sst2_hub):
    """The tiny BERT fine-tunes and the tiny GLUE on a local Hub (`tests/conftest.py`)."""
    return sst2_hub


def read_json(path):
    return json.loads(path.read_text())


def test_greedy_soup_by_cli_writes_the_table_and_the_soup_it_scored(hub, tmp_path, capsys):
    out = tmp_path / "greedy"
    args = ["soup", *hub["ids"], "-o", str(out), "--method", "greedy", "--task", "sst2", "--batch-size", "5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "held-out: seeded 50% of validation (seed 0, 16 rows)" in printed
    assert "report: the other 50% of validation (16 rows)" in printed and "greedy soup" in printed

    results = read_json(out / "results.json")
    assert results["metric"] == "accuracy"
    assert results["held_out"] == "seeded 50% of validation (seed 0, 16 rows)"
    kinds = [(r["name"], r["kind"], r["method"]) for r in results["rows"]]
    assert kinds == [
        *((i, "ingredient", None) for i in hub["ids"]),
        ("uniform soup", "soup", "uniform"),
        ("greedy soup", "soup", "greedy"),
        ("ensemble", "ensemble", None),  # the default baselines: the learned soup is compared when named
    ]
    rows = {r["name"]: r for r in results["rows"]}
    ingredients = [rows[i] for i in hub["ids"]]
    assert all(r["sha"] and len(r["sha"]) == 40 for r in ingredients)
    assert all(set(r["held_out"]) == {"accuracy"} and set(r["report"]) == {"accuracy"} for r in results["rows"])
    best = max(r["held_out"]["accuracy"] for r in ingredients)
    assert rows["greedy soup"]["held_out"]["accuracy"] >= best

    provenance = read_json(out / "hfsoup.json")
    greedy = provenance["greedy"]
    assert greedy["accept"] == "ge" and greedy["kept"][0] == greedy["order"][0]
    assert [r["kept"] for r in ingredients] == [i in greedy["kept"] for i in hub["ids"]]
    assert len(greedy["decisions"]) == 2
    for d in greedy["decisions"]:
        assert d["kept"] == (d["trial"] is not None and d["trial"] >= d["before"])
    kept = [hub["ids"].index(name) for name in greedy["kept"]]
    assert provenance["weights"] == [1 / len(kept) if i in kept else 0.0 for i in range(3)]

    evaluation = provenance["evaluation"]
    assert evaluation["task"] == "glue/sst2" and evaluation["dataset"] == "nyu-mll/glue"
    assert evaluation["dataset_config"] == "sst2" and evaluation["metric"] == "accuracy"
    assert evaluation["held_out"]["split"] == "validation" and evaluation["report"]["split"] == "validation"
    assert evaluation["report"]["metrics"] == rows["greedy soup"]["report"]
    assert evaluation["held_out"]["metrics"] == rows["greedy soup"]["held_out"]

    # The written weights are the average of the kept ingredients, from scratch.
    soup = load_file(out / "model.safetensors")
    tensors = [load_file(hub["family"].finetunes[i] / "model.safetensors") for i in range(3)]
    for name, tensor in soup.items():
        if tensor.is_floating_point():
            scratch = torch.stack([tensors[i][name].double() for i in kept]).mean(dim=0)
            assert (tensor.double() - scratch).abs().max().item() <= 1e-6, name

    # The written folder, scored on the reported rows alone, gets the table's figure.
    _, report = carve({"validation": 32}, held_out=None, report="validation")
    evaluator = Evaluator("sst2", "validation", batch_size=7)
    evaluator.restrict(report.positions)
    assert evaluator.score(str(out)) == rows["greedy soup"]["report"]

    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0] == "name,kind,method,sha,kept,held_out/accuracy,report/accuracy"
    assert len(csv_lines) == 1 + len(results["rows"])
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"results.json", "results.csv", "results.png"} <= set(provenance["files"])


def test_learned_soup_by_layer_by_cli(hub, tmp_path):
    out = tmp_path / "learned"
    args = ["soup", *hub["ids"], "-o", str(out), "--method", "learned", "--by-layer", "--task", "sst2"]
    assert main([*args, "--learned-steps", "5", "--compare", "uniform", "--no-plot"]) == 0
    provenance = read_json(out / "hfsoup.json")
    learned = provenance["learned"]
    assert learned["by_layer"] and learned["loss"] <= learned["uniform_loss"]
    assert learned["uniform_loss"] == pytest.approx(learned["history"][0])
    soup = load_file(out / "model.safetensors")
    floats = {n for n, t in soup.items() if t.is_floating_point()}
    assert set(learned["per_tensor"]) == floats
    for weights in learned["per_tensor"].values():
        assert sum(weights) == pytest.approx(1.0, abs=1e-9)
    # One tensor, rebuilt from the ingredients with its learned weights.
    name = "classifier.weight"
    tensors = [load_file(hub["family"].finetunes[i] / "model.safetensors")[name].double() for i in range(3)]
    expected = sum(w * t for w, t in zip(learned["per_tensor"][name], tensors, strict=True))
    assert (soup[name].double() - expected).abs().max().item() <= 1e-6
    results = read_json(out / "results.json")
    assert [r["name"] for r in results["rows"]][3:] == ["uniform soup", "learned soup"]
    assert not (out / "results.png").exists()


def test_refusals_leave_no_output(hub, tmp_path, capsys):
    out = tmp_path / "refused"
    base = ["soup", *hub["ids"], "-o", str(out)]
    assert main([*base, "--method", "greedy"]) == 1
    assert "needs a task" in capsys.readouterr().err
    assert main([*base, "--method", "greedy", "--task", "sst2", "--held-out-fraction", "1"]) == 1
    err = capsys.readouterr().err
    assert "share 32 rows" in err and "--force" in err
    assert main([*base, "--method", "greedy", "--task", "sst2", "--held-out", "test"]) == 1
    assert "no labels" in capsys.readouterr().err
    assert main([*base, "--method", "learned", "--task", "sst2", "--weights", "0.5,0.25,0.25"]) == 1
    assert "finds its own weights" in capsys.readouterr().err
    assert not out.exists()
