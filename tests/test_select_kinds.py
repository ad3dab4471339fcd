"""The selection scorer scores every kind of model `hfsoup eval` knows, with any weights swapped in.

One loaded model scores every ingredient and trial soup (`torch.func.functional_call`), so for each kind (a BERT
sequence classifier, a decoder-only GPT-2 classifier without a pad token, T5 as text-to-text, CLIP zero-shot, a
`CLIPForImageClassification`, a ViT) the scores of B's weights in A's model must be those of B loaded on its own,
and its predictions those of `hfsoup eval` (the evaluator path, checked against plain transformers in the predictor
tests). CLIP zero-shot re-embeds the class prompts with each candidate's text tower; the learned soup's objective is
the cross-entropy of the same scores, and its gradient reaches every tower; the output ensemble averages
log-probabilities over the label set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

from hfsoup.errors import InvalidSoupArgumentsError
from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
from hfsoup.evaluation.placement import load_model, load_tokenizer
from hfsoup.evaluation.predictors.registry import predictor_for
from hfsoup.selection.options import Selection
from hfsoup.selection.scorers import AccuracyScorer, ModelScorer, make_scorer
from hfsoup.testing.digits import build_digits, tiny_clip_classifier
from hfsoup.testing.tiny_models import LABELS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An sst2-shaped CSV (24 rows) and a digits image folder (30 validation rows), local: no Hub needed."""
    root = tmp_path_factory.mktemp("kinds-data")
    csv = root / "dev.csv"
    words = ["good", "bad", "great", "awful", "dull", "lovely"]
    rows = [f"the film was {words[i % 6]} and {words[(i * 5) % 6]},{i % 2}" for i in range(24)]
    csv.write_text("sentence,label\n" + "\n".join(rows) + "\n")
    digits = build_digits(root / "digits", rows={"train": 10, "validation": 30})
    return {"csv": csv, "digits": digits}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, families) -> list[Path]:
    """Two tiny GPT-2 sequence classifiers (one seed apart) whose tokenizer has no pad token, as GPT-2's has not."""
    root = tmp_path_factory.mktemp("gpt2")
    tokenizer = AutoTokenizer.from_pretrained(families["t5"].base)
    tokenizer.pad_token = None
    folders = []
    for seed in (0, 1):
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=2,
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        )
        config.architectures = ["GPT2ForSequenceClassification"]
        torch.manual_seed(seed)
        model = GPT2ForSequenceClassification(config)
        folder = root / f"gpt2-{seed}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def clip_classifiers(tmp_path_factory, families) -> list[Path]:
    root = tmp_path_factory.mktemp("clip-cls")
    clip = families["clip"].folders()
    return [tiny_clip_classifier(clip[name], root / name, seed=i) for i, name in enumerate(("ft0", "ft1"))]


@pytest.fixture(scope="module")
def vits(tmp_path_factory) -> list[Path]:
    """Two tiny `ViTForImageClassification`s (one seed apart) for the digits, with a Pillow image processor."""
    from transformers import ViTConfig, ViTForImageClassification

    try:
        from transformers import ViTImageProcessorPil as Processor
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import ViTImageProcessor as Processor
    from hfsoup.testing.digits import DIGIT_NAMES
    from hfsoup.testing.tiny_models import CLIP_IMAGE_SIZE

    root = tmp_path_factory.mktemp("vit")
    folders = []
    for seed in (0, 1):
        config = ViTConfig(
            image_size=CLIP_IMAGE_SIZE,
            patch_size=15,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            id2label=dict(enumerate(DIGIT_NAMES)),
            label2id={name: i for i, name in enumerate(DIGIT_NAMES)},
        )
        config.architectures = ["ViTForImageClassification"]
        torch.manual_seed(seed)
        folder = root / f"vit-{seed}"
        ViTForImageClassification(config).save_pretrained(folder)
        size = {"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
        Processor(size=size).save_pretrained(folder)
        folders.append(folder)
    return folders


def _pair(kind: str, families, gpt2, clip_classifiers, vits) -> tuple[Path, Path]:
    if kind == "gpt2":
        return gpt2[0], gpt2[1]
    if kind == "clip-classifier":
        return clip_classifiers[0], clip_classifiers[1]
    if kind == "vit":
        return vits[0], vits[1]
    folders = families[kind].folders()
    return folders["ft0"], folders["ft1"]


def _images(kind: str) -> bool:
    return kind.startswith("clip") or kind == "vit"


def _evaluator(kind: str, data) -> Evaluator:
    if _images(kind):
        return Evaluator("image-classification", dataset=str(data["digits"]), batch_size=8)
    return Evaluator("sst2", data_files={"validation": [str(data["csv"])]}, batch_size=5)


def _scorer(folder: Path, evaluator: Evaluator) -> ModelScorer:
    model, _ = load_model(str(folder), kind=None, token=None)
    predictor = predictor_for(model.config.architectures)
    tokenizer = load_tokenizer(str(folder), token=None, loader=predictor.load_tokenizer)
    return make_scorer(evaluator, model, tokenizer, model_name=folder.name)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}


KINDS = {
    "bert": "sequence-classification",
    "gpt2": "sequence-classification",
    "t5": "t5-text",
    "clip": "clip-zero-shot",
    "clip-classifier": "image-classification",
    "vit": "image-classification",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_weights_swapped_in_score_as_the_model_loaded_alone(kind, families, gpt2, clip_classifiers, vits, data):
    a, b = _pair(kind, families, gpt2, clip_classifiers, vits)
    evaluator = _evaluator(kind, data)
    scorer_a, scorer_b = _scorer(a, evaluator), _scorer(b, evaluator)
    assert scorer_a.predictor.name == KINDS[kind]
    assert isinstance(scorer_a, AccuracyScorer)  # sst2 and digits rank by accuracy
    state_b = _state(b)
    swapped, alone = scorer_a.scores(state_b), scorer_b.scores(state_b)
    assert swapped.shape == (scorer_a.num_examples, len(scorer_a.answers))
    torch.testing.assert_close(swapped, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(scorer_a.scores(_state(a)), swapped)  # the weights were swapped in, not A's own
    # The predictions are those of `hfsoup eval` on B, and the metrics are computed from them.
    report = evaluate_model(
        str(b),
        evaluator.task,
        dataset=str(data["digits"]) if _images(kind) else None,
        data_files=None if _images(kind) else {"validation": [str(data["csv"])]},
        batch_size=3,
    )
    assert scorer_a.predictions(swapped) == report.results[0].predictions
    assert scorer_a.metrics(swapped) == pytest.approx(report.results[0].metrics)
    # The batch-by-batch count that greedy's early stopping reads adds up to the same accuracy.
    sums = list(scorer_a.partial_sums(state_b))
    assert sum(n for _, n in sums) == scorer_a.num_examples
    assert sum(s for s, _ in sums) / scorer_a.num_examples == pytest.approx(scorer_a.primary_of(swapped))


def test_clip_zero_shot_reembeds_the_class_prompts_with_each_candidates_text_tower(families, data):
    clip = families["clip"].folders()
    evaluator = _evaluator("clip", data)
    scorer = _scorer(clip["ft0"], evaluator)
    own, other = _state(clip["ft0"]), _state(clip["ft1"])
    # ft0's vision tower with ft1's text tower: only the class embeddings can change the scores.
    text_swapped = {k: (other[k] if k.startswith(("text_model.", "text_projection")) else v) for k, v in own.items()}
    changed = scorer.scores(text_swapped)
    assert not torch.allclose(changed, scorer.scores(own))
    # ...and they are CLIP's own logits for that model: logit scale times cosine similarity.
    from transformers import AutoProcessor, CLIPModel

    from hfsoup.evaluation.predictors.image import CLIP_TEMPLATES, class_name

    model = CLIPModel.from_pretrained(clip["ft0"]).eval()
    model.load_state_dict(text_swapped, strict=False)
    processor = AutoProcessor.from_pretrained(clip["ft0"])
    templates = CLIP_TEMPLATES["digits"]
    with torch.no_grad():
        per_class = []
        for label in evaluator.task.label_names:
            text = processor.tokenizer(
                [t.format(class_name(label)) for t in templates], padding=True, return_tensors="pt"
            )
            features = model.text_projection(model.text_model(**text).pooler_output)
            embedding = torch.nn.functional.normalize(features, dim=-1).mean(dim=0)
            per_class.append(torch.nn.functional.normalize(embedding, dim=-1))
        batch = scorer._batches[0]
        images = model.visual_projection(model.vision_model(pixel_values=batch.inputs["pixel_values"]).pooler_output)
        expected = model.logit_scale.exp() * torch.nn.functional.normalize(images, dim=-1) @ torch.stack(per_class).T
    torch.testing.assert_close(changed[list(batch.positions)], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_the_learned_objective_is_the_cross_entropy_of_the_scores_and_reaches_every_tower(kind, families, data):
    folders = families[kind].folders()
    evaluator = _evaluator(kind, data)
    scorer = _scorer(folders["ft0"], evaluator)
    state = {k: v.requires_grad_(True) for k, v in _state(folders["ft1"]).items()}
    total = sum(scorer.loss(state, batch) for batch in scorer.batches())
    expected = torch.nn.functional.cross_entropy(
        scorer.scores(_state(folders["ft1"])), scorer.targets, reduction="sum"
    )
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert scorer.mean_loss(scorer.scores(_state(folders["ft1"]))) == pytest.approx(
        float(expected) / scorer.num_examples
    )
    total.backward()
    towers = ("text_model.", "vision_model.") if kind == "clip" else ("encoder.", "decoder.")
    for tower in towers:
        grads = [t.grad for name, t in state.items() if name.startswith(tower) and t.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), tower


def test_the_ensemble_averages_log_probabilities(families, data):
    folders = families["t5"].folders()
    scorer = _scorer(folders["ft0"], _evaluator("t5", data))
    scores = [scorer.scores(_state(folders[name])) for name in ("ft0", "ft1", "ft2")]
    expected = sum(torch.log_softmax(s, dim=-1) for s in scores) / 3
    torch.testing.assert_close(scorer.ensemble(scores), expected)
    # T5's scores are log-likelihoods of whole label words, not normalized over the labels: the ensemble is.
    assert torch.allclose(scorer.ensemble(scores).exp().sum(dim=-1), torch.ones(scorer.num_examples))


def test_t5_stsb_targets_are_the_nearest_answer(families, tmp_path):
    from hfsoup.evaluation.predictors.t5 import STSB_ANSWERS

    csv = tmp_path / "stsb.csv"
    scores = [0.0, 0.09, 0.11, 2.45, 4.93, 5.0]
    csv.write_text("sentence1,sentence2,label\n" + "".join(f"a {i},b {i},{s}\n" for i, s in enumerate(scores)))
    evaluator = Evaluator("stsb", data_files={"validation": [str(csv)]})
    scorer = _scorer(families["t5"].folders()["ft0"], evaluator)
    assert not isinstance(scorer, AccuracyScorer)  # stsb ranks by pearson
    assert [STSB_ANSWERS[i] for i in scorer.targets.tolist()] == ["0.0", "0.0", "0.2", "2.4", "5.0", "5.0"]
    predictions = scorer.predictions(scorer.scores(_state(families["t5"].folders()["ft0"])))
    assert all(p in [float(a) for a in STSB_ANSWERS] for p in predictions)


def test_kind_is_one_option_for_soup_eval_and_recipes():
    with pytest.raises(InvalidSoupArgumentsError, match="expected a model kind"):
        Selection(task="sst2", kind="t5").check_fields()
    Selection(task="sst2", kind="t5-text").check_fields()
    from hfsoup.cli import build_parser

    parser = build_parser()
    for verb in (["soup", "-o", "out"], ["eval"]):
        args = parser.parse_args([*verb, "m", "--task", "sst2", "--kind", "clip-zero-shot"])
        assert getattr(args, "selection.kind") == "clip-zero-shot"


def test_a_recipe_names_the_kind_and_is_checked(tmp_path, capsys):
    from hfsoup.cli import main

    recipe = tmp_path / "recipe.yaml"
    body = "ingredients: [a, b]\nmethod: greedy\noutput: {dir: soup}\nevaluation: {task: sst2, kind: %s}\n"
    recipe.write_text(body % "t5")
    assert main(["validate", str(recipe)]) == 1
    assert "evaluation.kind: expected a model kind (sequence-classification, t5-text" in capsys.readouterr().err
    recipe.write_text(body % "t5-text")
    assert main(["validate", str(recipe)]) == 0
