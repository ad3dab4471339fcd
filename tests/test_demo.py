"""`hfsoup demo`, the README's main command, run as a user would run it (in-process, for speed)."""

from __future__ import annotations

import json
import re

import pytest

from hfsoup.cli import main
from tests.test_minilm import opt_in, slow_opted_in  # noqa: F401 - the skipif condition reads slow_opted_in


def test_demo_soups_by_hub_id_and_keeps_files_in_workdir(tmp_path, capsys, hf_home):
    assert main(["demo", "--fast", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "[5/5] Loaded the soup with transformers" in out
    provenance = json.loads((tmp_path / "demo" / "soup" / "hfsoup.json").read_text())
    specs = [i["spec"] for i in provenance["ingredients"]]
    # The third ingredient is pinned by commit SHA, and every ingredient resolved to a 40-hex SHA.
    assert specs[2].endswith("@" + provenance["ingredients"][2]["sha"])
    assert all(len(i["sha"]) == 40 for i in provenance["ingredients"])
    deviation = float(out.split("max relative deviation ")[1].split(")")[0])
    assert deviation < 1e-6


@pytest.mark.slow
@opt_in
def test_the_real_demo_cooks_a_greedy_soup_at_least_as_good_as_the_best_fine_tune(minilm_family, tmp_path, hf_home):
    """The README's main command on real weights (issue 8): its fine-tunes are the session's MiniLM family."""
    from hfsoup.demo import N_FINETUNES, run_demo

    lines: list[str] = []
    result = run_demo(workdir=tmp_path / "demo", report=lines.append, cache=minilm_family.root)
    rows = {row["name"]: row for row in result["rows"]}
    ingredients = [row for row in result["rows"] if row["kind"] == "ingredient"]
    assert len(ingredients) == N_FINETUNES
    best = max(row["held_out"]["accuracy"] for row in ingredients)
    assert rows["greedy soup"]["held_out"]["accuracy"] >= best
    assert {"uniform soup", "ensemble"} <= set(rows)
    assert result["reloaded_identical"]
    assert any(line.startswith("[6/6] Reloaded from the Hub") for line in lines)

    # What the demo kept, scored again from the command line (issue 16): the whole test file is the held-out part and
    # the reported part, so the soup's accuracy on it is theirs weighted by their sizes.
    kept = tmp_path / "demo"
    out = tmp_path / "eval.json"
    reviews = kept / "drug-reviews" / "test.jsonl"
    argv = ["eval", str(kept / "soup"), "--task", "text-classification", "--data-files", f"test={reviews}"]
    assert main([*argv, "--max-length", "64", "--json", str(out)]) == 0
    score = json.loads(out.read_text())["results"][0]
    table = json.loads((kept / "soup" / "results.json").read_text())
    sizes = [int(re.search(r"(\d+) rows", table[part]).group(1)) for part in ("held_out", "report")]
    assert sum(sizes) == score["num_examples"]
    soup = rows["greedy soup"]
    correct = soup["held_out"]["accuracy"] * sizes[0] + soup["report"]["accuracy"] * sizes[1]
    assert score["metrics"]["accuracy"] * score["num_examples"] == pytest.approx(correct, abs=1e-6)
