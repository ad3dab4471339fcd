"""The paper's recipes for T5 and CLIP: greedy and learned soups of really trained tiny families, on the local Hub.

Each family (`hfsoup.testing.trained`) has four good fine-tunes of one start and one fine-tuned on swapped labels.
A T5 text-to-text greedy soup (`--task sst2` on a learnable sst2) and a `CLIPForImageClassification` greedy soup
(`--task image-classification` on digits), selected with `--held-out 'validation[:50%]' --report 'validation[50%:]'`,
must leave the swapped one out and keep exactly what an independent transcription of the paper's greedy soup keeps:
written here with its own scoring (plain `transformers`, one example at a time, weights averaged with `torch`), not
hfsoup's. A CLIP zero-shot greedy soup runs end to end, and learned soups never end above the uniform soup's
held-out loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hfsoup.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SPLITS = ["--held-out", "validation[:50%]", "--report", "validation[50%:]"]


def read_json(path: Path):
    return json.loads(path.read_text())


# ---- an independent transcription of the paper's greedy soup, with its own scoring ----


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {}
    for name, first in states[0].items():
        if torch.is_floating_point(first):
            out[name] = sum(s[name].double() for s in states) / len(states)
        else:
            out[name] = first
    return {k: v.float() if torch.is_floating_point(v) else v for k, v in out.items()}


def _held_out(folder: Path, split: str = "validation") -> list[dict]:
    """The first half of the split's rows, read from the dataset folder's parquet (`validation[:50%]`)."""
    import datasets

    [path] = sorted(folder.rglob(f"{split}-*.parquet"))
    rows = datasets.Dataset.from_parquet(str(path))
    return [rows[i] for i in range(len(rows) // 2)]


def _t5_accuracy(model_dir: Path, state: dict, rows: list[dict]) -> float:
    """Each answer's log-likelihood from transformers' own loss, example by example: the best one is the guess."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answers = [tokenizer(word, return_tensors="pt").input_ids for word in ("negative", "positive")]
    correct = 0
    with torch.no_grad():
        for row in rows:
            inputs = tokenizer(f"sst2 sentence: {row['sentence']}", return_tensors="pt")
            likelihoods = [-model(**inputs, labels=a).loss.item() * a.shape[1] for a in answers]
            correct += int(max(range(2), key=lambda i: likelihoods[i]) == row["label"])
    return correct / len(rows)


def _clip_accuracy(model_dir: Path, state: dict, rows: list[dict]) -> float:
    from transformers import AutoImageProcessor, CLIPForImageClassification

    model = CLIPForImageClassification.from_pretrained(model_dir).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    processor = AutoImageProcessor.from_pretrained(model_dir)
    correct = 0
    with torch.no_grad():
        for row in rows:
            pixels = processor(images=row["image"].convert("RGB"), return_tensors="pt").pixel_values
            predicted = model.config.id2label[int(model(pixel_values=pixels).logits.argmax())]
            correct += int(predicted == model.config.id2label[row["label"]])
    return correct / len(rows)


def paper_greedy(folders: list[Path], accuracy) -> tuple[list[int], list[float]]:
    """Recipe 1 of Wortsman et al. (2022): sort by held-out score, add each if the soup's score does not drop."""
    states = [_state(f) for f in folders]
    scores = [accuracy(folders[0], s) for s in states]
    order = sorted(range(len(folders)), key=lambda i: -scores[i])  # stable: ties keep the given order
    kept, best = [order[0]], scores[order[0]]
    for i in order[1:]:
        trial = accuracy(folders[0], _average([states[j] for j in [*kept, i]]))
        if trial >= best:
            kept, best = [*kept, i], trial
    return kept, scores


# ---- the soups ----


def _soup(ids: list[str], out: Path, *task: str, method: str = "greedy", extra: tuple[str, ...] = ()) -> dict:
    args = ["-q", "soup", *ids, "-o", str(out), "--method", method, *task, *SPLITS, "--batch-size", "16", *extra]
    assert main(args) == 0
    return read_json(out / "hfsoup.json")


def _families(trained_hub, family: str) -> tuple[list[str], list[Path]]:
    # The swapped one among the good, not last: the search must find it, not its position.
    ids = trained_hub.good(family)
    ids = [*ids[:2], trained_hub.swapped(family), *ids[2:]]
    return ids, [trained_hub.folders[i] for i in ids]


CASES = {
    "t5": ("t5-sst2", lambda hub: ["--task", "sst2", "--dataset", hub.sentiment_dataset], _t5_accuracy, "sentiment"),
    "clip": (
        "clip-digits",
        lambda hub: ["--task", "image-classification", "--dataset", hub.digits_dataset],
        _clip_accuracy,
        "digits",
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_greedy_soup_keeps_what_the_paper_keeps_and_leaves_out_the_swapped_one(kind, trained, trained_hub, tmp_path):
    family, task, accuracy, data = CASES[kind]
    ids, folders = _families(trained_hub, family)
    provenance = _soup(ids, tmp_path / "soup", *task(trained_hub), "--compare", "ensemble", "--no-plot")
    rows = _held_out(getattr(trained, data))
    kept, scores = paper_greedy(folders, lambda model_dir, state: accuracy(model_dir, state, rows))

    names = [i["spec"] for i in provenance["ingredients"]]
    swapped = ids.index(trained_hub.swapped(family))
    excluded = {e["ingredient"] for e in provenance.get("excluded", [])}
    greedy = provenance["greedy"]
    assert names[swapped] not in greedy["kept"]
    assert {names[i] for i in kept} == set(greedy["kept"])  # exactly what the transcription keeps
    assert provenance["weights"][swapped] == 0.0
    # Every ingredient not left out before the search was tried, the swapped one among them or excluded.
    assert len(greedy["decisions"]) == len(ids) - 1 - len(excluded)
    # The table's held-out scores of the scored ingredients are the transcription's (up to a near tie's flip).
    results = read_json(tmp_path / "soup" / "results.json")
    alone = {r["name"]: r["held_out"] for r in results["rows"] if r["kind"] == "ingredient" and r["held_out"]}
    for i, name in enumerate(names):
        if name in excluded:
            continue
        assert alone[name]["accuracy"] == pytest.approx(scores[i], abs=1.5 / len(rows))
    # Selected on the first half, reported on the second: nothing shared.
    evaluation = provenance["evaluation"]
    assert evaluation["held_out"]["split"] == "validation[:50%]"
    assert evaluation["report"]["split"] == "validation[50%:]"
    assert "shared_rows" not in evaluation


def test_clip_zero_shot_greedy_soup_runs_end_to_end(trained_hub, tmp_path):
    ids = trained_hub.good("clip-zs")
    task = ["--task", "image-classification", "--dataset", trained_hub.digits_dataset]
    provenance = _soup(ids, tmp_path / "soup", *task, "--compare", "uniform,ensemble", "--no-plot")
    greedy = provenance["greedy"]
    assert set(greedy["kept"]) <= {i["spec"] for i in provenance["ingredients"]} and greedy["kept"]
    results = read_json(tmp_path / "soup" / "results.json")
    kinds = [r["kind"] for r in results["rows"]]
    assert kinds.count("ingredient") == len(ids) and "ensemble" in kinds
    assert all(0 <= r["report"]["accuracy"] <= 1 for r in results["rows"])
    # The zero-shot scores vary between the fine-tunes: each was scored with its own text tower's class embeddings.
    assert len({r["held_out"]["accuracy"] for r in results["rows"] if r["kind"] == "ingredient"}) > 1


@pytest.mark.parametrize("family", ["t5-sst2", "clip-digits"])
def test_learned_soup_improves_or_matches_the_uniform_held_out_loss(family, trained_hub, tmp_path):
    task = CASES["t5" if family.startswith("t5") else "clip"][1](trained_hub)
    extra = ("--compare", "uniform", "--no-plot", "--learned-steps", "8", "--learned-lr", "0.2")
    provenance = _soup(trained_hub.good(family), tmp_path / "soup", *task, method="learned", extra=extra)
    learned = provenance["learned"]
    uniform = provenance["baselines"]["uniform"]
    assert learned["uniform_loss"] == pytest.approx(uniform["held_out_loss"], rel=1e-4)
    assert learned["held_out_loss"] <= uniform["held_out_loss"] + 1e-6
    assert learned["loss"] == pytest.approx(learned["held_out_loss"], rel=1e-4)
    assert abs(sum(provenance["weights"]) - 1) < 1e-6
