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

MAX_LENGTH = 128  # the reviews' verdicts are at their end; the family's tokenizer truncates on the left
LEARNED_STEPS = 6


@pytest.fixture(scope="module")
def threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "test.jsonl"
    rows = drug_reviews().test
    path.write_text("".join(json.dumps({"text": r["text"], "label": LABEL_NAMES[r["label"]]}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def souped(minilm_family, reviews_file, tmp_path_factory, threads):
    import hfsoup

    selection = hfsoup.Selection(
        task="text-classification",
        report="test",
        data_files={"test": [str(reviews_file)]},
        max_length=MAX_LENGTH,
        learned_steps=LEARNED_STEPS,
        learned_lr=0.1,
    )
    out = tmp_path_factory.mktemp("soups") / "greedy"
    started = time.perf_counter()
    result = hfsoup.soup(minilm_family.finetunes, out, method="greedy", selection=selection)
    seconds = time.perf_counter() - started
    print(f"\n{result.results.format_table()}\n(greedy soup with every baseline: {seconds:.0f} s)")
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
    for row in table.rows:  # every figure on both parts
        assert 0 < row.held_out["accuracy"] <= 1 and 0 < row.report["accuracy"] <= 1, row.name
    assert [r.kind for r in table.rows].count("ingredient") == 4
    provenance = json.loads(souped.provenance_path.read_text())
    assert provenance["evaluation"]["report"]["metrics"] == greedy.report
    assert provenance["evaluation"]["held_out"]["description"] == table.held_out


@pytest.mark.slow
@opt_in
def test_learned_soup_matches_or_beats_the_uniform_held_out_loss(souped, minilm_family, reviews_file, tmp_path):
    import hfsoup

    selection = hfsoup.Selection(
        task="text-classification",
        report="test",
        data_files={"test": [str(reviews_file)]},
        max_length=MAX_LENGTH,
        by_layer=True,
        learned_steps=LEARNED_STEPS,
        learned_lr=0.1,
        compare=["uniform"],
        plot=False,
    )
    result = hfsoup.soup(minilm_family.finetunes, tmp_path / "learned", method="learned", selection=selection)
    record = result.method_record
    print(f"\nlearned by layer: held-out loss {record['loss']:.5f}, uniform {record['uniform_loss']:.5f}")
    assert record["loss"] <= record["uniform_loss"] + 1e-6
    assert record["uniform_loss"] == pytest.approx(record["history"][0])
    for weights in record["per_tensor"].values():
        assert sum(weights) == pytest.approx(1.0, abs=1e-9)
    # The global learned soup of the first run, too.
    learned_row = souped.results.row("learned soup")
    assert learned_row.held_out["accuracy"] > 0


@pytest.mark.slow
@opt_in
def test_early_stopping_makes_the_same_decisions_for_less_evaluation(minilm_family, reviews_file, threads):
    """The saving, measured: the same search with and without early stopping, on the real held-out half."""
    from hfsoup.checkpoint import CheckpointReader
    from hfsoup.evaluator import Evaluator
    from hfsoup.heldout import carve
    from hfsoup.placement import load_model, load_tokenizer
    from hfsoup.scorers import AccuracyScorer, make_scorer
    from hfsoup.tasks import text_classification_task
    from hfsoup.tasting import state_loader

    task = text_classification_task(list(LABEL_NAMES))
    evaluator = Evaluator(task, "test", data_files={"test": [str(reviews_file)]}, max_length=MAX_LENGTH)
    held, _ = carve({"test": len(evaluator.splits[0].references)}, held_out=None, report="test")
    evaluator.restrict(held.positions)
    first = str(minilm_family.finetunes[0])
    model, _ = load_model(first, kind=None, token=None)
    scorer = make_scorer(evaluator, model, load_tokenizer(first, token=None))
    assert isinstance(scorer, AccuracyScorer)
    readers = [CheckpointReader(f) for f in minilm_family.finetunes]
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
