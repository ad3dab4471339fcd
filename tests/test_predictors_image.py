"""Image classification on scikit-learn's digits served as a dataset repo: CLIP zero-shot and a fine-tuned classifier.

Predictions are checked against plain `transformers` forward passes one image at a time, and accuracy against
scikit-learn on the returned predictions.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score
from transformers import AutoImageProcessor, AutoProcessor, CLIPForImageClassification, CLIPModel

from hfsoup import __version__
from hfsoup.errors import EvaluationError
from hfsoup.evaluation.data import preprocessing_fingerprint
from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
from hfsoup.evaluation.predictors.image import CLIP_TEMPLATES
from hfsoup.evaluation.predictors.registry import predictor_for
from hfsoup.evaluation.tasks import get_task
from hfsoup.testing.digits import DIGIT_NAMES, DIGIT_ROWS, DIGITS_REPO, build_digits, digit_images, publish_digits

N = DIGIT_ROWS["validation"]


@pytest.fixture(scope="module")
def digits_hub(tmp_path_factory, families):
    """The digits as `hfsoup-testing/digits` on a local Hub, and a tiny `CLIPForImageClassification` for them."""
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.digits import tiny_clip_classifier
    from hfsoup.testing.env import use_local_hub

    root = tmp_path_factory.mktemp("digits")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with LocalHubServer(root / "store", anonymous_writes=True) as hub, use_local_hub(hub.url, root / "hf_home"):
        sha = publish_digits(build_digits(root / "data"))
        classifier = tiny_clip_classifier(families["clip"].base, root / "classifier")
        yield {"sha": sha, "classifier": classifier}
    torch.set_num_threads(threads)


def validation_images() -> tuple[list, list[int]]:
    images, labels = digit_images()
    start = DIGIT_ROWS["train"]
    return images[start : start + N], labels[start : start + N]


def test_the_repo_loads_with_datasets_and_names_its_classes(digits_hub):
    import datasets

    loaded = datasets.load_dataset(DIGITS_REPO)
    assert {name: split.num_rows for name, split in loaded.items()} == DIGIT_ROWS
    assert loaded["validation"].features["label"].names == list(DIGIT_NAMES)
    assert loaded["validation"][0]["image"].size == (30, 30)
    task = get_task("image-classification", dataset=DIGITS_REPO)
    assert task.label_names == DIGIT_NAMES and task.image_field == "image" and task.metric == "accuracy"


def test_clip_zero_shot_matches_clip_logits(digits_hub, families, monkeypatch):
    # One template: the prediction is then the argmax of CLIPModel's own logits_per_image.
    monkeypatch.setitem(CLIP_TEMPLATES, "digits", ("a photo of the number {}.",))
    base = families["clip"].base
    assert predictor_for(["CLIPModel"]).name == "clip-zero-shot"
    report = evaluate_model(base, "image-classification", dataset=DIGITS_REPO, batch_size=16)
    assert report.dataset["sha"] == digits_hub["sha"]
    assert report.metric == {
        "name": "accuracy",
        "config": "default",
        "source": "shipped",
        "hfsoup_version": __version__,
    }
    [result] = report.results
    images, labels = validation_images()
    assert set(result.predictions) <= set(range(10)) and len(result.predictions) == N
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(labels, result.predictions))
    model, processor = CLIPModel.from_pretrained(base).eval(), AutoProcessor.from_pretrained(base)
    prompts = [f"a photo of the number {name}." for name in DIGIT_NAMES]
    expected = []
    with torch.no_grad():
        for image in images[:10]:
            inputs = processor(text=prompts, images=image, padding=True, return_tensors="pt")
            expected.append(int(model(**inputs).logits_per_image.argmax()))
    assert result.predictions[:10] == expected


def test_clip_zero_shot_with_several_templates(digits_hub, families):
    result = evaluate_model(families["clip"].finetunes[0], "image-classification", dataset=DIGITS_REPO).results[0]
    _, labels = validation_images()
    assert set(result.predictions) <= set(range(10))
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(labels, result.predictions))


def test_fine_tuned_clip_classifier(digits_hub):
    folder = digits_hub["classifier"]
    report = evaluate_model(folder, "image-classification", dataset=DIGITS_REPO, batch_size=16)
    [result] = report.results
    images, labels = validation_images()
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(labels, result.predictions))
    model, processor = (
        CLIPForImageClassification.from_pretrained(folder).eval(),
        AutoImageProcessor.from_pretrained(folder),
    )
    with torch.no_grad():
        expected = [int(model(**processor(images=image, return_tensors="pt")).logits.argmax()) for image in images]
    assert result.predictions == expected


def test_evaluator_encodes_once_per_processor(digits_hub, families):
    evaluator = Evaluator("image-classification", dataset=DIGITS_REPO, limit=8)
    for folder in families["clip"].finetunes[:2]:
        evaluator.score(folder)
    assert len(evaluator._batches) == 1
    processor = AutoProcessor.from_pretrained(families["clip"].base)
    image_processor = processor.image_processor
    assert preprocessing_fingerprint(processor) != preprocessing_fingerprint(image_processor)
    other = AutoImageProcessor.from_pretrained(families["clip"].base, crop_size={"height": 20, "width": 20})
    assert preprocessing_fingerprint(other) != preprocessing_fingerprint(image_processor)


def test_image_task_errors():
    from hfsoup.evaluation.predictors.registry import PREDICTORS
    from hfsoup.evaluation.tasks import TASKS

    with pytest.raises(EvaluationError, match="needs the dataset"):
        get_task("image-classification")
    with pytest.raises(EvaluationError, match="not such a task"):
        PREDICTORS["clip-zero-shot"].prepare(None, TASKS["sst2"], model_name="m")
    with pytest.raises(EvaluationError, match="has no images"):
        PREDICTORS["image-classification"].encode({}, task=TASKS["sst2"], tokenizer=None, max_length=8)


def test_cli_eval_an_image_task(digits_hub, families, tmp_path, capsys):
    import json

    from hfsoup.cli import main

    out = tmp_path / "scores.json"
    args = ["eval", str(families["clip"].base), "--task", "image-classification", "--dataset", DIGITS_REPO]
    assert main([*args, "--kind", "clip-zero-shot", "--limit", "10", "--json", str(out)]) == 0
    assert "image-classification on" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["dataset"]["sha"] == digits_hub["sha"] and data["results"][0]["num_examples"] == 10
    assert main([*args[:2], "--task", "image-classification"]) == 1
    assert "--dataset" in capsys.readouterr().err
