"""A soup reported on several sets at once (issue 15 item 2, the paper's distribution shift): `--report` repeated,
recipes with a list. The tiny BERT fine-tunes are scored on the in-distribution half of the tiny GLUE's validation,
on its train split and on a shifted copy of it (every noun changed) published as another dataset repo; each set gets
its column in the table, the CSV, results.json, the plot (in-distribution against the mean of the others) and the
card's model-index. Selection never sees a reported row: held-out rows in any reported set are refused.
"""

from __future__ import annotations

import csv
import json
import logging

import pytest
from huggingface_hub import HfApi, ModelCard

import hfsoup
from hfsoup.cli import build_parser, main
from hfsoup.cli.soup import method_and_selection
from hfsoup.errors import EvaluationError, InvalidSoupArgumentsError
from hfsoup.evaluation.evaluator import Evaluator
from hfsoup.evaluation.tasks import get_task
from hfsoup.pipeline import _comparable
from hfsoup.selection.options import Selection, parse_report_set
from hfsoup.selection.results import ResultsTable, Row
from hfsoup.selection.stage import _parts
from hfsoup.testing.glue import build_glue, publish_glue

from .test_recipes import write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

SHIFTED = "hfsoup-testing/glue-shifted"
COPY = "hfsoup-testing/glue-copy"  # the same rows as the tiny GLUE: other rows, the same texts
SETS = ["validation", "train", f"{SHIFTED}:validation"]
NOUNS = "movie film plot actor script scene ending story camera cast sequel hero villain comedy drama".split()


def shift(sentence: str) -> str:
    """Every noun becomes another one: the same labels on texts the fine-tunes never saw (each template has a noun)."""
    return " ".join("documentary" if word in NOUNS else word for word in sentence.split())


@pytest.fixture(scope="module")
def hub(sst2_hub, tmp_path_factory):
    """The tiny BERT fine-tunes and the tiny GLUE (`tests/conftest.py`), plus a shifted copy and a plain copy."""
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("shifted")
    publish_glue(build_glue(root / "copy", tasks=["sst2"]), repo_id=COPY)
    folder = build_glue(root / "shifted", tasks=["sst2"])
    for path in sorted(folder.glob("sst2/*.parquet")):
        table = pq.read_table(path)
        column = table.schema.get_field_index("sentence")
        shifted = [shift(s) for s in table.column("sentence").to_pylist()]
        pq.write_table(table.set_column(column, table.schema.field(column), [shifted]), path)
    publish_glue(folder, repo_id=SHIFTED)
    return {**sst2_hub, "shifted_sha": HfApi().dataset_info(SHIFTED).sha}


@pytest.fixture(scope="module")
def shifted_soup(hub, tmp_path_factory):
    """A greedy soup reported on three sets, by the Python API (the CLI form is `--report` repeated, checked below)."""
    out = tmp_path_factory.mktemp("soups") / "greedy"
    selection = Selection(task="sst2", report=list(SETS), batch_size=16, compare=["uniform", "ensemble"])
    result = hfsoup.soup(hub["ids"], out, method="greedy", selection=selection)
    return out, result


def read_json(path):
    return json.loads(path.read_text())


def test_the_report_flag_repeats_and_a_set_names_its_dataset():
    args = build_parser().parse_args(
        ["soup", "a/b", "c/d", "-o", "x", "--task", "sst2", *(f"--report={s}" for s in SETS)]
    )
    _, selection = method_and_selection(args)
    assert selection.report == SETS
    assert [(s.dataset, s.split) for s in selection.report_sets] == [
        (None, "validation"),
        (None, "train"),
        (SHIFTED, "validation"),
    ]
    # Before the first `[` (a slice holds colons), cut at the last `:`: a revision's `@` stays with the dataset.
    spec = parse_report_set("org/x@v1:validation[:50%]")
    assert (spec.dataset, spec.split, spec.label) == ("org/x@v1", "validation[:50%]", "org/x@v1:validation[:50%]")
    assert parse_report_set("validation[10:20]").dataset is None
    one = build_parser().parse_args(["soup", "a/b", "c/d", "-o", "x", "--task", "sst2"])
    assert method_and_selection(one)[1].report == "validation"  # the default is still one split
    # A data file given without a split name is the first (in-distribution) set's split.
    selection = Selection("sst2", ["validation[50%:]", f"{SHIFTED}:test"], data_files=["dev.csv"])
    assert selection.data_files == {"validation": ["dev.csv"]}


def test_the_cli_prints_a_column_per_set(hub, tmp_path, capsys):
    out = tmp_path / "uniform"
    args = ["soup", *hub["ids"], "-o", str(out), "--task", "sst2", "--compare", "none", "--no-plot"]
    assert main([*args, "--report", "validation", "--report", f"{SHIFTED}:validation"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "held-out accuracy" in line).split()
    assert header[-6:] == ["held-out", "accuracy", "validation", "accuracy", f"{SHIFTED}:validation", "accuracy"]
    soup_line = [line for line in lines if line.startswith("uniform soup")][-1].split()  # the table's, not the summary
    reports = read_json(out / "results.json")["rows"][-1]["reports"]
    assert soup_line[-2:] == [f"{reports[s]['accuracy']:.4f}" for s in ("validation", f"{SHIFTED}:validation")]


def test_three_sets_give_three_columns_everywhere(hub, shifted_soup, capsys):
    out, result = shifted_soup
    table = result.results
    text = table.format_table()
    header = next(line for line in text.splitlines() if "held-out accuracy" in line)
    assert [cell.strip() for cell in header.split("  ") if cell.strip()][-4:] == [
        "held-out accuracy",
        *(f"{s} accuracy" for s in SETS),
    ]
    assert "report validation (in-distribution): the other 50% of validation (16 rows)" in text
    assert f"report {SHIFTED}:validation: all of {SHIFTED}:validation (32 rows)" in text
    greedy_line = next(line for line in text.splitlines() if line.startswith("greedy soup"))
    assert len([w for w in greedy_line.split() if w.startswith("0.") or w.startswith("1.")]) == 4

    results = read_json(out / "results.json")
    assert [(s["name"], s["description"]) for s in results["reports"]] == [
        ("validation", "the other 50% of validation (16 rows)"),
        ("train", "all of train (8 rows)"),
        (f"{SHIFTED}:validation", f"all of {SHIFTED}:validation (32 rows)"),
    ]
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == [*hub["ids"], "uniform soup", "greedy soup", "ensemble"]
    for row in rows.values():
        assert list(row["reports"]) == SETS and row["report"] == row["reports"]["validation"]

    # Each column is the soup's score on that set: the written soup, scored afresh on train and on the shifted copy.
    greedy = rows["greedy soup"]["reports"]
    assert Evaluator("sst2", "train", batch_size=5).score(str(out)) == greedy["train"]
    shifted = Evaluator("sst2", "validation", dataset=SHIFTED, batch_size=7).score(str(out))
    assert shifted == greedy[f"{SHIFTED}:validation"]

    with (out / "results.csv").open() as f:
        reader = csv.reader(f)
        assert next(reader) == [
            "name", "kind", "method", "sha", "kept", "held_out/accuracy", *(f"report/{s}/accuracy" for s in SETS)
        ]  # fmt: skip
        lines = list(reader)
    assert [float(cell) for cell in lines[4][6:]] == [greedy[s]["accuracy"] for s in SETS]  # the greedy soup's row

    evaluation = read_json(out / "hfsoup.json")["evaluation"]
    assert [(e["name"], e["dataset"], e["split"]) for e in evaluation["reports"]] == [
        ("validation", "nyu-mll/glue", "validation"),
        ("train", "nyu-mll/glue", "train"),
        (f"{SHIFTED}:validation", SHIFTED, "validation"),
    ]
    assert (
        evaluation["reports"][2]["dataset_sha"] == hub["shifted_sha"]
        and evaluation["reports"][2]["dataset_config"] == "sst2"
    )
    assert [e["metrics"] for e in evaluation["reports"]] == [greedy[s] for s in SETS]
    assert evaluation["report"]["metrics"] == greedy["validation"]  # as before several sets


def drawn_by(table: ResultsTable, path, monkeypatch) -> tuple[list[tuple[float, float]], dict[str, str]]:
    """The points `table.plot` scatters and its axis labels, as matplotlib is given them."""
    import matplotlib.axes

    points, labels = [], {}
    axes = matplotlib.axes.Axes
    scatter, set_xlabel, set_ylabel = axes.scatter, axes.set_xlabel, axes.set_ylabel

    def record(ax, x, y, **kw):
        points.append((x, y))
        return scatter(ax, x, y, **kw)

    monkeypatch.setattr(axes, "scatter", record)
    monkeypatch.setattr(axes, "set_xlabel", lambda ax, text, **kw: set_xlabel(ax, labels.setdefault("x", text), **kw))
    monkeypatch.setattr(axes, "set_ylabel", lambda ax, text, **kw: set_ylabel(ax, labels.setdefault("y", text), **kw))
    table.plot(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    return points, labels


def test_the_plot_is_in_distribution_against_the_mean_shifted_score(shifted_soup, tmp_path, monkeypatch):
    table = shifted_soup[1].results
    points, labels = drawn_by(table, tmp_path / "plot.png", monkeypatch)
    expected = []
    for row in table.rows:
        first, *others = [row.reports[s]["accuracy"] for s in SETS]
        expected.append((first, sum(others) / 2))
    assert points == expected and len(points) == 6  # 3 ingredients, 2 soups, the ensemble
    assert labels["x"] == "in-distribution accuracy\n(validation: the other 50% of validation (16 rows))"
    assert labels["y"] == f"mean accuracy on the other sets\n(train, {SHIFTED}:validation)"


def test_the_plot_points_of_a_table_with_distinct_scores(tmp_path, monkeypatch):
    # The tiny random models score alike; here every set and the held-out part differ, so a point built from the
    # wrong scores (the held-out one, or one shifted set alone) cannot pass.
    sets = ["id", "a", "b"]
    table = ResultsTable("accuracy", "held", "id part", reports=[{"name": s, "description": s} for s in sets])
    for i, kind in enumerate(["ingredient", "ingredient", "soup", "ensemble"]):
        scores = {s: {"accuracy": 0.1 * (i + 1) + 0.01 * j} for j, s in enumerate(sets)}
        row = Row(f"m{i}", kind, method="greedy" if kind == "soup" else None, held_out={"accuracy": 0.9 - i / 10})
        row.reports, row.report = scores, scores["id"]
        table.rows.append(row)
    table.rows.append(Row("left out", "ingredient", excluded="anti-aligned"))  # not scored: no point
    points, _ = drawn_by(table, tmp_path / "plot.png", monkeypatch)
    expected = [(0.1 * (i + 1), 0.1 * (i + 1) + 0.015) for i in range(4)]  # x: set "id"; y: mean of "a" and "b"
    assert [c for p in points for c in p] == pytest.approx([c for p in expected for c in p])
    assert table.plot_points()[2][0].name == "m2"


def test_the_card_has_a_model_index_entry_per_set(hub, shifted_soup, tmp_path):
    out, result = shifted_soup
    card = hfsoup.build_card(hfsoup.read_soup_folder(out), repo_id="me/shifted-soup")
    card.validate()
    card.save(tmp_path / "README.md")
    parsed = ModelCard.load(tmp_path / "README.md").data.eval_results
    got = {(r.dataset_type, r.dataset_split, r.dataset_revision, r.metric_name): r.metric_value for r in parsed}
    greedy = result.results.row("greedy soup")
    glue_sha = read_json(out / "hfsoup.json")["evaluation"]["dataset_sha"]
    assert got == {
        ("nyu-mll/glue", "validation", glue_sha, "accuracy"): greedy.reports["validation"]["accuracy"],
        ("nyu-mll/glue", "train", glue_sha, "accuracy"): greedy.reports["train"]["accuracy"],
        (SHIFTED, "validation", hub["shifted_sha"], "accuracy"): greedy.reports[f"{SHIFTED}:validation"]["accuracy"],
        ("nyu-mll/glue", "validation", glue_sha, "accuracy (held-out)"): greedy.held_out["accuracy"],
    }
    assert (
        f"| held-out accuracy | validation accuracy | train accuracy | {SHIFTED}:validation accuracy | kept |"
        in card.text
    )
    assert f"| model | kind | method | held-out | validation | train | {SHIFTED}:validation |" in card.text
    assert f"| `{SHIFTED}:validation` | reporting | all of {SHIFTED}:validation (32 rows) |" in card.text


def test_held_out_rows_in_any_reported_set_are_refused(hub, caplog):
    task = get_task("sst2")
    # A seeded half of validation is held out; validation[:25%] is reported whole: some of its rows are held out.
    with pytest.raises(EvaluationError, match="share [0-9]+ rows") as info:
        _parts(task, Selection("sst2", ["validation", "train", "validation[:25%]"]), token=None)
    assert "validation[:25%] (8 rows)" in info.value.message and "force" in info.value.fix
    with pytest.raises(EvaluationError, match="share 4 rows"):  # all of train held out, train[:4] reported
        _parts(task, Selection("sst2", ["validation", "train[:4]"], held_out="train"), token=None)
    with caplog.at_level(logging.WARNING, logger="hfsoup"):
        held, reports, parts = _parts(
            task, Selection("sst2", ["validation", "validation[:25%]"], force=True), token=None
        )
    assert "also reported (--force)" in caplog.text
    assert [len(r.splits[0].keys) for r in reports] == [16, 8]

    # Another dataset's rows are other rows, whatever their numbers: the shifted copy is not refused. A plain copy
    # of the same texts is not refused either, but its repeated inputs are warned about.
    _, reports, _ = _parts(task, Selection("sst2", ["validation", f"{SHIFTED}:validation"]), token=None)
    assert reports[1].splits[0].keys == [("validation", i) for i in range(32)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hfsoup"):
        _parts(task, Selection("sst2", ["validation", f"{COPY}:validation"]), token=None)
    assert (
        f"16 reported examples have the same inputs as held-out ones (validation and {COPY}:validation" in caplog.text
    )


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (["validation", "org/x:"], "set 2 ('org/x:'): expected SPLIT"),
        (["validation", "train[abc]"], "set 2 ('train[abc]'): Split 'train[abc]' is not"),
        ([f"{SHIFTED}:validation", "train"], "the first reported set is the in-distribution one"),
        (["validation", "validation"], "'validation' is reported twice"),
        ([], "expected one or more reported sets"),
    ],
)
def test_a_malformed_set_is_refused_by_validate_and_by_python(tmp_path, capsys, report, message):
    recipe = {
        "ingredients": ["org/a", "org/b"],
        "method": "greedy",
        "evaluation": {"task": "sst2", "report": report},
        "output": {"dir": "soup"},
    }
    assert main(["validate", str(write_recipe(tmp_path / "bad.yaml", recipe))]) == 1
    err = capsys.readouterr().err
    assert f"evaluation.report: {message}" in err and "Traceback" not in err
    with pytest.raises(InvalidSoupArgumentsError, match="report"):
        Selection("sst2", report).check_fields()


def test_a_recipe_with_a_list_cooks_and_is_reused(hub, tmp_path):
    data = {
        "ingredients": hub["ids"],
        "method": "uniform",
        "evaluation": {
            "task": "sst2",
            "report": ["validation", f"{SHIFTED}:validation"],
            "compare": [],
            "plot": False,
        },
        "output": {"dir": "soup"},
    }
    recipe = write_recipe(tmp_path / "recipe.yaml", data)
    cooked = hfsoup.cook_recipe(recipe)
    provenance = read_json(tmp_path / "soup" / "hfsoup.json")
    assert provenance["recipe"]["evaluation"]["report"] == data["evaluation"]["report"]
    assert [e["name"] for e in provenance["evaluation"]["reports"]] == data["evaluation"]["report"]
    table = cooked.soup.results
    assert table.sets == data["evaluation"]["report"] and table.row("uniform soup").reports.keys() == set(table.sets)
    assert hfsoup.cook_recipe(recipe).reused
    # One set, as a list or a string, is the same recipe (the string is what soups cooked before lists recorded).
    record = {"evaluation": {"task": "sst2", "report": ["validation"]}}
    assert _comparable(record) == _comparable({"evaluation": {"task": "sst2", "report": "validation"}})
    assert _comparable(record) != _comparable({"evaluation": {"task": "sst2", "report": ["validation", "train"]}})
