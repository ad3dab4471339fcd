"""`hfsoup eval` end to end: a GLUE-shaped dataset on the local Hub, tiny BERT and T5 classifiers, every task.

Predictions are checked against a plain one-example-at-a-time forward pass (no batching, no padding), references
against the data the builder wrote, and metrics against scikit-learn and scipy on the same predictions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from hfsoup import __version__
from hfsoup.cli import main
from hfsoup.errors import EvaluationError
from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
from hfsoup.evaluation.predictors.registry import PREDICTORS
from hfsoup.evaluation.tasks import TASKS
from hfsoup.testing.families import publish_folder
from hfsoup.testing.glue import ROWS, build_glue, glue_rows, publish_glue, publish_glue_metric, tiny_classifier
from tests.test_tasks import _sklearn_glue

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def glue(tmp_path_factory, families):
    """One local Hub for the module, holding the tiny GLUE as `nyu-mll/glue`, and a tiny classifier per task."""
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    root = tmp_path_factory.mktemp("glue")
    models = {name: tiny_classifier(families["bert"].base, name, root / f"bert-{name}") for name in TASKS}
    models["t5-rte"] = tiny_classifier(families["t5"].base, "rte", root / "t5-rte")
    saved_token = os.environ.pop("HF_TOKEN", None)
    with LocalHubServer(root / "store", anonymous_writes=True) as hub, use_local_hub(hub.url, root / "hf_home"):
        folder = build_glue(root / "data")
        sha = publish_glue(folder)
        yield {"hub": hub, "models": models, "data": folder, "sha": sha, "root": root}
    if saved_token is not None:
        os.environ["HF_TOKEN"] = saved_token


def reference_predictions(model_dir: Path, task_name: str, split: str) -> list:
    """Each example alone through `transformers`, no padding: what a batched, sorted, padded run must reproduce."""
    task = TASKS[task_name]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = glue_rows(task, split, ROWS["validation"])
    out = []
    with torch.no_grad():
        for i in range(len(rows["idx"])):
            logits = model(**tokenizer(*[rows[f][i] for f in task.text_fields], return_tensors="pt")).logits[0]
            if task.is_regression:
                out.append(logits[0].item())
            else:
                out.append(task.label_names.index(model.config.id2label[int(logits.argmax())]))
    return out


@pytest.mark.parametrize("task_name", list(TASKS))
def test_every_glue_task_through_load_dataset(glue, task_name):
    task = TASKS[task_name]
    report = evaluate_model(glue["models"][task_name], task_name, batch_size=5)
    assert report.dataset["id"] == "nyu-mll/glue" and report.dataset["sha"] == glue["sha"]
    # The module shipped with hfsoup, whatever the Hub holds (here: no space at all).
    assert report.metric == {"name": "glue", "config": task_name, "source": "shipped", "hfsoup_version": __version__}
    assert [r.split for r in report.results] == list(task.dataset_splits("validation"))
    for result in report.results:
        references = glue_rows(task, result.split, ROWS["validation"])["label"]
        assert result.num_examples == len(references) == len(result.predictions)
        expected_predictions = reference_predictions(glue["models"][task_name], task_name, result.split)
        if task.is_regression:
            # Padding moves the body's outputs by float rounding; the standardized head magnifies it.
            assert result.predictions == pytest.approx(expected_predictions, rel=1e-3, abs=1e-2)
        else:
            assert result.predictions == expected_predictions
            assert len(set(result.predictions)) > 1  # a metric over one predicted class would prove little
        expected = _sklearn_glue(task_name, result.predictions, references)
        assert result.metrics == pytest.approx(expected, abs=1e-6)


def test_t5_for_sequence_classification(glue):
    report = evaluate_model(glue["models"]["t5-rte"], "rte", batch_size=4)
    [result] = report.results
    assert result.predictions == reference_predictions(glue["models"]["t5-rte"], "rte", "validation")
    references = glue_rows(TASKS["rte"], "validation", ROWS["validation"])["label"]
    assert result.metrics == pytest.approx(_sklearn_glue("rte", result.predictions, references))


def test_hub_model_by_revision_is_pinned_to_its_sha(glue, families):
    from huggingface_hub import HfApi

    repo_id = publish_folder(families["bert"].finetunes[0], "evalorg/tiny-sst2")
    sha = HfApi().model_info(repo_id).sha
    HfApi().create_tag(repo_id, tag="v1")
    report = evaluate_model(f"{repo_id}@v1", "sst2", limit=10)
    assert report.model["spec"] == f"{repo_id}@v1" and report.model["sha"] == sha
    assert report.results[0].num_examples == 10
    # The family's labels are sst2's (negative, positive): the same predictions as from its folder.
    local = evaluate_model(families["bert"].finetunes[0], "sst2", limit=10)
    assert report.results[0].predictions == local.results[0].predictions


def test_permuted_labels_are_mapped_by_name(glue, families):
    folders = families["bert"].folders()
    straight = evaluate_model(folders["ft0"], "sst2").results[0]
    permuted = evaluate_model(folders["permuted_labels"], "sst2").results[0]
    assert permuted.predictions == straight.predictions and permuted.metrics == straight.metrics


def test_generic_labels_are_assumed_in_order_and_logged(glue, tmp_path, families, caplog):
    generic = tiny_classifier(families["bert"].base, "sst2", tmp_path / "generic", labels=["LABEL_0", "LABEL_1"])
    named = tiny_classifier(families["bert"].base, "sst2", tmp_path / "named")  # same seed: the same weights
    with caplog.at_level("WARNING", logger="hfsoup"):
        result = evaluate_model(generic, "sst2").results[0]
    assert "generic label names (LABEL_0, LABEL_1); assuming they are in the dataset's order" in caplog.text
    assert result.predictions == evaluate_model(named, "sst2").results[0].predictions


def test_evaluator_tokenizes_once_per_tokenizer(glue, families, monkeypatch):
    predictor = PREDICTORS["sequence-classification"]
    calls = []
    original = type(predictor).encode
    monkeypatch.setattr(type(predictor), "encode", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    # limit=11: data no other test has encoded (the first 11 rows have a fingerprint of their own).
    evaluator = Evaluator("sst2", limit=11)
    scores = [evaluator.score(path) for path in families["bert"].finetunes]
    assert len(calls) == 1 and len(evaluator._batches) == 1
    assert all(set(s) == {"accuracy"} for s in scores)
    # A new evaluator on the same data and tokenizer reads the encoding from the datasets cache.
    Evaluator("sst2", limit=11).score(families["bert"].finetunes[0])
    assert len(calls) == 1
    # Another max_length is another encoding; so is another tokenizer.
    Evaluator("sst2", limit=11, max_length=8).score(families["bert"].finetunes[0])
    assert len(calls) == 2
    Evaluator("sst2", limit=11).score(families["bert"].folders()["other_tokenizer"])
    assert len(calls) == 3


def test_a_loaded_model_is_scored_in_place(glue, families):
    """What a soup search does: one model in memory, new weights loaded into it, scored again."""
    from transformers import BertForSequenceClassification

    ft0, ft1 = families["bert"].finetunes[:2]
    config = AutoConfig.from_pretrained(ft0)
    # As if built in memory: no folder to find a tokenizer in, nothing declaring its class but the class itself.
    config.architectures, config.name_or_path = None, ""
    model = BertForSequenceClassification(config).eval()
    evaluator = Evaluator("sst2", limit=16)
    with pytest.raises(EvaluationError, match="Pass tokenizer="):
        evaluator.score(model)
    for folder in (ft0, ft1):
        model.load_state_dict(AutoModelForSequenceClassification.from_pretrained(folder).state_dict())
        report = evaluator.evaluate(model, tokenizer=str(folder))
        assert report.results[0].predictions == evaluate_model(folder, "sst2", limit=16).results[0].predictions


def test_limit_takes_the_first_examples(glue):
    model = glue["models"]["cola"]
    full = evaluate_model(model, "cola").results[0]
    first = evaluate_model(model, "cola", limit=7).results[0]
    assert first.num_examples == 7 and first.predictions == full.predictions[:7]


def test_mnli_splits_one_at_a_time(glue):
    model = glue["models"]["mnli"]
    both = evaluate_model(model, "mnli").metrics()
    assert set(both) == {"validation_matched/accuracy", "validation_mismatched/accuracy"}
    mismatched = evaluate_model(model, "mnli", "validation_mismatched")
    assert mismatched.metrics() == {"accuracy": both["validation_mismatched/accuracy"]}


def test_cli_eval_prints_a_table_and_writes_json(glue, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert main(["eval", str(glue["models"]["mrpc"]), "--task", "mrpc", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mrpc on" in table and "accuracy" in table and "f1" in table and "validation" in table
    data = json.loads(out.read_text())
    assert (data["task"], data["split"], data["model"]["path"]) == ("mrpc", "validation", str(glue["models"]["mrpc"]))
    assert data["dataset"]["sha"] == glue["sha"]
    [result] = data["results"]
    assert result["num_examples"] == ROWS["validation"] and set(result["metrics"]) == {"accuracy", "f1"}


def test_local_data_files_with_label_names(glue, tmp_path):
    """CSV files whose labels are names, not ids, evaluated like the Hub dataset."""
    import datasets

    rows = datasets.load_dataset("nyu-mll/glue", "rte", split="validation").to_pandas()
    rows["label"] = [TASKS["rte"].label_names[i] for i in rows["label"]]
    rows.to_csv(tmp_path / "dev.csv", index=False)
    from_files = evaluate_model(glue["models"]["rte"], "rte", data_files={"validation": [str(tmp_path / "dev.csv")]})
    from_hub = evaluate_model(glue["models"]["rte"], "rte")
    assert from_files.results[0].predictions == from_hub.results[0].predictions
    assert from_files.results[0].metrics == from_hub.results[0].metrics


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["eval", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_bad_input_exits_1_with_the_fix(glue, tmp_path, families, capsys):
    sst2 = str(glue["models"]["sst2"])
    code, err = run_cli(capsys, sst2, "--task", "squad")
    assert code == 1 and "Unknown task 'squad'" in err and "Pick one of: cola, sst2" in err

    code, err = run_cli(capsys, sst2, "--task", "sst2", "--split", "dev")
    assert code == 1 and "Split 'dev' does not exist" in err and "train, validation, test" in err

    code, err = run_cli(capsys, str(glue["models"]["mnli"]), "--task", "mnli", "--split", "validation_mached")
    assert code == 1 and "validation_matched, validation_mismatched" in err

    code, err = run_cli(capsys, str(families["bert"].folders()["num_labels"]), "--task", "sst2")
    assert (
        code == 1 and "has 3 output(s) (negative, positive, neutral)" in err and "needs 2 (negative, positive)" in err
    )

    code, err = run_cli(capsys, sst2, "--task", "rte")
    assert code == 1 and "do not match task 'rte'" in err

    code, err = run_cli(capsys, sst2, "--task", "sst2", "--split", "test")
    assert code == 1 and "has no labels" in err and "gluebenchmark.com" in err and "--split validation" in err

    code, err = run_cli(capsys, str(glue["models"]["mnli"]), "--task", "mnli", "--split", "test")
    assert code == 1 and "has no labels" in err

    import datasets

    empty = tmp_path / "empty.parquet"
    datasets.Dataset.from_dict({"sentence": [], "label": [], "idx": []}).to_parquet(str(empty))
    code, err = run_cli(capsys, sst2, "--task", "sst2", "--data-files", str(empty))
    assert code == 1 and "has no examples" in err

    code, err = run_cli(capsys, sst2, "--task", "sst2", "--data-files", str(tmp_path / "missing.csv"))
    assert code == 1 and "Data files not found" in err


def test_another_dataset_repo_pinned_to_its_sha(glue, tmp_path):
    sha = publish_glue(build_glue(tmp_path / "copy", tasks=["sst2"], seed=1), repo_id="evalorg/glue-copy")
    report = evaluate_model(glue["models"]["sst2"], "sst2", dataset="evalorg/glue-copy@main")
    assert report.dataset == {"id": "evalorg/glue-copy", "config": "sst2", "revision": "main", "sha": sha}
    references = glue_rows(TASKS["sst2"], "validation", ROWS["validation"], seed=1)["label"]
    [result] = report.results
    assert result.metrics == pytest.approx(_sklearn_glue("sst2", result.predictions, references))

    with pytest.raises(EvaluationError, match="has no config 'cola'"):
        evaluate_model(glue["models"]["cola"], "cola", dataset="evalorg/glue-copy")
    with pytest.raises(EvaluationError, match="'evalorg/missing' was not found"):
        evaluate_model(glue["models"]["sst2"], "sst2", dataset="evalorg/missing")
    with pytest.raises(EvaluationError, match="Revision 'v9' of dataset"):
        evaluate_model(glue["models"]["sst2"], "sst2", dataset="evalorg/glue-copy@v9")


def test_unknown_task_from_python():
    with pytest.raises(EvaluationError, match="Unknown task"):
        Evaluator("squad")


def test_metric_from_the_hub_space(local_hub, tmp_path, families):
    """`hub_metrics=True`: the `evaluate-metric/glue` space through HF_ENDPOINT, at the revision evaluate picks."""
    publish_glue(build_glue(tmp_path / "data", tasks=["mrpc"]))
    sha = publish_glue_metric()
    model = tiny_classifier(families["bert"].base, "mrpc", tmp_path / "mrpc")
    report = evaluate_model(model, "mrpc", hub_metrics=True)
    assert report.metric == {
        "name": "glue",
        "config": "mrpc",
        "source": "hub",
        "repo": "evaluate-metric/glue",
        "revision": sha,
    }
    reads = [(m, path, status) for m, path, status, _ in local_hub.traffic if "/spaces/" in path and m != "POST"]
    # The revision evaluate itself would pick (its own version's tag, absent here, then main), then that commit only.
    assert reads[:2] == [
        ("GET", f"/api/spaces/evaluate-metric/glue/revision/v{evaluate.__version__}", 404),
        ("GET", "/api/spaces/evaluate-metric/glue/revision/main", 200),
    ]
    files = [path for _, path, _ in reads if path.startswith("/spaces/")]
    assert f"/spaces/evaluate-metric/glue/resolve/{sha}/glue.py" in files
    assert all(path.startswith(f"/spaces/evaluate-metric/glue/resolve/{sha}/") for path in files)
    [result] = report.results
    references = glue_rows(TASKS["mrpc"], "validation", ROWS["validation"])["label"]
    assert result.metrics == pytest.approx(_sklearn_glue("mrpc", result.predictions, references))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_predictions_of_one(glue, tmp_path):
    """torchrun with 2 CPU processes on local files, the Hub out of reach: every batch once, gathered in order."""
    model = glue["models"]["mnli"]
    files = {
        s: str(glue["data"] / "mnli" / f"{s}-00000-of-00001.parquet")
        for s in TASKS["mnli"].dataset_splits("validation")
    }
    single = evaluate_model(model, "mnli", data_files={s: [f] for s, f in files.items()}, batch_size=4)

    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}",  # nothing listens: no request can leave loopback
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    for key in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_EVALUATE_CACHE", "HF_TOKEN_PATH"):
        env.pop(key, None)
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"),
        f"--master_port={_free_port()}",
        *("-m", "hfsoup.cli", "-v", "eval", str(model), "--task", "mnli", "--batch-size", "4"),
        *("--data-files", *(f"{s}={f}" for s, f in files.items())),
        *("--json", str(tmp_path / "out.json"), "--predictions", str(tmp_path / "predictions.json")),
    ]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Each process scored half of each split's 8 batches.
    for rank in (0, 1):
        assert f"process {rank}/2: 4 of the 8 batches of validation_matched" in done.stderr
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert predictions == {r.split: r.predictions for r in single.results}
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["metric"]["source"] == "shipped"  # the module shipped with hfsoup (and the Hub is out of reach)
    assert [r["metrics"] for r in data["results"]] == [r.metrics for r in single.results]
    assert done.stdout.count("mnli on") == 1  # one table, from rank 0
