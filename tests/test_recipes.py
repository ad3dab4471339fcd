"""Recipes: every shipped recipe validates, a malformed one gets every problem listed with its location, and
`hfsoup cook` runs one end to end through the local Hub, resuming when rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from hfsoup.cli import main
from hfsoup.errors import RecipeError
from hfsoup.io.staging import staging_path
from hfsoup.recipe import load_recipe, parse_recipe
from hfsoup.soups import SOUPS
from hfsoup.testing.families import publish_family
from hfsoup.testing.glue import build_glue, publish_glue

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_recipes_folder_holds_the_promised_recipes():
    names = {p.stem for p in RECIPES}
    for task in ("mrpc", "rte", "cola", "sst2"):
        assert {f"glue-bert-base-{task}", f"glue-t5-base-{task}"} <= names
    assert any(n.startswith("clip-") for n in names) and any(n.startswith("public-") for n in names)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates_and_opens_with_its_command(path):
    recipe = load_recipe(path)
    assert path.read_text().splitlines()[0] == f"# hfsoup cook recipes/{path.name}"
    if recipe.sweep is not None:  # the ingredients are the runs of a fine-tune sweep
        from hfsoup.finetune import plan_sweep

        assert not recipe.ingredients and len(plan_sweep(recipe.sweep)) >= 2
    elif recipe.search is not None:  # the ingredients are found on the Hub when cooked (hfsoup find)
        assert not recipe.ingredients and recipe.search.base and (recipe.search.limit or 2) >= 2
    else:
        assert len(recipe.ingredients) >= 2
    if recipe.method.name in ("greedy", "learned"):
        assert recipe.evaluation is not None
    # Relative paths are taken from the recipe's folder, wherever it is run from.
    assert Path(recipe.output.dir).is_absolute() and ".." not in Path(recipe.output.dir).parts


MALFORMED = """\
name: 3
ingredients: [org/a, "bad name!!", {id: org/c, rev: 1}]
method: {name: greedy, weights: [1]}
evaluation: {report: validation, fraction: 2}
output: {dtype: int8, max_shard_size: lots}
extra: 1
"""


def test_a_malformed_recipe_gets_every_problem_with_its_location(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(MALFORMED)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    locations = [p.split(":")[0] for p in info.value.problems]
    assert locations == [
        "extra",
        "ingredients[1]",
        "ingredients[2].rev",
        "method.weights",
        "method.weights",
        "evaluation.task",
        "evaluation.fraction",
        "output.dir",
        "output.dtype",
        "output.max_shard_size",
        "name",
    ]
    assert f"{path} has 11 problems" in info.value.message


def test_invalid_yaml_says_where(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("ingredients: [org/a, org/b\noutput: {dir: out}\n")
    with pytest.raises(RecipeError, match=r"not valid YAML at line \d+, column \d+"):
        load_recipe(path)


def test_options_of_another_method_are_refused_not_ignored():
    with pytest.raises(RecipeError) as info:
        parse_recipe(
            {
                "ingredients": ["org/a", "org/b"],
                "method": {"name": "uniform", "by_layer": True},
                "output": {"dir": "out"},
            }
        )
    assert info.value.problems == ["method.by_layer: applies to the learned method, not uniform"]


def test_validate_cli(tmp_path, capsys):
    assert main(["validate", str(RECIPES[0])]) == 0
    assert "valid (" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(MALFORMED)
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "has 11 problems" in err and "\n  - output.dtype: expected one of" in err and "Traceback" not in err


# ---- cook, end to end ----


@pytest.fixture
def kitchen(local_hub, families, tmp_path):
    """Three tiny BERT fine-tunes and a tiny GLUE sst2 on the local Hub, and a token that may write."""
    repo_ids = publish_family(families["bert"], members=["ft0", "ft1", "ft2"])
    publish_glue(build_glue(tmp_path / "glue", tasks=["sst2"]))
    return [repo_ids[f"ft{i}"] for i in range(3)]


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text("# hfsoup cook " + path.name + "\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def test_cook_soups_scores_and_pushes_then_a_rerun_redoes_nothing(kitchen, tmp_path, capsys):
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        {
            "name": "tiny-greedy",
            "ingredients": kitchen,
            "method": {"name": "greedy"},
            "evaluation": {"task": "sst2", "batch_size": 8, "compare": ["uniform"], "plot": False},
            "output": {"dir": "soup"},
            "push": {"repo_id": "cooks/tiny-soup"},
        },
    )
    assert main(["cook", str(recipe)]) == 0
    printed = capsys.readouterr().out
    assert "greedy soup" in printed and "Pushed" in printed
    out = tmp_path / "soup"
    provenance = json.loads((out / "hfsoup.json").read_text())
    assert provenance["recipe"]["name"] == "tiny-greedy" and provenance["method"] == "greedy"
    assert (out / "results.json").is_file()
    api = HfApi()
    commits = api.list_repo_commits("cooks/tiny-soup")
    card = ModelCard.load("cooks/tiny-soup")
    assert "hfsoup cook recipe.yaml" in card.text and "tiny-greedy" in card.text
    soup_accuracy = provenance["evaluation"]["report"]["metrics"]["accuracy"]
    assert any(r.metric_value == pytest.approx(soup_accuracy) for r in card.data.eval_results)

    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(["cook", str(recipe)]) == 0
    printed = capsys.readouterr().out
    assert "already holds this recipe's soup" in printed and "nothing to commit" in printed
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert len(api.list_repo_commits("cooks/tiny-soup")) == len(commits)


def test_cook_refuses_an_output_made_by_something_else(kitchen, tmp_path):
    (tmp_path / "soup").mkdir()
    (tmp_path / "soup" / "mine.txt").write_text("keep me")
    recipe = write_recipe(tmp_path / "r.yaml", {"ingredients": kitchen[:2], "output": {"dir": "soup"}})
    assert main(["cook", str(recipe)]) == 1
    assert (tmp_path / "soup" / "mine.txt").read_text() == "keep me"


def test_cook_resumes_after_a_kill_with_identical_output(families, tmp_path):
    folders = [str(families["bert"].folders()[f"ft{i}"]) for i in range(3)]
    data = {"ingredients": folders, "output": {"dir": "soup", "max_shard_size": "30KB"}}
    recipe = write_recipe(tmp_path / "r.yaml", data)
    reference = write_recipe(tmp_path / "ref.yaml", {**data, "output": {"dir": "ref", "max_shard_size": "30KB"}})
    assert main(["cook", str(reference)]) == 0

    command = [sys.executable, "-m", "hfsoup.cli", "cook", str(recipe)]
    fault = {**os.environ, "HFSOUP_FAULT": "shard-written:2"}
    killed = subprocess.run(command, capture_output=True, text=True, env=fault)
    assert killed.returncode == 77, killed.stderr
    out = tmp_path / "soup"
    assert not out.exists() and staging_path(out).is_dir()  # nothing that looks complete

    resumed = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused 2 completed shards" in resumed.stderr
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards == sorted(p.name for p in (tmp_path / "ref").glob("model-*.safetensors"))
    for name in shards:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


@pytest.mark.parametrize("name", [[1], {"a": 1}, 3, None])
def test_a_method_name_that_is_no_string_is_a_located_problem(name):
    """A list or a mapping as the method's name is unhashable: it must be reported, not crash the registry lookup."""
    with pytest.raises(RecipeError) as info:
        parse_recipe({"ingredients": ["org/a", "org/b"], "method": {"name": name}, "output": {"dir": "out"}})
    assert info.value.problems[0].startswith(f"method.name: expected one of {', '.join(SOUPS)}, got ")
    assert ", ".join(SOUPS).startswith("uniform, greedy, learned, ")


def test_data_files_given_as_a_list_of_non_strings_are_refused_by_their_check():
    """`Selection(data_files=[...])` reads strings as the command line's [SPLIT=]FILE; anything else reaches the
    field's check (one error naming flag and keyword), never a crash in the conversion."""
    import hfsoup
    from hfsoup.errors import InvalidSoupArgumentsError

    assert hfsoup.Selection("sst2", data_files=["a.csv", "train=b.csv"]).data_files == {
        "validation": ["a.csv"],
        "train": ["b.csv"],
    }
    with pytest.raises(InvalidSoupArgumentsError, match=r"data_files: expected a mapping .*--data-files"):
        hfsoup.Selection("sst2", data_files=[1, 2]).check_fields()


def test_a_sweep_with_null_data_files_is_a_located_problem_not_a_crash():
    """`data_files: null` in a sweep (text-classification) is a missing value, reported where it is."""
    recipe = {"output": {"dir": "o"}, "sweep": {"base": "b", "output_dir": "s", "grid": {"seed": [0, 1]}}}
    recipe["sweep"]["data_files"] = None
    with pytest.raises(RecipeError) as info:
        parse_recipe(recipe)
    assert "sweep.data_files: task text-classification needs data files with a train split" in info.value.problems


def test_local_data_is_relative_to_the_recipe_not_the_current_folder(tmp_path, monkeypatch):
    """Data files, a dataset folder and the DATASET of a DATASET:SPLIT report set beside the recipe are found from any
    current folder; Hub IDs are left as they are."""
    kitchen = tmp_path / "kitchen"
    for folder in ("data", "shifted"):
        (kitchen / folder).mkdir(parents=True)
    (kitchen / "test.jsonl").write_text('{"text": "a", "label": 0}\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = parse_recipe(
        {
            "ingredients": [{"id": "org/a"}, {"id": "org/b"}],
            "method": "greedy",
            "evaluation": {
                "task": "text-classification",
                "dataset": "data",
                "data_files": {"test": "test.jsonl"},
                "report": ["test", "shifted:test", "org/hub-set@v1:validation"],
            },
            "output": {"dir": "out"},
        },
        source=kitchen / "recipe.yaml",
    )
    evaluation = recipe.evaluation
    assert Path(evaluation.dataset) == kitchen / "data"
    assert [Path(f) for f in evaluation.data_files["test"]] == [kitchen / "test.jsonl"]
    shifted, split = evaluation.report[1].rsplit(":", 1)
    assert (Path.cwd() / shifted).resolve() == (kitchen / "shifted").resolve() and split == "test"
    assert evaluation.report[0] == "test" and evaluation.report[2] == "org/hub-set@v1:validation"
    assert Path(recipe.output.dir) == kitchen / "out"
    # A name the filesystem refuses to look up is no local folder: it stays a (malformed) Hub ID, without a crash.
    long = "x" * 5000
    data = {"ingredients": [{"id": "org/a"}, {"id": "org/b"}], "output": {"dir": "out"}}
    data["evaluation"] = {"task": "sst2", "dataset": long, "report": ["validation", f"{long}:test"]}
    assert parse_recipe(data, source=kitchen / "recipe.yaml").evaluation.dataset == long


def test_a_local_report_set_is_published_by_its_folder_name_not_its_path(tmp_path):
    """The recipe a card carries names a DATASET:SPLIT report set's local folder as the selection's own dataset
    folder is named: relative, never by where it lay on this machine."""
    from hfsoup.publish.reproduce import soup_recipe
    from hfsoup.selection.options import Selection

    shifted = tmp_path / "here" / "kitchen" / "shifted"
    elsewhere = tmp_path / "elsewhere" / "far"  # outside the current folder: its name alone
    for folder in (shifted, elsewhere):
        folder.mkdir(parents=True)
    reports = ["validation", f"{shifted}:test", f"{elsewhere}:test", "org/hub-set:validation"]
    evaluation = {"reports": [{"name": "org/hub-set:validation", "dataset_sha": "a" * 40}]}
    selection = Selection(task="sst2", report=reports)
    recipe = soup_recipe(
        [], method=SOUPS["greedy"](), selection=selection, evaluation=evaluation, cwd=tmp_path / "here"
    )
    assert recipe["evaluation"]["report"] == [
        "validation",
        "./kitchen/shifted:test",
        "./far:test",
        f"org/hub-set@{'a' * 40}:validation",
    ]
    assert str(tmp_path) not in json.dumps(recipe)

    # A dataset folder beside data files, and a report folder gone since the soup was made: names, never paths.
    (tmp_path / "here" / "rows.jsonl").write_text('{"text": "a", "label": 0}\n')
    reports = ["test", f"{tmp_path}/gone/shifted:test"]
    selection = Selection(
        task="text-classification", dataset=str(shifted), data_files={"test": [str(tmp_path / "here" / "rows.jsonl")]}
    )
    selection.report = reports
    recipe = soup_recipe([], method=SOUPS["greedy"](), selection=selection, evaluation={}, cwd=tmp_path / "here")
    assert recipe["evaluation"]["dataset"] == "./kitchen/shifted"
    assert recipe["evaluation"]["data_files"] == {"test": ["rows.jsonl"]}
    assert recipe["evaluation"]["report"] == ["test", "./shifted:test"]
    assert str(tmp_path) not in json.dumps(recipe)
