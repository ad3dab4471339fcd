"""The trained tiny fixtures (`hfsoup.testing.trained`) are what greedy and learned soups need: they learned.

Through the local Hub, as a soup's selection would read them: every good fine-tune scores clearly above chance and
each differently on the held-out half, the one trained on swapped labels clearly below; the good ones of each family
pass `hfsoup check`; a uniform soup of the good ones is near the best of them, and adding the swapped one hurts it,
so the paper's greedy soup (transcribed here) never keeps it. The datasets load as the real ones do, and a build is
byte-identical for a seed and leaves the caller's random state alone.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from hfsoup.cli import main
from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
from hfsoup.evaluation.tasks import TASKS
from hfsoup.testing.digits import DIGIT_NAMES
from hfsoup.testing.glue import glue_features
from hfsoup.testing.sentiment import SENTIMENT_ROWS
from hfsoup.testing.trained import DIGITS_ROWS, RECIPES, Recipe, Run, build_trained_family

pytestmark = pytest.mark.usefixtures("one_thread")

HELD_OUT, REPORT = "validation[:50%]", "validation[50%:]"
# family -> (task, dataset attribute of TrainedHub, chance, a good one scores at least, the swapped one at most)
FAMILIES = {
    "t5-sst2": ("sst2", "sentiment_dataset", 0.5, 0.6, 0.4),
    "clip-digits": ("image-classification", "digits_dataset", 0.1, 0.5, 0.05),
    "clip-zs": ("image-classification", "digits_dataset", 0.1, 0.3, None),
}


@pytest.fixture(scope="module")
def evaluators(trained_hub):
    """One evaluator per (family, split): each dataset is loaded and encoded once for the module."""
    out = {}
    for family, (task, dataset, *_) in FAMILIES.items():
        for split in ("validation", HELD_OUT):
            out[family, split] = Evaluator(task, split, dataset=getattr(trained_hub, dataset), batch_size=50)
    return out


@pytest.fixture(scope="module")
def scores(trained_hub, evaluators):
    """Every member's accuracy on the whole validation split and on the held-out half, read from the Hub."""
    out = {}
    for family in FAMILIES:
        for member, repo_id in trained_hub.ids[family].items():
            out[family, member] = {
                s: evaluators[family, s].score(repo_id)["accuracy"] for s in ("validation", HELD_OUT)
            }
    return out


def test_the_learnable_sst2_is_shaped_like_glue(trained_hub):
    import datasets

    loaded = datasets.load_dataset(trained_hub.sentiment_dataset, "sst2")
    assert {name: split.num_rows for name, split in loaded.items()} == SENTIMENT_ROWS
    assert loaded["validation"].features == glue_features(TASKS["sst2"])
    assert set(loaded["test"]["label"]) == {-1}
    labels = loaded["validation"]["label"]
    assert 0.4 < sum(labels) / len(labels) < 0.6  # balanced before the noise
    digits = datasets.load_dataset(trained_hub.digits_dataset)
    assert {name: split.num_rows for name, split in digits.items()} == DIGITS_ROWS
    assert digits["validation"].features["label"].names == list(DIGIT_NAMES)


@pytest.mark.parametrize("family", FAMILIES)
def test_good_ones_learned_and_the_swapped_one_learned_the_opposite(family, trained_hub, scores):
    _, _, chance, good_at_least, swapped_at_most = FAMILIES[family]
    good = [m for m in trained_hub.ids[family] if m.startswith("ft")]
    assert len(good) == len(RECIPES[family].finetunes)
    for member in good:
        assert scores[family, member]["validation"] >= good_at_least > chance, member
    # Distinct held-out accuracies: the greedy soup's order (best first) has no ties to break.
    held_out = [scores[family, m][HELD_OUT] for m in good]
    assert len(set(held_out)) == len(held_out), held_out
    if swapped_at_most is not None:
        assert scores[family, "swapped"]["validation"] <= swapped_at_most < chance


def test_evaluate_model_reads_them_from_the_hub(trained_hub, scores):
    # The path a user takes (one call, a Hub ID), against the module's shared evaluators.
    repo_id = trained_hub.good("t5-sst2")[0]
    report = evaluate_model(repo_id, "sst2", dataset=trained_hub.sentiment_dataset)
    assert report.model["spec"] == repo_id and report.dataset["id"] == trained_hub.sentiment_dataset
    assert report.metrics()["accuracy"] == scores["t5-sst2", "ft0"]["validation"]


def test_zero_shot_members_predict_differently(trained_hub, evaluators):
    predictions = [
        tuple(evaluators["clip-zs", "validation"].evaluate(repo_id).results[0].predictions)
        for repo_id in trained_hub.good("clip-zs")
    ]
    assert len(set(predictions)) == len(predictions)
    assert all(len(set(p)) >= 5 for p in predictions)  # not one class for every image


@pytest.mark.parametrize("family", FAMILIES)
def test_hfsoup_check_passes_on_the_good_ones(family, trained_hub, capsys):
    start = trained_hub.ids[family]["start"]
    assert main(["check", *trained_hub.good(family), "--base", start]) == 0
    assert "Shared initialization" in capsys.readouterr().out


def _soup_score(evaluator: Evaluator, folders: list, template) -> float:
    """Held-out accuracy of the uniform average of `folders`' weights, loaded into a copy of `template`."""
    from safetensors.torch import load_file

    states = [load_file(f / "model.safetensors") for f in folders]
    model = copy.deepcopy(template)
    model.load_state_dict({k: sum(s[k] for s in states) / len(states) for k in states[0]}, strict=False)
    return evaluator.score(model, tokenizer=str(folders[0]))["accuracy"]


def _paper_greedy(evaluator: Evaluator, folders: dict, held_out: dict, template) -> list[str]:
    """Wortsman et al. 2022, Recipe 1: sort by held-out accuracy, best first; add each one if the soup does not get
    worse on the held-out split."""
    order = sorted(folders, key=lambda name: held_out[name], reverse=True)
    kept, best = [order[0]], held_out[order[0]]
    for name in order[1:]:
        score = _soup_score(evaluator, [folders[n] for n in [*kept, name]], template)
        if score >= best:
            kept, best = [*kept, name], score
    return kept


@pytest.mark.parametrize("family", ["t5-sst2", "clip-digits"])
def test_a_greedy_soup_leaves_the_swapped_one_out(family, trained_hub, evaluators, scores):
    from transformers import AutoModelForImageClassification, AutoModelForSeq2SeqLM

    ids = trained_hub.ids[family]
    folders = {m: trained_hub.folders[repo_id] for m, repo_id in ids.items() if m != "start"}
    good = [m for m in folders if m != "swapped"]
    loader = {"t5-sst2": AutoModelForSeq2SeqLM, "clip-digits": AutoModelForImageClassification}[family]
    template = loader.from_pretrained(folders["ft0"]).eval()
    evaluator = evaluators[family, HELD_OUT]
    held_out = {m: scores[family, m][HELD_OUT] for m in folders}

    uniform = _soup_score(evaluator, [folders[m] for m in good], template)
    assert uniform >= max(held_out[m] for m in good) - 0.1  # the good ones share a basin
    with_swapped = _soup_score(evaluator, list(folders.values()), template)
    assert with_swapped < uniform
    kept = _paper_greedy(evaluator, folders, held_out, template)
    assert "swapped" not in kept and kept[0] == max(good, key=held_out.get)


def _digest(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_a_build_is_byte_identical_and_leaves_the_caller_alone(trained, tmp_path, monkeypatch):
    # The CLIP classifier again, whole; and T5 and zero-shot CLIP with a few steps (their full runs take seconds).
    short = Recipe(
        Run("start", 3, 3e-3), (Run("ft0", 2, 2e-3), Run("ft1", 2, 1e-3)), Run("swapped", 2, 3e-3, "swapped")
    )
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    again = build_trained_family("clip-digits", tmp_path / "clip-digits")
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    built = trained.families["clip-digits"].folders()
    assert {m: _digest(f) for m, f in again.folders().items()} == {m: _digest(f) for m, f in built.items()}

    monkeypatch.setitem(RECIPES, "t5-sst2", short)
    monkeypatch.setitem(RECIPES, "clip-zs", short)
    for family in ("t5-sst2", "clip-zs"):
        first = build_trained_family(family, tmp_path / "a" / family)
        second = build_trained_family(family, tmp_path / "b" / family)
        digests = {m: _digest(f) for m, f in first.folders().items()}
        assert digests == {m: _digest(f) for m, f in second.folders().items()}
        assert len(set(digests.values())) == len(digests)  # every run moved the weights its own way
    other_seed = build_trained_family("t5-sst2", tmp_path / "c", seed=1)
    assert _digest(other_seed.start) != _digest(tmp_path / "a" / "t5-sst2" / "start")
