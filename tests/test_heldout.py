"""Held-out and reported parts (never overlapping unless forced) and the results table's files."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from hfsoup.errors import EvaluationError, MissingDependencyError
from hfsoup.selection.heldout import carve
from hfsoup.selection.results import ResultsTable, Row


def test_one_split_is_halved_disjointly_and_reproducibly():
    held, report = carve({"validation": 409}, held_out=None, report="validation")
    assert held.description == "seeded 50% of validation (seed 0, 204 rows)"
    assert report.description == "the other 50% of validation (205 rows)"
    assert set(held.positions).isdisjoint(report.positions)
    assert sorted(held.positions + report.positions) == list(range(409))
    assert carve({"validation": 409}, held_out="validation", report="validation")[0] == held
    other, _ = carve({"validation": 409}, held_out=None, report="validation", seed=1)
    assert other.positions != held.positions and other.description.endswith("(seed 1, 204 rows)")
    small, rest = carve({"validation": 100}, held_out=None, report="validation", size=10)
    assert small.num_rows == 10 and rest.num_rows == 90
    assert small.description == "seeded 10 of the 100 rows of validation (seed 0, 10 rows)"


def test_another_split_is_held_out_whole_or_sampled():
    held, report = carve({"train": 600, "test": 379}, held_out="train", report="test")
    assert (held.positions, held.description) == (None, "all of train (600 rows)")
    assert (report.positions, report.description) == (None, "all of test (379 rows)")
    held, _ = carve({"train": 600, "test": 379}, held_out="train", report="test", size=50, seed=3)
    assert len(held.positions) == 50 and held.description == "seeded 50 of the 600 rows of train (seed 3)"


def test_overlap_is_refused_unless_forced(caplog):
    with pytest.raises(EvaluationError, match="share 20 rows") as info:
        carve({"validation": 20}, held_out=None, report="validation", fraction=1.0)
    assert "--force" in info.value.fix
    held, report = carve({"validation": 20}, held_out=None, report="validation", fraction=1.0, force=True)
    assert held.positions is None and report.positions is None and "same rows" in report.description
    assert "optimistic" in caplog.text


@pytest.mark.parametrize(("kwargs", "message"), [({"fraction": 0}, "fraction"), ({"size": 0}, "size")])
def test_bad_parts_are_refused(kwargs, message):
    with pytest.raises(EvaluationError, match=message):
        carve({"validation": 20}, held_out=None, report="validation", **kwargs)
    with pytest.raises(EvaluationError, match="Cannot hold out 30"):
        carve({"validation": 20}, held_out=None, report="validation", size=30)


def table() -> ResultsTable:
    rows = [
        Row("org/a", "ingredient", sha="a" * 40, kept=True, held_out={"accuracy": 0.8}, report={"accuracy": 0.7}),
        Row("org/b", "ingredient", sha="b" * 40, kept=False, held_out={"accuracy": 0.8}, report={"accuracy": 0.9}),
        Row("greedy soup", "soup", method="greedy", held_out={"accuracy": 0.85}, report={"accuracy": 0.75}),
        Row("ensemble", "ensemble", held_out={"accuracy": 0.82}, report={"accuracy": 0.74}),
    ]
    return ResultsTable("accuracy", "seeded 50% of validation (seed 0, 10 rows)", "the other 50% (10 rows)", rows)


def test_the_table_is_printed_and_saved(tmp_path):
    results = table()
    assert results.best_individual().name == "org/a"  # a tie on held-out: the first, never the reported score
    text = results.format_table()
    assert "org/a (best individual)" in text and "org/b (best" not in text
    assert "greedy soup" in text and "0.8500" in text and text.startswith("held-out: seeded 50%")
    assert results.save(tmp_path) == ["results.json", "results.csv", "results.png"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["metric"] == "accuracy" and data["best_individual"] == "org/a"
    assert data["rows"][1] == {
        "name": "org/b",
        "kind": "ingredient",
        "method": None,
        "sha": "b" * 40,
        "kept": False,
        "held_out": {"accuracy": 0.8},
        "report": {"accuracy": 0.9},
    }
    with (tmp_path / "results.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [line["name"] for line in lines] == ["org/a", "org/b", "greedy soup", "ensemble"]
    assert lines[2]["method"] == "greedy" and lines[2]["held_out/accuracy"] == "0.85" and lines[0]["kept"] == "true"
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_matplotlib_is_named_with_the_fix(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name))
    with pytest.raises(MissingDependencyError, match="matplotlib") as info:
        table().save(tmp_path)
    assert "hfsoup[plot]" in info.value.fix and "--no-plot" in info.value.fix
    (tmp_path / "x").mkdir()
    assert table().save(tmp_path / "x", plot=False) == ["results.json", "results.csv"]


def test_duplicate_inputs_compares_images_by_their_pixels():
    from PIL import Image

    from hfsoup.selection.heldout import duplicate_inputs

    def image(value: int) -> Image.Image:
        return Image.new("RGB", (4, 4), (value, 0, 0))

    held = [(image(1),), (image(2),)]
    report = [(image(2),), (image(3),), (image(2),)]  # PIL images are unhashable: compared by their pixels
    assert duplicate_inputs(held, report) == 2
    # Mixed fields and datasets' undecoded form: {"bytes", "path"}.
    held = [("a", {"bytes": b"\x89PNG1", "path": None}), ("b", [1, 2])]
    assert duplicate_inputs(held, [("a", {"bytes": b"\x89PNG1", "path": None}), ("b", [1, 3])]) == 1
