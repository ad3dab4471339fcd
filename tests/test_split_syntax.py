"""The `datasets` split syntax wherever a split is named: `hfsoup soup --held-out/--report` and `hfsoup eval --split`.

Over the tiny GLUE (sst2: 8 train, 32 validation, 8 unlabelled test rows) and tiny BERT fine-tunes on the local Hub.
The parts' rows are checked by their identity in the base splits (`SplitData.keys`) and by the predictions `hfsoup
eval` writes, against those of the whole split: a slice must be the rows `datasets` means, not merely as many.
"""

from __future__ import annotations

import json

import pytest

from hfsoup.cli import main
from hfsoup.errors import EvaluationError
from hfsoup.evaluation.tasks import get_task
from hfsoup.selection.options import Selection
from hfsoup.selection.stage import _parts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hub(sst2_hub):
    """The tiny BERT fine-tunes and the tiny GLUE on a local Hub (`tests/conftest.py`)."""
    return sst2_hub


EXPECTED = "a split name, or a datasets slice such as validation[:50%]"


def parts(held_out, report, **options):
    held, reported, described = _parts(get_task("sst2"), Selection("sst2", report, held_out, **options), token=None)
    return held.splits[0].keys, reported[0].splits[0].keys, described


def greedy(hub, out, *flags):
    args = ["soup", *hub["ids"], "-o", str(out), "--method", "greedy", "--task", "sst2", "--compare", "none"]
    return main([*args, *flags])


def test_two_halves_select_and_report_on_disjoint_rows_that_make_the_split(hub, tmp_path, capsys):
    held, report, described = parts("validation[:50%]", "validation[50%:]")
    assert held == [("validation", i) for i in range(16)] and report == [("validation", i) for i in range(16, 32)]
    assert [p.description for p in described] == ["validation[:50%] (16 rows)", "validation[50%:] (16 rows)"]

    out = tmp_path / "halves"
    assert greedy(hub, out, "--held-out", "validation[:50%]", "--report", "validation[50%:]") == 0
    assert "held-out: validation[:50%] (16 rows)" in capsys.readouterr().out
    evaluation = json.loads((out / "hfsoup.json").read_text())["evaluation"]
    assert (evaluation["held_out"]["split"], evaluation["report"]["split"]) == ("validation[:50%]", "validation[50%:]")
    assert "shared_rows" not in evaluation
    # The reported score is the soup's on exactly those 16 rows: hfsoup eval on the same spec gives it again.
    scores = tmp_path / "r"
    assert main(["eval", str(out), "--task", "sst2", "--split", "validation[50%:]", "--json", str(scores)]) == 0
    assert json.loads(scores.read_text())["results"][0]["metrics"] == evaluation["report"]["metrics"]


def test_overlapping_specs_are_refused_by_row_count_unless_forced(hub, tmp_path, capsys):
    out = tmp_path / "overlap"
    flags = ["--held-out", "validation[:60%]", "--report", "validation[50%:]"]
    assert greedy(hub, out, *flags) == 1
    err = capsys.readouterr().err
    # 60% of 32 rows is 19 (datasets rounds to the closest), 50% is 16: rows 16, 17 and 18 are in both parts.
    assert "share 3 rows" in err and "--force" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(EvaluationError, match="share 8 rows"):  # a whole split against a slice of it
        parts("validation", "validation[-8:]")

    assert greedy(hub, out, *flags, "--force") == 0
    evaluation = json.loads((out / "hfsoup.json").read_text())["evaluation"]
    assert evaluation["shared_rows"] == 3 and evaluation["held_out"]["split"] == "validation[:60%]"


def test_a_slice_of_train_is_held_out(hub):
    held, report, described = parts("train[:5]", "validation")
    assert held == [("train", i) for i in range(5)] and len(report) == 32
    assert [p.description for p in described] == ["train[:5] (5 rows)", "all of validation (32 rows)"]
    # The seeded carving still applies within one spec: a seeded half of validation[:20].
    held, report, described = parts(None, "validation[:20]")
    assert len(held) == len(report) == 10 and set(held).isdisjoint(report)
    assert set(held) | set(report) == {("validation", i) for i in range(20)}
    assert described[0].description == "seeded 50% of validation[:20] (seed 0, 10 rows)"


def predictions(model, split, path, *flags):
    assert main(["eval", model, "--task", "sst2", "--split", split, "--predictions", str(path), *flags]) == 0
    (name, values), *rest = json.loads(path.read_text()).items()
    assert not rest and name == split
    return values


def test_eval_scores_the_rows_of_a_slice_and_of_a_union(hub, tmp_path):
    model = hub["ids"][0]
    validation = predictions(model, "validation", tmp_path / "v.json")
    train = predictions(model, "train", tmp_path / "t.json")
    assert predictions(model, "validation[:4]", tmp_path / "s.json", "--json", str(tmp_path / "s4")) == validation[:4]
    report = json.loads((tmp_path / "s4").read_text())
    assert report["split"] == "validation[:4]" and report["results"][0]["num_examples"] == 4
    assert predictions(model, "train[:3]+validation[-2:]", tmp_path / "u.json") == train[:3] + validation[-2:]
    assert predictions(model, "train + validation", tmp_path / "all.json") == train + validation


def test_a_file_given_alone_belongs_to_the_base_split_of_the_report():
    selection = Selection("sst2", "validation[50%:]", data_files=["dev.csv"])
    assert selection.data_files == {"validation": ["dev.csv"]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("validation[:150%]", "Percent slice boundaries"),
        ("validation[abc]", "Unrecognized instruction format"),
        ("validation[" + "9" * 5000 + "]", "more than the 200"),
        ("validation[20:10]", "selects no rows of validation"),
        ("dev[:50%]", "Split 'dev' does not exist"),
        ("test[:50%]", "no labels"),
        ("validation+test", "no labels"),
    ],
)
def test_malformed_specs_are_one_clear_error_and_write_nothing(hub, tmp_path, capsys, spec, message):
    for verb in (["--held-out", spec], ["--report", spec]):
        out = tmp_path / "refused"
        assert greedy(hub, out, *verb) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and not out.exists()
        if "does not exist" not in message and "no labels" not in message and "no rows" not in message:
            assert EXPECTED in err and "validation[50%:]" in err  # what is expected, and the fix
        assert len(err) < 2000  # a huge spec is cut, not echoed
    target = tmp_path / "scores.json"
    assert main(["eval", hub["ids"][0], "--task", "sst2", "--split", spec, "--json", str(target)]) == 1
    assert message in capsys.readouterr().err and not target.exists()


def test_a_recipe_takes_the_same_specs(hub, tmp_path, capsys):
    from .test_recipes import write_recipe

    recipe = {
        "name": "halves",
        "ingredients": hub["ids"],
        "method": {"name": "greedy"},
        "evaluation": {"task": "sst2", "held_out": "validation[:50%]", "report": "validation[50%:]", "compare": []},
        "output": {"dir": "soup"},
    }
    assert main(["cook", str(write_recipe(tmp_path / "recipe.yaml", recipe))]) == 0
    evaluation = json.loads((tmp_path / "soup" / "hfsoup.json").read_text())["evaluation"]
    assert evaluation["held_out"]["description"] == "validation[:50%] (16 rows)"
    assert evaluation["report"]["description"] == "validation[50%:] (16 rows)"

    recipe.update(name="bad", output={"dir": "bad"}, evaluation={**recipe["evaluation"], "held_out": "validation[:-]"})
    bad = write_recipe(tmp_path / "bad.yaml", recipe)
    assert main(["validate", str(bad)]) == 1  # found by validation, with its location, before anything runs
    assert f"evaluation.held_out: Split 'validation[:-]' is not {EXPECTED}" in capsys.readouterr().err
    assert main(["cook", str(bad)]) == 1
    err = capsys.readouterr().err
    assert EXPECTED in err and "Traceback" not in err and not (tmp_path / "bad").exists()


def test_a_row_read_twice_by_one_spec_is_not_both_held_out_and_reported(hub):
    # validation[:10]+validation[5:15] reads rows 5-9 twice: a seeded half would put some in both parts.
    with pytest.raises(EvaluationError, match=r"share \d+ rows"):
        parts(None, "validation[:10]+validation[5:15]")
    held, report, _ = parts(None, "validation[:10]+validation[5:15]", force=True)
    assert set(held) & set(report)
