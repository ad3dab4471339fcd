"""The greedy soup against an independent transcription of the paper's algorithm, on scorers whose every
ingredient's contribution is known: ties, an ingredient that hurts, all of them hurting, early stopping."""

from __future__ import annotations

import random

import pytest
import torch

from hfsoup.errors import InvalidSoupArgumentsError
from hfsoup.soups import SOUPS, GreedySoup, SummedScorer


class MajorityScorer:
    """Example e is right when the soup's `votes[e]` is above 0.5: each ingredient holds its own margins (1 right,
    0 wrong), and their average says what the soup gets right. A `SummedScorer`, batch by batch."""

    max_per_example = 1.0

    def __init__(self, num_examples: int, batch: int = 4) -> None:
        self.num_examples, self.batch = num_examples, batch
        self.examples_seen = 0

    def partial_sums(self, state):
        votes = state["votes"]
        for start in range(0, self.num_examples, self.batch):
            chunk = votes[start : start + self.batch]
            self.examples_seen += len(chunk)
            yield float((chunk > 0.5).sum()), len(chunk)

    def __call__(self, state) -> float:
        return sum(s for s, _ in self.partial_sums(state)) / self.num_examples


class PlainScorer:
    """Not summed: minus the squared distance of the soup's `votes` to a target (a continuous metric)."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    def __call__(self, state) -> float:
        return -float(((state["votes"] - self.target) ** 2).sum())


def reference_greedy(states, score, *, accept="ge"):
    """The paper's greedy soup (model-soups main.py), averaging the kept ingredients from scratch at every step."""
    individual = [score(s) for s in states]
    ranked = sorted(range(len(states)), key=lambda i: individual[i], reverse=True)  # sorted() is stable
    kept, best = [ranked[0]], individual[ranked[0]]
    for i in ranked[1:]:
        members = kept + [i]
        trial = {k: sum(states[j][k].double() for j in members) / len(members) for k in states[0]}
        value = score({k: v.float() for k, v in trial.items()})
        if value >= best if accept == "ge" else value > best:
            kept, best = members, value
    return kept, best


def make_states(patterns):
    return [{"votes": torch.tensor(p, dtype=torch.float32), "step": torch.tensor(7)} for p in patterns]


def loaders(states):
    return [lambda s=s: s for s in states]


def test_the_registry_knows_greedy_and_rejects_unknown_rules():
    assert SOUPS["greedy"] is GreedySoup and GreedySoup.needs_scores
    with pytest.raises(InvalidSoupArgumentsError, match="acceptance rule"):
        GreedySoup(accept="gte")


@pytest.mark.parametrize("accept", ["ge", "gt"])
@pytest.mark.parametrize("seed", range(12))
def test_matches_the_reference_on_random_patterns_with_and_without_early_stop(seed, accept):
    rng = random.Random(seed)
    n, examples = rng.randint(2, 7), rng.choice([8, 13, 24])
    bias = [rng.uniform(0.3, 0.9) for _ in range(n)]
    patterns = [[1.0 if rng.random() < b else 0.0 for _ in range(examples)] for b in bias]
    states = make_states(patterns)
    scorer = MajorityScorer(examples, batch=rng.choice([1, 3, 5]))
    kept, best = reference_greedy(states, scorer, accept=accept)
    results = {}
    for early in (True, False):
        scorer.examples_seen = 0
        result = GreedySoup(accept=accept, early_stop=early).search(loaders(states), scorer)
        results[early] = result, scorer.examples_seen
        assert result.kept == kept and result.score == best
    (fast, fast_seen), (full, full_seen) = results[True], results[False]
    assert [d.kept for d in fast.decisions] == [d.kept for d in full.decisions]
    assert fast_seen <= full_seen and fast.examples_scored <= full.examples_scored == full.examples_full
    for decision in fast.decisions:  # a stopped candidate could not have met the rule
        if decision.stopped_early:
            assert decision.bound < decision.before if accept == "ge" else decision.bound <= decision.before


def test_matches_the_reference_with_a_plain_scorer():
    torch.manual_seed(0)
    target = torch.randn(10)
    states = [{"votes": target + torch.randn(10) * s} for s in (0.5, 1.0, 2.0, 0.7, 3.0)]
    scorer = PlainScorer(target)
    kept, best = reference_greedy(states, scorer)
    result = GreedySoup().search(loaders(states), scorer, names=list("abcde"))
    assert result.kept == kept and result.score == pytest.approx(best, abs=1e-5)
    assert len(result.kept) >= 2  # averaging independent noise helps: the search must have added some


def test_ties_keep_the_given_order_and_an_equal_trial_is_kept_only_under_ge():
    # Alone: a and b both 3/4 (a tie: a, given first, starts); their soup is also 3/4 (a tie with the soup).
    a, b = [1, 1, 1, 0], [1, 1, 0.75, 0]
    states = make_states([a, b])
    scorer = MajorityScorer(4)
    ge = GreedySoup(accept="ge").search(loaders(states), scorer, names=["a", "b"])
    gt = GreedySoup(accept="gt").search(loaders(states), scorer, names=["a", "b"])
    assert ge.order == [0, 1] and ge.kept == [0, 1] and ge.score == 0.75
    assert gt.kept == [0] and gt.decisions[0].trial == 0.75 and not gt.decisions[0].kept
    assert reference_greedy(states, scorer, accept="ge")[0] == ge.kept
    assert reference_greedy(states, scorer, accept="gt")[0] == gt.kept
    assert ge.mixing.weights == (0.5, 0.5) and gt.mixing.weights == (1.0, 0.0)


def test_an_ingredient_that_hurts_is_dropped_and_the_others_kept():
    good1, good2 = [0.9] * 8, [0.8] * 7 + [0.4]  # alone 8/8 and 7/8; together 8/8
    hurts = [0.0] * 8  # with both: (0.9 + 0.4 + 0) / 3 < 0.5 on the last example
    states = make_states([hurts, good1, good2])
    result = GreedySoup().search(loaders(states), MajorityScorer(8), names=["hurts", "good1", "good2"])
    assert [result.names[i] for i in result.kept] == ["good1", "good2"]
    assert [d.kept for d in result.decisions] == [True, False]
    assert result.decisions[1].name == "hurts" and result.mixing.weights == (0.0, 0.5, 0.5)


def test_when_every_addition_hurts_only_the_best_ingredient_is_kept():
    best = [1] * 6 + [0, 0]
    others = [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 1, 1, 1]]
    states = make_states([*others, best])
    scorer = MajorityScorer(8, batch=2)
    result = GreedySoup().search(loaders(states), scorer)
    assert result.kept == [3] and not any(d.kept for d in result.decisions)
    assert result.score == 0.75 and reference_greedy(states, scorer)[0] == [3]
    assert any(d.stopped_early for d in result.decisions)
    assert result.examples_scored < result.examples_full
    assert torch.equal(result.state["votes"], states[3]["votes"])


def test_the_running_sum_equals_an_average_of_the_kept_ingredients_from_scratch():
    torch.manual_seed(1)
    states = [
        {"w": torch.randn(64, 32) * 3 + 1, "b": torch.randn(32).half(), "ids": torch.arange(5)} for _ in range(9)
    ]

    class Mean:  # Scores that reward some ingredients and not others, so that some are dropped.
        def __call__(self, state):
            return float(state["w"][:, :16].mean() - state["w"][:, 16:].abs().mean())

    result = GreedySoup().search(loaders(states), Mean())
    assert 1 < len(result.kept) < len(states)
    for name in ("w", "b"):
        scratch = torch.stack([states[i][name].double() for i in result.kept]).mean(dim=0)
        assert (result.state[name].double() - scratch).abs().max().item() <= 1e-6
    assert torch.equal(result.state["ids"], states[0]["ids"])  # integer buffers are not averaged


def test_each_ingredient_is_read_once_when_its_score_is_given():
    reads = []
    states = make_states([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]])
    load = [lambda i=i: reads.append(i) or states[i] for i in range(3)]
    scorer = MajorityScorer(4)
    GreedySoup().search(load, scorer, scores=[scorer(s) for s in states])
    assert sorted(reads) == [0, 1, 2]


def test_the_summed_scorer_protocol_is_recognised():
    assert isinstance(MajorityScorer(4), SummedScorer)
    assert not isinstance(PlainScorer(torch.zeros(1)), SummedScorer)
