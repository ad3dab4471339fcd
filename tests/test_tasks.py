"""The task table, label matching, and hfsoup's GLUE metric module against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hfsoup.errors import EvaluationError, HfsoupError
from hfsoup.evaluation.tasks import TASKS, get_task, label_mapping

# The real GLUE, as `nyu-mll/glue` has it: text columns and label names in id order.
REAL_GLUE = {
    "cola": (("sentence",), ("unacceptable", "acceptable")),
    "sst2": (("sentence",), ("negative", "positive")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate")),
    "stsb": (("sentence1", "sentence2"), ()),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": (("sentence1", "sentence2"), ("not_entailment", "entailment")),
}


def test_table_matches_real_glue():
    assert set(TASKS) == set(REAL_GLUE)
    for name, (fields, labels) in REAL_GLUE.items():
        task = TASKS[name]
        assert (task.dataset, task.config, task.metric, task.metric_config) == ("nyu-mll/glue", name, "glue", name)
        assert (task.text_fields, task.label_names) == (fields, labels)
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    assert TASKS["mnli"].num_labels == 3 and not TASKS["mnli"].is_regression
    assert TASKS["mnli"].dataset_splits("validation") == ("validation_matched", "validation_mismatched")
    assert TASKS["mnli"].dataset_splits("validation_mismatched") == ("validation_mismatched",)
    assert TASKS["sst2"].dataset_splits("validation") == ("validation",)


def test_get_task_is_forgiving_about_spelling_and_clear_about_unknown_names():
    assert get_task("SST-2") is TASKS["sst2"]
    with pytest.raises(EvaluationError) as info:
        get_task("squad")
    assert isinstance(info.value, HfsoupError)
    assert "'squad'" in info.value.message and "sst2" in info.value.fix and "mnli" in info.value.fix


def test_label_mapping_by_name_case_and_order():
    task = TASKS["mnli"]
    assert label_mapping({0: "entailment", 1: "neutral", 2: "contradiction"}, task, model_name="m") == (
        [0, 1, 2],
        False,
    )
    # Upper case, and another order: output 0 means contradiction (dataset id 2).
    assert label_mapping({0: "CONTRADICTION", 1: "Entailment", 2: "neutral"}, task, model_name="m") == (
        [2, 0, 1],
        False,
    )
    assert label_mapping({0: "Not-Entailment", 1: "ENTAILMENT"}, TASKS["rte"], model_name="m") == ([1, 0], False)


def test_generic_labels_are_assumed_in_dataset_order():
    assert label_mapping({0: "LABEL_0", 1: "LABEL_1"}, TASKS["sst2"], model_name="m") == ([0, 1], True)
    assert label_mapping({0: "LABEL_0"}, TASKS["stsb"], model_name="m") == ([0], False)


def test_label_mismatches_are_spelled_out():
    with pytest.raises(EvaluationError) as info:
        label_mapping({0: "negative", 1: "positive", 2: "neutral"}, TASKS["sst2"], model_name="org/three")
    message = info.value.message
    assert "'org/three' has 3 output(s) (negative, positive, neutral)" in message
    assert "needs 2 (negative, positive)" in message

    with pytest.raises(EvaluationError) as info:
        label_mapping({0: "negative", 1: "positive"}, TASKS["rte"], model_name="org/sentiment")
    message = info.value.message
    assert "'negative', 'positive'" in message and "'entailment', 'not_entailment'" in message

    with pytest.raises(EvaluationError, match="needs 1 .one regression output"):
        label_mapping({0: "negative", 1: "positive"}, TASKS["stsb"], model_name="m")


def _sklearn_glue(config: str, predictions, references) -> dict[str, float]:
    """The GLUE metrics computed independently, with scikit-learn and scipy."""
    if config == "cola":
        return {"matthews_correlation": matthews_corrcoef(references, predictions)}
    if config == "stsb":
        return {"pearson": pearsonr(predictions, references)[0], "spearmanr": spearmanr(predictions, references)[0]}
    accuracy = accuracy_score(references, predictions)
    if config in ("mrpc", "qqp"):
        return {"accuracy": accuracy, "f1": f1_score(references, predictions)}
    return {"accuracy": accuracy}


@pytest.fixture
def shipped_glue(local_hub):
    """hfsoup's GLUE module, loaded the way the evaluator loads it by default (the Hub's only on request)."""
    from hfsoup.evaluation.metrics import load_metric

    def load(config):
        metric = load_metric("glue", config)
        assert metric.source == "shipped"
        return metric

    return load


def test_shipped_glue_metric_agrees_with_sklearn_and_scipy(shipped_glue):
    rng = np.random.default_rng(0)
    for name, task in TASKS.items():
        metric = shipped_glue(task.metric_config)
        for trial in range(3):
            if task.is_regression:
                references = np.round(rng.integers(0, 26, size=40) / 5, 1)  # ties, as in STS-B
                predictions = references + rng.normal(0, 1.5, size=40) if trial else rng.integers(0, 5, size=40) * 1.0
            else:
                references = rng.integers(0, task.num_labels, size=40)
                noise = rng.integers(0, task.num_labels, size=40)
                predictions = np.where(rng.random(40) < 0.6, references, noise) if trial else noise
            got = metric.compute(predictions.tolist(), references.tolist())
            expected = _sklearn_glue(name, predictions, references)
            assert set(got) == set(expected), name
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, abs=1e-6), (name, trial, key)


def test_shipped_glue_metric_edge_cases(shipped_glue):
    mcc, mrpc = shipped_glue("cola"), shipped_glue("mrpc")
    # One class predicted everywhere: sklearn defines the correlation as 0.
    assert mcc.compute([1, 1, 1, 1], [0, 1, 0, 1]) == {"matthews_correlation": 0.0}
    assert mcc.compute([1, 0, 1, 0], [1, 0, 1, 0]) == {"matthews_correlation": 1.0}
    # No positive predicted nor true: sklearn's F1 is 0 (with a warning).
    assert mrpc.compute([0, 0], [0, 0]) == {"accuracy": 1.0, "f1": 0.0}
    # Three classes: sklearn's multiclass Matthews correlation.
    predictions, references = [0, 1, 2, 2, 1, 0, 2], [0, 1, 1, 2, 0, 0, 2]
    got = mcc.compute(predictions, references)["matthews_correlation"]
    assert got == pytest.approx(matthews_corrcoef(references, predictions))


def test_metric_module_names_its_configs(shipped_glue):
    with pytest.raises(KeyError, match="sst2"):
        shipped_glue("squad")
