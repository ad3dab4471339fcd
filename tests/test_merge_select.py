"""Merge methods scored on held-out data, and their options chosen there (issue 17, item 9).

`--method ties --base BASE --task sst2` builds the TIES soup in memory, scores it like any other soup and writes it;
`--density 0.2,0.5,0.8` (or `0.2:0.8:3`, or a YAML list) scores each candidate on the held-out part only, writes the
best (the first of equals), and puts every candidate in the table, `hfsoup.json` and the card. Three BERT fine-tunes
whose predictions vary (`build_glue_finetunes`) on 40 local rows, so that candidates can score differently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import InvalidSoupArgumentsError, RecipeError
from hfsoup.recipe import parse_recipe
from hfsoup.soups import LearnedSoup, TiesSoup
from hfsoup.testing.glue import build_glue_finetunes, write_glue_csv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("merge-select")


@pytest.fixture(scope="module")
def dev_csv(root) -> Path:
    """40 rows of the tiny GLUE's sst2 sentences, as a local CSV (20 held out, 20 reported)."""
    return write_glue_csv(root / "dev.csv", "sst2", 40)


@pytest.fixture(scope="module")
def bert(root, families) -> list[str]:
    return [str(p) for p in build_glue_finetunes(families["bert"].base, "sst2", root / "bert", n_finetunes=3)]


@pytest.fixture(scope="module")
def base(families) -> str:
    return str(families["bert"].base)


def ties_args(bert: list[str], base: str, out: Path, data: Path, *extra: str) -> list[str]:
    return [
        *("-q", "soup", *bert, "-o", str(out), "--method", "ties", "--base", base, "--task", "sst2"),
        *("--data-files", f"validation={data}", "--no-plot", *extra),
    ]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def card_of(out: Path) -> str:
    return str(hfsoup.build_card(hfsoup.read_soup_folder(out), repo_id="me/ties"))


@pytest.fixture(scope="module")
def single(bert, base, dev_csv, root) -> Path:
    out = root / "single"
    assert main(ties_args(bert, base, out, dev_csv, "--density", "0.5")) == 0
    return out


@pytest.fixture(scope="module")
def listed(bert, base, dev_csv, root) -> Path:
    # A merge baseline too: task arithmetic (the affine sum with the base) is scored beside the candidates.
    out = root / "listed"
    compare = ["--compare", "uniform,task-arithmetic,ensemble"]
    args = ties_args(bert, base, out, dev_csv, "--density", "0.2,0.5,0.8", *compare)
    assert main([a for a in args if a != "--no-plot"]) == 0  # plotted
    return out


def test_a_scored_ties_soup_is_the_soup_written(single, bert, base):
    """The state scored is the state written: the in-memory TIES soup equals the shards, tensor by tensor."""
    from hfsoup.io.checkpoint import CheckpointReader
    from hfsoup.selection.stage import _merged
    from hfsoup.soups.engine import BaseWeights
    from hfsoup.soups.ties import TiesMerge

    written = load_file(single / "model.safetensors")
    names = sorted(written)
    states = [load_file(Path(b) / "model.safetensors") for b in bert]
    states = [{n: (t.float() if t.is_floating_point() else t) for n, t in s.items() if n in written} for s in states]
    reader = CheckpointReader(base)
    merged = _merged(
        states, names, hfsoup.soups.Mixing((1 / 3,) * 3), TiesMerge(0.5, 1.0), BaseWeights.open(reader, names)
    )
    reader.close()
    assert merged.keys() == written.keys()
    for name in names:
        assert torch.equal(merged[name].to(written[name].dtype), written[name]), name

    rows = {r["name"]: r for r in read_json(single / "results.json")["rows"]}
    assert rows["ties soup"]["method"] == "ties" and rows["ties soup"]["held_out"]
    # The default baselines: what costs one scoring each; the searches (greedy, learned) only when named.
    assert {"uniform soup", "ensemble"} <= rows.keys() and not {"greedy soup", "learned soup"} & rows.keys()
    provenance = read_json(single / "hfsoup.json")
    assert provenance["ties"]["density"] == 0.5 and "candidates" not in provenance["ties"]
    assert provenance["evaluation"]["held_out"]["metrics"] == rows["ties soup"]["held_out"]
    card = card_of(single)
    assert "A **ties model soup**" in card and "`density=0.5`" in card and "--density 0.5" in card


def test_the_best_held_out_candidate_is_written(listed, single, bert, base, dev_csv, root):
    table = read_json(listed / "results.json")
    rows = [r for r in table["rows"] if r["method"] == "ties"]
    assert [r["name"] for r in rows] == [f"ties soup (density={d})" for d in ("0.2", "0.5", "0.8")]
    scores = [r["held_out"]["accuracy"] for r in rows]
    best = scores.index(max(scores))  # the first of equals
    assert [r["kept"] for r in rows] == [k == best for k in range(3)]
    assert all(r["report"] for r in rows)  # reported for the table; they chose nothing
    chosen = (0.2, 0.5, 0.8)[best]
    assert any(r["name"] == "task-arithmetic soup" for r in table["rows"])  # a merge as a baseline
    assert (listed / "results.png").stat().st_size > 0  # every candidate plotted

    provenance = read_json(listed / "hfsoup.json")
    record = provenance["ties"]
    assert record["chosen"] == {"density": chosen} and record["density"] == chosen
    assert [c["options"] for c in record["candidates"]] == [{"density": d} for d in (0.2, 0.5, 0.8)]
    assert [c["held_out"]["accuracy"] for c in record["candidates"]] == scores
    assert provenance["evaluation"]["held_out"]["metrics"] == rows[best]["held_out"]

    # The written weights are those of the chosen value given alone, byte for byte.
    alone = single
    if chosen != 0.5:
        alone = root / f"alone-{chosen}"
        assert main(ties_args(bert, base, alone, dev_csv, "--density", str(chosen))) == 0
    assert (listed / "model.safetensors").read_bytes() == (alone / "model.safetensors").read_bytes()

    card = card_of(listed)
    assert f"`density={chosen:g}`" in card and "among 3 candidates" in card
    # The command that remakes it selects again, among the same candidates (recipe.yaml holds the same list).
    assert "--density 0.2,0.5,0.8" in card
    assert "density:\n  - 0.2\n  - 0.5\n  - 0.8" in (listed / "recipe.yaml").read_text()


def test_candidate_syntax_is_parsed_and_checked():
    kind = TiesSoup.Options.__dataclass_fields__["density"].metadata["hfsoup"].kind
    assert kind.parse("0.1:0.9:5") == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert kind.parse("0.2,0.5") == [0.2, 0.5] and kind.parse("0.5") == 0.5
    with pytest.raises(ValueError, match="start:stop:count"):
        kind.parse("0.1:0.9")
    assert TiesSoup(density=(0.2, 0.5)).candidates()[1][0] == {"density": 0.5}
    with pytest.raises(InvalidSoupArgumentsError, match="candidate 2 of 2"):
        TiesSoup(density=[0.2, 1.5])
    assert TiesSoup(density=[0.5]).candidates()[0][1].options.density == 0.5  # one item: that value
    steps = LearnedSoup.Options.__dataclass_fields__["steps"].metadata["hfsoup"].kind
    assert steps.parse("10:30:3") == [10, 20, 30]
    with pytest.raises(ValueError, match="whole numbers"):
        steps.parse("1:2:3")


def test_a_learned_soup_chooses_its_steps_on_held_out_data(bert, dev_csv, tmp_path):
    """Candidates are not only the merges': the learned soup's steps, each fitted and scored on the held-out part."""
    out = tmp_path / "learned"
    args = ["-q", "soup", *bert, "-o", str(out), "--method", "learned", "--learned-steps", "1,3", "--task", "sst2"]
    assert main([*args, "--data-files", f"validation={dev_csv}", "--no-plot", "--compare", "uniform"]) == 0
    rows = [r for r in read_json(out / "results.json")["rows"] if r["method"] == "learned"]
    assert [r["name"] for r in rows] == ["learned soup (steps=1)", "learned soup (steps=3)"]
    scores = [r["held_out"]["accuracy"] for r in rows]
    record = read_json(out / "hfsoup.json")["learned"]
    assert record["chosen"] == {"steps": (1, 3)[scores.index(max(scores))]}
    assert len(record["candidates"]) == 2 and "weights" in record


def test_several_candidates_without_a_task_are_refused(bert, base, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["soup", *bert, "-o", str(out), "--method", "ties", "--base", base, "--density", "0.2:0.8:3"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--density (density=) has 3 candidates (0.2, 0.5, 0.8)" in err and "Add --task" in err
    assert not out.exists()


def test_too_many_candidates_are_refused(bert, base, dev_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(ties_args(bert, base, out, dev_csv, "--density", "0.1:1:10", "--scale", "0.5:1.5:7")) == 1
    err = capsys.readouterr().err
    assert "70 candidates" in err and "more than the 64" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # one range alone beyond the cap: a usage error
        main(ties_args(bert, base, out, dev_csv, "--density", "0:1:100"))
    assert exit_info.value.code == 2
    assert "count from 1 to 64" in capsys.readouterr().err


def test_a_recipe_with_a_density_list_cooks(bert, base, dev_csv, tmp_path):
    recipe = {
        "ingredients": bert,
        "base": base,
        "method": {"name": "ties", "density": [0.2, 0.5]},
        "evaluation": {"task": "sst2", "data_files": {"validation": [str(dev_csv)]}, "plot": False},
        "output": {"dir": str(tmp_path / "cooked")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    assert main(["-q", "cook", str(path)]) == 0
    record = read_json(tmp_path / "cooked" / "hfsoup.json")["ties"]
    assert [c["options"] for c in record["candidates"]] == [{"density": 0.2}, {"density": 0.5}]
    assert record["chosen"]["density"] == record["density"]
    with pytest.raises(RecipeError) as info:
        parse_recipe({k: v for k, v in recipe.items() if k != "evaluation"}, source=path)
    assert info.value.problems[0].startswith("method.density: 2 candidates are chosen between on held-out data")
