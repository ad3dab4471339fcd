"""Issue 6 on real weights (slow, opt-in): greedy, learned and uniform soups of all-MiniLM-L6-v2 fine-tunes, selected
on half of the real drug reviews' test split and reported on the other half.

    HFSOUP_SLOW=1 python -m pytest tests/test_soup_select_minilm.py -q -s    # -s prints the table and the timings
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from hfsoup.soups import GreedySoup
from hfsoup.testing.minilm import LABEL_NAMES, drug_reviews
from tests.test_minilm import opt_in, slow_opted_in  # noqa: F401 - the skipif condition reads slow_opted_in

MAX_LENGTH = 64  # what the family was trained on (its tokenizer keeps the reviews' ends, where their verdicts are)
LEARNED_STEPS = 3  # each is a forward and backward pass over the held-out half: the slow part


@pytest.fixture(scope="module")
def threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An empty local Hub: the metric lookup goes there (and falls back to hfsoup's own module), not outside."""
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    root = tmp_path_factory.mktemp("hub")
    with LocalHubServer(root / "store", anonymous_writes=True) as server, use_local_hub(server.url, root / "hf_home"):
        yield server


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "test.jsonl"
    rows = drug_reviews().test
    path.write_text("".join(json.dumps({"text": r["text"], "label": LABEL_NAMES[r["label"]]}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def souped(minilm_family, reviews_file, tmp_path_factory, threads, hub):
    """One greedy soup of the 4 fine-tunes, with every baseline (the learned one by layer) in its table."""
    import hfsoup
    from hfsoup.soups import LearnedSoup

    learned = LearnedSoup(by_layer=True, steps=LEARNED_STEPS, lr=0.1)  # a baseline with its own options
    selection = hfsoup.Selection(
        task="text-classification",
        report="test",
        data_files={"test": [str(reviews_file)]},
        max_length=MAX_LENGTH,
        compare=["uniform", learned, "ensemble"],
    )
    out = tmp_path_factory.mktemp("soups") / "greedy"
    started = time.perf_counter()
    result = hfsoup.soup(minilm_family.finetunes, out, method="greedy", selection=selection)
    seconds = time.perf_counter() - started
    print(f"\n{result.results.format_table()}\n(greedy soup with every baseline: {seconds:.0f} s)")
    print(json.dumps({k: v for k, v in result.records["greedy"].items() if k != "decisions"}))
    for decision in result.records["greedy"]["decisions"]:
        print(decision)
    learned = result.records["learned"]
    print(f"learned by layer: held-out loss {learned['loss']:.5f}, uniform {learned['uniform_loss']:.5f}")
    return result


@pytest.mark.slow
@opt_in
def test_greedy_soup_is_at_least_the_best_individual_on_held_out(souped):
    table = souped.results
    best = table.best_individual()
    greedy = table.row("greedy soup")
    assert greedy.held_out["accuracy"] >= best.held_out["accuracy"]
    assert table.held_out == "seeded 50% of test (seed 0, 190 rows)"
    assert table.report == "the other 50% of test (189 rows)"
    names = [r.name for r in table.rows]
    assert names[4:] == ["uniform soup", "greedy soup", "learned soup", "ensemble"]
    for row in table.rows:  # every figure on both parts
        assert 0 < row.held_out["accuracy"] <= 1 and 0 < row.report["accuracy"] <= 1, row.name
    provenance = json.loads(souped.provenance_path.read_text())
    assert provenance["evaluation"]["report"]["metrics"] == greedy.report
    assert provenance["evaluation"]["held_out"]["description"] == table.held_out
    kept = provenance["greedy"]["kept"]
    assert [r.kept for r in table.rows[:4]] == [r.name in kept for r in table.rows[:4]] and kept


@pytest.mark.slow
@opt_in
def test_learned_soup_matches_or_beats_the_uniform_held_out_loss(souped):
    learned, uniform = souped.records["learned"], souped.records["uniform"]
    assert learned["by_layer"] and learned["loss"] <= learned["uniform_loss"] + 1e-6
    # The uniform soup's loss, measured apart from the fit, is the fit's starting point.
    assert learned["uniform_loss"] == pytest.approx(uniform["held_out_loss"], rel=1e-4)
    assert learned["held_out_loss"] == pytest.approx(learned["loss"], rel=1e-4)
    for weights in learned["per_tensor"].values():
        assert sum(weights) == pytest.approx(1.0, abs=1e-9)
    assert len(learned["per_tensor"]) > 100  # one set per tensor of the BERT encoder and head


@pytest.mark.slow
@opt_in
def test_early_stopping_makes_the_same_decisions_for_less_evaluation(minilm_family, reviews_file, threads, hub):
    """The saving, measured: the same search with and without early stopping, on the real held-out half."""
    from hfsoup.evaluation.evaluator import Evaluator
    from hfsoup.evaluation.placement import load_model, load_tokenizer
    from hfsoup.evaluation.tasks import text_classification_task
    from hfsoup.io.checkpoint import CheckpointReader
    from hfsoup.selection.heldout import carve
    from hfsoup.selection.scorers import AccuracyScorer, make_scorer
    from hfsoup.selection.stage import state_loader

    task = text_classification_task(list(LABEL_NAMES))
    evaluator = Evaluator(task, "test", data_files={"test": [str(reviews_file)]}, max_length=MAX_LENGTH)
    held, _ = carve({"test": len(evaluator.splits[0].references)}, held_out=None, report="test")
    evaluator.restrict(held.positions)
    first = str(minilm_family.finetunes[0])
    model, _ = load_model(first, kind=None, token=None)
    scorer = make_scorer(evaluator, model, load_tokenizer(first, token=None))
    assert isinstance(scorer, AccuracyScorer)
    # The 4 fine-tunes and the impostor (same architecture, its own initialization): averaging it in ruins the soup,
    # the kind of candidate early stopping refuses after a part of the held-out examples.
    folders = [*minilm_family.finetunes, minilm_family.troublemakers["impostor"]]
    readers = [CheckpointReader(f) for f in folders]
    names = sorted(readers[0].structure)
    loaders = [state_loader(r, names, None, []) for r in readers]
    scores = [scorer(load()) for load in loaders]
    runs = {}
    for early in (True, False):
        started = time.perf_counter()
        found = GreedySoup(early_stop=early).search(loaders, scorer, scores=scores)
        runs[early] = (found, time.perf_counter() - started)
    (fast, fast_s), (full, full_s) = runs[True], runs[False]
    print(
        f"\nearly stop: {fast.examples_scored} of {fast.examples_full} candidate examples scored "
        f"({1 - fast.examples_scored / fast.examples_full:.0%} saved), {fast_s:.1f} s against {full_s:.1f} s"
    )
    assert fast.kept == full.kept and fast.score == full.score
    assert [(d.name, d.kept) for d in fast.decisions] == [(d.name, d.kept) for d in full.decisions]
    assert full.examples_scored == full.examples_full
    assert fast.examples_scored < full.examples_scored
    assert 4 not in fast.kept  # the impostor
