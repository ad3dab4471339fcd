"""T5 as text-to-text on every GLUE task: the tiny T5 family's `T5ForConditionalGeneration`, the tiny GLUE repo.

Its tokenizer splits every label word into several pieces, so the scoring must handle multi-token answers. Each
prediction must be a valid label (stsb: a number on the 0.2 grid in [0, 5]); a few are checked against a plain
`transformers` computation (the loss of each answer, example by example), and the metrics against scikit-learn.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hfsoup.errors import EvaluationError
from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
from hfsoup.evaluation.predictors.registry import PREDICTORS, predictor_for
from hfsoup.evaluation.predictors.t5 import STSB_ANSWERS, T5_FORMATS
from hfsoup.evaluation.tasks import TASKS, Task
from hfsoup.testing.glue import ROWS, build_glue, glue_rows, publish_glue
from tests.test_tasks import _sklearn_glue


@pytest.fixture(scope="module")
def glue_hub(tmp_path_factory):
    """The tiny GLUE as `nyu-mll/glue` on a local Hub, for the module."""
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    root = tmp_path_factory.mktemp("t5glue")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with LocalHubServer(root / "store", anonymous_writes=True) as hub, use_local_hub(hub.url, root / "hf_home"):
        publish_glue(build_glue(root / "data"))
        yield hub
    torch.set_num_threads(threads)


def test_every_glue_task_has_a_format_in_label_order():
    assert set(T5_FORMATS) == set(TASKS)
    for name, form in T5_FORMATS.items():
        task = TASKS[name]
        assert form.answers == (task.label_names or STSB_ANSWERS)
        assert sorted(form.template.replace("{", "}").split("}")[1::2]) == sorted(task.text_fields)
        assert form.template.startswith(f"{name} ")


def test_t5_for_conditional_generation_is_text_to_text():
    assert predictor_for(["T5ForConditionalGeneration"]).name == "t5-text"
    assert predictor_for(["T5ForSequenceClassification"]).name == "sequence-classification"


def reference_predictions(model_dir, task: Task, rows: dict, n: int) -> list:
    """Each example alone: every answer's summed token log-likelihood from the loss `transformers` computes."""
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    form = T5_FORMATS[task.name]
    out = []
    with torch.no_grad():
        for i in range(n):
            text = form.template.format(**{f: rows[f][i] for f in task.text_fields})
            inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=tokenizer.model_max_length)
            scores = []
            for answer in form.answers:
                labels = tokenizer(answer, return_tensors="pt").input_ids
                scores.append(-model(**inputs, labels=labels).loss.item() * labels.shape[1])
            best = max(range(len(scores)), key=scores.__getitem__)
            out.append(float(form.answers[best]) if task.is_regression else best)
    return out


@pytest.mark.parametrize("task_name", list(TASKS))
def test_every_prediction_is_a_valid_label(glue_hub, families, task_name):
    task = TASKS[task_name]
    model_dir = families["t5"].finetunes[0]
    report = evaluate_model(model_dir, task_name, batch_size=8)
    assert [r.split for r in report.results] == list(task.dataset_splits("validation"))
    for result in report.results:
        predictions = result.predictions
        assert len(predictions) == ROWS["validation"]
        if task.is_regression:
            assert all(isinstance(p, float) and 0.0 <= p <= 5.0 for p in predictions)
            assert {f"{p:.1f}" for p in predictions} <= set(STSB_ANSWERS)
        else:
            assert set(predictions) <= set(range(task.num_labels))
        rows = glue_rows(task, result.split, ROWS["validation"])
        assert result.metrics == pytest.approx(_sklearn_glue(task_name, predictions, rows["label"]), nan_ok=True)
        # Batched and padded, the answers scored together: the same as one example at a time.
        assert predictions[:4] == reference_predictions(model_dir, task, rows, 4)


def test_shared_encoding_across_t5_models(glue_hub, families):
    evaluator = Evaluator("rte", limit=12)
    scores = [evaluator.score(path) for path in families["t5"].finetunes[:2]]
    assert len(evaluator._batches) == 1 and all(set(s) == {"accuracy"} for s in scores)


def test_a_task_without_a_format_is_refused():
    task = Task("other", "nyu-mll/glue", "rte", ("sentence1", "sentence2"), ("a", "b"), "glue", "rte", "accuracy")
    with pytest.raises(EvaluationError, match="no T5 text-to-text format"):
        PREDICTORS["t5-text"].prepare(None, task, model_name="m", tokenizer=None)


def test_cli_eval_with_kind(glue_hub, families, tmp_path, capsys):
    from hfsoup.cli import main

    model = str(families["t5"].finetunes[0])
    assert main(["eval", model, "--task", "rte", "--kind", "t5-text", "--limit", "6"]) == 0
    assert "rte on" in capsys.readouterr().out
    assert main(["eval", model, "--task", "rte", "--kind", "no-such-kind"]) == 1
    assert "t5-text" in capsys.readouterr().err
