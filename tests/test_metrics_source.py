"""Metrics never run downloaded code unless asked (issue 14): the Hub's `evaluate-metric/glue` is a Python script.

Each test publishes, on the local Hub, a space `evaluate-metric/glue` whose `glue.py` is hfsoup's GLUE module with
one line added in front that writes a marker file when the script is imported: a stand-in for a hostile or
compromised endpoint. By default the marker never appears and no request for any space reaches the server (its
traffic log, over real HTTP); with the opt-in (`--hub-metrics`, `HFSOUP_HUB_METRICS=1`, `hub_metrics=True`) it does,
and every report records which implementation computed its scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfsoup import __version__
from hfsoup.cli import main
from hfsoup.evaluation.evaluator import evaluate_model
from hfsoup.evaluation.metrics import SHIPPED
from hfsoup.evaluation.tasks import TASKS
from hfsoup.publish.card import build_card, read_soup_folder
from hfsoup.testing.families import publish_family
from hfsoup.testing.glue import ROWS, build_glue, glue_rows, publish_glue, publish_glue_metric, tiny_classifier
from tests.test_tasks import _sklearn_glue


@pytest.fixture(autouse=True)
def no_switch(monkeypatch):
    """A developer's own `HFSOUP_HUB_METRICS` must not decide what the default is."""
    monkeypatch.delenv("HFSOUP_HUB_METRICS", raising=False)


def hostile_space(marker: Path) -> str:
    """Publish `evaluate-metric/glue` whose script writes `marker` when run; return the space's commit SHA."""
    script = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    return publish_glue_metric(script=script + (SHIPPED["glue"] / "glue.py").read_text())


def space_requests(hub, start: int) -> list[str]:
    """Every request for a space (its files, `/spaces/...`, or its API, `/api/spaces/...`) since `start`."""
    return [path for _, path, _, _ in hub.traffic[start:] if "/spaces/" in path]


SHIPPED_RECORD = {"source": "shipped", "hfsoup_version": __version__}


def test_eval_runs_the_shipped_module_by_default_and_the_hub_script_only_when_asked(local_hub, tmp_path, families):
    publish_glue(build_glue(tmp_path / "data", tasks=["mrpc"]))
    marker = tmp_path / "downloaded-code-ran"
    sha = hostile_space(marker)
    model = tiny_classifier(families["bert"].base, "mrpc", tmp_path / "mrpc")
    references = glue_rows(TASKS["mrpc"], "validation", ROWS["validation"])["label"]

    start = len(local_hub.traffic)
    args = ["eval", str(model), "--task", "mrpc", "--predictions", str(tmp_path / "predictions.json")]
    assert main([*args, "--json", str(tmp_path / "default.json")]) == 0
    assert space_requests(local_hub, start) == []  # not even asked for: nothing to run, nothing to leak
    assert not marker.exists()
    default = json.loads((tmp_path / "default.json").read_text())
    assert default["metric"] == {"name": "glue", "config": "mrpc", **SHIPPED_RECORD}
    [result] = default["results"]
    predictions = json.loads((tmp_path / "predictions.json").read_text())["validation"]
    assert result["metrics"] == pytest.approx(_sklearn_glue("mrpc", predictions, references))

    start = len(local_hub.traffic)
    args = ["eval", str(model), "--task", "mrpc", "--hub-metrics", "--json", str(tmp_path / "hub.json")]
    assert main(args) == 0
    assert marker.read_text() == "ran"  # the space's script did run: the switch is what decides
    opted = json.loads((tmp_path / "hub.json").read_text())
    assert opted["metric"] == {
        "name": "glue",
        "config": "mrpc",
        "source": "hub",
        "repo": "evaluate-metric/glue",
        "revision": sha,
    }
    assert f"/spaces/evaluate-metric/glue/resolve/{sha}/glue.py" in space_requests(local_hub, start)
    assert opted["results"][0]["metrics"] == result["metrics"]  # the same module, so the same scores


def test_environment_switch_and_the_python_keyword(local_hub, tmp_path, families, monkeypatch):
    publish_glue(build_glue(tmp_path / "data", tasks=["cola"]))
    marker = tmp_path / "downloaded-code-ran"
    sha = hostile_space(marker)
    model = tiny_classifier(families["bert"].base, "cola", tmp_path / "cola")

    monkeypatch.setenv("HFSOUP_HUB_METRICS", "0")
    start = len(local_hub.traffic)
    assert evaluate_model(model, "cola").metric["source"] == "shipped"
    assert space_requests(local_hub, start) == [] and not marker.exists()

    monkeypatch.setenv("HFSOUP_HUB_METRICS", "1")
    start = len(local_hub.traffic)
    assert evaluate_model(model, "cola", hub_metrics=False).metric["source"] == "shipped"  # the keyword wins
    assert space_requests(local_hub, start) == [] and not marker.exists()

    report = evaluate_model(model, "cola")
    assert report.metric["source"] == "hub" and report.metric["revision"] == sha
    assert marker.read_text() == "ran"


def test_soup_and_cook_record_the_metric_module_in_every_report(local_hub, tmp_path, families):
    ids = publish_family(families["bert"], members=["ft0", "ft1"])
    publish_glue(build_glue(tmp_path / "data", tasks=["sst2"]))
    marker = tmp_path / "downloaded-code-ran"
    sha = hostile_space(marker)
    ingredients = [ids["ft0"], ids["ft1"]]

    start = len(local_hub.traffic)
    out = tmp_path / "soup"
    args = ["soup", *ingredients, "-o", str(out), "--task", "sst2", "--compare", "none", "--no-plot"]
    assert main(args) == 0
    assert space_requests(local_hub, start) == [] and not marker.exists()
    shipped = {"name": "glue", "config": "sst2", **SHIPPED_RECORD}
    assert json.loads((out / "hfsoup.json").read_text())["evaluation"]["metric_module"] == shipped
    assert json.loads((out / "results.json").read_text())["metric_module"] == shipped
    card = str(build_card(read_soup_folder(out), base_exists=False))
    assert f"primary metric: accuracy (the `glue` module shipped with hfsoup {__version__})." in card

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"ingredients: [{ingredients[0]}, {ingredients[1]}]\n"
        "evaluation: {task: sst2, compare: [], plot: false}\n"
        "output: {dir: cooked}\n"
    )
    assert main(["cook", str(recipe), "--hub-metrics"]) == 0
    assert marker.read_text() == "ran"
    hub = {"name": "glue", "config": "sst2", "source": "hub", "repo": "evaluate-metric/glue", "revision": sha}
    cooked = tmp_path / "cooked"
    assert json.loads((cooked / "hfsoup.json").read_text())["evaluation"]["metric_module"] == hub
    assert json.loads((cooked / "results.json").read_text())["metric_module"] == hub
    card = str(build_card(read_soup_folder(cooked), base_exists=False))
    assert f"primary metric: accuracy (the Hub's `evaluate-metric/glue` module at `{sha}`)." in card


def test_hub_metrics_asked_for_but_unavailable_is_an_error_not_a_silent_fallback(
    local_hub, tmp_path, families, capsys
):
    publish_glue(build_glue(tmp_path / "data", tasks=["sst2"]))  # and no evaluate-metric/glue space
    model = tiny_classifier(families["bert"].base, "sst2", tmp_path / "sst2")
    assert main(["eval", str(model), "--task", "sst2", "--hub-metrics", "--json", str(tmp_path / "out.json")]) == 1
    error = capsys.readouterr().err
    assert "evaluate-metric/glue" in error and "drop --hub-metrics" in error and "Traceback" not in error
    assert not (tmp_path / "out.json").exists()


def test_shipped_modules_still_load_after_the_modules_cache_moved(tmp_path, monkeypatch):
    """`evaluate.load(<path>)` imports its copy from `HF_MODULES_CACHE`; a notebook or a test may move that cache
    (`use_local_hub`) within one process, after which the first load of another module must still work."""
    import sys

    import evaluate.config

    from hfsoup.evaluation.metrics import load_metric

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "first")
    assert load_metric("glue", "cola").compute([1, 0, 1], [1, 0, 0]) == {"matthews_correlation": 0.5}
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "second")
    assert load_metric("accuracy", "default").compute([1, 0, 1], [1, 0, 0]) == {"accuracy": 2 / 3}
    assert str(tmp_path / "first") not in sys.path and str(tmp_path / "second") in sys.path
    assert (tmp_path / "second" / "evaluate_modules" / "metrics" / "accuracy").is_dir()


def test_hub_module_needing_a_missing_package_names_the_extra(local_hub, tmp_path, families, capsys):
    """The real `evaluate-metric/glue` imports scipy and scikit-learn, which hfsoup no longer depends on."""
    publish_glue(build_glue(tmp_path / "data", tasks=["sst2"]))
    marker = tmp_path / "downloaded-code-ran"
    # The marker first: if the script were imported at all, it would be written before the missing import fails.
    script = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nimport hfsoup_no_such_package\n"
    publish_glue_metric(script=script + (SHIPPED["glue"] / "glue.py").read_text())
    model = tiny_classifier(families["bert"].base, "sst2", tmp_path / "sst2")
    assert main(["eval", str(model), "--task", "sst2", "--hub-metrics"]) == 1
    error = capsys.readouterr().err
    assert "hfsoup_no_such_package" in error and "pip install 'hfsoup[hub-metrics]'" in error
    assert not marker.exists()  # refused before the script was imported
