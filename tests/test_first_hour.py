"""What a new user trips over in the first hour (issue 16): each test runs the command a user would type.

- `hfsoup eval --task text-classification` scores with the model's own class names, as plain transformers would;
- with `HF_HUB_OFFLINE=1` an ID missing from the cache fails at once with the fix, and one in the cache works;
- `hfsoup demo` keeps its results in `./hfsoup-demo/` and refuses to overwrite what it did not make;
- `-q`/`-v` work after the verb too, and `-v` prints the results table once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from hfsoup.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

REVIEWS = [
    ("a wonderful film, truly good", "positive"),
    ("bad acting and a dull plot", "negative"),
    ("soup of fine tuned models", "positive"),
    ("hello world", "negative"),
    ("averaging weights works", "positive"),
    ("the worst thing i have seen", "negative"),
    ("fine", "positive"),
    ("tokenizers split words", "negative"),
]


def _plain_transformers_accuracy(folder, rows) -> tuple[float, list[str]]:
    """Accuracy and predicted class names of the model in `folder`, computed with transformers alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([t for t, _ in rows], return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        ids = model(**batch).logits.argmax(-1).tolist()
    names = [model.config.id2label[i] for i in ids]
    return sum(n == label for n, (_, label) in zip(names, rows, strict=True)) / len(rows), names


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    lines = [f'"{text}",{label}' for text, label in REVIEWS]
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    return path


# --- item 2: hfsoup eval scores text-classification ---------------------------------------------------------------


def test_eval_text_classification_matches_plain_transformers(families, reviews_csv, tmp_path, hf_home):
    for folder in families["bert"].finetunes[:2]:
        expected, names = _plain_transformers_accuracy(folder, REVIEWS)
        out = tmp_path / f"{folder.name}.json"
        predictions = tmp_path / f"{folder.name}-predictions.json"
        argv = ["eval", str(folder), "--task", "text-classification", "--data-files", f"test={reviews_csv}"]
        assert main([*argv, "--json", str(out), "--predictions", str(predictions)]) == 0
        report = json.loads(out.read_text())
        assert report["task"] == "text-classification"
        assert report["results"][0]["split"] == "test"  # the one split of --data-files, without --split
        assert report["results"][0]["metrics"]["accuracy"] == pytest.approx(expected)
        # Predictions are dataset label ids; id2label order here, so they name the same classes transformers does.
        predicted = json.loads(predictions.read_text())["test"]
        assert [["negative", "positive"][p] for p in predicted] == names


def test_evaluate_model_reads_text_classification_labels_from_a_loaded_model_and_a_hub_id(
    families, reviews_csv, local_hub
):
    from transformers import AutoModelForSequenceClassification

    from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
    from hfsoup.testing.families import publish_folder

    folder = families["bert"].finetunes[0]
    expected, _ = _plain_transformers_accuracy(folder, REVIEWS)
    files = {"test": [str(reviews_csv)]}
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    kwargs = {"data_files": files, "tokenizer": str(folder)}
    assert evaluate_model(loaded, "text-classification", "test", **kwargs).metrics()["accuracy"] == expected
    repo = publish_folder(folder, "first-hour/bert-ft0")
    assert evaluate_model(repo, "text-classification", "test", data_files=files).metrics()["accuracy"] == expected
    evaluator = Evaluator("text-classification", "test", data_files=files, labels_from=repo)
    assert evaluator.task.label_names == ("negative", "positive")
    assert evaluator.score(str(folder))["accuracy"] == expected


def test_text_classification_without_data_or_labels_says_what_to_pass(families, capsys):
    from hfsoup.errors import EvaluationError
    from hfsoup.evaluation.evaluator import Evaluator

    folder = str(families["bert"].finetunes[0])
    assert main(["eval", folder, "--task", "text-classification"]) == 1
    err = capsys.readouterr().err
    assert "Task text-classification has no data of its own" in err and "--data-files SPLIT=FILE" in err
    with pytest.raises(EvaluationError, match="takes its class names from a model") as caught:
        Evaluator("text-classification", "test", data_files={"test": ["x.csv"]})
    assert "labels_from=MODEL" in caught.value.fix


# --- item 5: offline means offline ---------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, as the clients read it at import (this process imported them already)."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    # A retry would wait 1 s, then 2, 4, ...: any retry shows in the time and in the log.
    monkeypatch.delenv("HFSOUP_HUB_RETRIES", raising=False)
    monkeypatch.delenv("HFSOUP_HUB_RETRY_WAIT", raising=False)


@pytest.mark.parametrize("verb", ["soup", "check", "eval"])
def test_offline_an_unknown_id_fails_at_once_with_the_fix(
    verb, local_hub, offline, reviews_csv, tmp_path, capsys, caplog
):
    argv = {
        "soup": ["soup", "nobody/missing@v1", "nobody/other", "-o", str(tmp_path / "soup")],
        "check": ["check", "nobody/missing@v1", "nobody/other"],
        "eval": ["eval", "nobody/missing@v1", "--task", "text-classification", "--data-files", f"test={reviews_csv}"],
    }[verb]
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 1
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert elapsed < 5, f"{verb} took {elapsed:.1f} s offline"
    assert "trying again" not in caplog.text + err
    assert "Ingredient 'nobody/missing@v1' (revision v1) is not in the Hugging Face cache" in err
    assert "HF_HUB_OFFLINE is set" in err and "'hf download nobody/missing --revision v1'" in err
    assert err.count("Error:") == 1


def test_offline_a_cached_id_soups_checks_and_evals_like_online(
    families, local_hub, reviews_csv, tmp_path, monkeypatch, capsys
):
    import huggingface_hub

    from hfsoup.testing.families import publish_folder
    from hfsoup.testing.reference import max_relative_deviation, reference_average

    family = families["bert"]
    repos = [publish_folder(folder, f"first-hour/bert-ft{i}") for i, folder in enumerate(family.finetunes[:2])]
    assert main(["soup", *repos, "-o", str(tmp_path / "online")]) == 0  # fills the cache
    online = json.loads((tmp_path / "online" / "hfsoup.json").read_text())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unasked = local_hub.faults.add("status", path="/", status=500, times=None)  # any request would fail, and count

    assert main(["soup", *repos, "-o", str(tmp_path / "offline")]) == 0
    offline = json.loads((tmp_path / "offline" / "hfsoup.json").read_text())
    assert [i["sha"] for i in offline["ingredients"]] == [i["sha"] for i in online["ingredients"]]
    assert max_relative_deviation(tmp_path / "offline", reference_average(family.finetunes[:2])) < 1e-6
    assert main(["check", *repos]) == 0
    sha = online["ingredients"][0]["sha"]
    out = tmp_path / "eval.json"
    argv = ["eval", f"{repos[0]}@{sha}", "--task", "text-classification", "--data-files", str(reviews_csv)]
    assert main([*argv, "--json", str(out)]) == 0
    expected, _ = _plain_transformers_accuracy(family.finetunes[0], REVIEWS)
    assert json.loads(out.read_text())["results"][0]["metrics"]["accuracy"] == pytest.approx(expected)
    assert json.loads(out.read_text())["model"]["sha"] == sha
    assert unasked.fired == 0


# --- item 4: the demo keeps its results ----------------------------------------------------------------------------


def test_demo_keeps_its_results_in_hfsoup_demo_and_refuses_to_overwrite_them_unasked(
    tmp_path, monkeypatch, capsys, hf_home
):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    results = tmp_path / "hfsoup-demo"
    assert f"Results kept in {results}" in out
    assert sorted(p.name for p in results.iterdir()) == ["hfsoup-demo.json", "soup"]
    record = json.loads((results / "hfsoup-demo.json").read_text())
    provenance = json.loads((results / "soup" / "hfsoup.json").read_text())
    assert record["output_dir"] == str(results / "soup")
    assert [i["sha"] for i in record["ingredients"]] == [i["sha"] for i in provenance["ingredients"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home", "hfsoup-demo"]  # no staging folder left
    assert ".hfsoup-tmp-" not in out  # the commentary names where the files are, not where they were made

    assert main(["demo", "--fast"]) == 1
    err = capsys.readouterr().err
    assert "holds the results of an earlier hfsoup demo" in err and "--overwrite" in err
    assert json.loads((results / "hfsoup-demo.json").read_text()) == record

    assert main(["demo", "--fast", "--overwrite"]) == 0
    assert (results / "soup" / "hfsoup.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home", "hfsoup-demo"]


def test_demo_never_replaces_what_it_did_not_write(tmp_path, monkeypatch, capsys, hf_home):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "hfsoup-demo.json").write_text('{"hfsoup_demo": "0"}')
    (fake / "thesis.tex").write_text("keep me too")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    for workdir, words in [
        (mine, "was not written by hfsoup demo"),
        (fake, "was not written by hfsoup demo"),
        (home, "your home folder"),
        (tmp_path, "the current folder"),
        (Path("/"), "a filesystem root"),
    ]:
        assert main(["demo", "--fast", "--overwrite", "--workdir", str(workdir)]) == 1
        assert words in capsys.readouterr().err, workdir
    assert (mine / "notes.txt").read_text() == "keep me" and (fake / "thesis.tex").read_text() == "keep me too"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_failed_demo_leaves_nothing_behind(tmp_path, monkeypatch, hf_home):
    import hfsoup.demo

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hfsoup.demo, "_fast_steps", broken)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        hfsoup.demo.run_demo(fast=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home"]


# --- item 8: -q/-v after the verb, the results table once ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["-q", "soup", "a", "b", "-o", "x"], 0, True),
        (["soup", "a", "b", "-o", "x", "-q"], 0, True),
        (["soup", "-vv", "a", "b", "-o", "x"], 2, False),
        (["-v", "eval", "a", "--task", "sst2"], 1, False),
        (["hub", "serve", "--root", "r", "-v"], 1, False),
        (["check", "a", "b"], 0, False),
    ],
)
def test_verbosity_flags_work_before_and_after_the_verb(argv, verbose, quiet):
    from hfsoup.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_soup_with_v_prints_the_results_table_once(families, reviews_csv, tmp_path, capsys, hf_home):
    folders = [str(f) for f in families["bert"].finetunes[:2]]
    argv = ["soup", *folders, "-o", str(tmp_path / "soup"), "--method", "greedy", "--task", "text-classification"]
    assert main([*argv, "--data-files", f"validation={reviews_csv}", "--no-plot", "-v"]) == 0
    captured = capsys.readouterr()
    assert "INFO" in captured.err  # -v after the verb took effect
    assert (captured.out + captured.err).count("held-out accuracy") == 1
