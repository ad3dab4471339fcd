"""The learned soup on objectives whose best mixture is known: per ingredient, and per ingredient and tensor."""

from __future__ import annotations

import pytest
import torch

from hfsoup.errors import InvalidSoupArgumentsError
from hfsoup.soups import SOUPS, LearnedSoup


class Target:
    """Squared distance of each tensor of the soup to a target, one "example" per tensor element, in two batches."""

    def __init__(self, target: dict[str, torch.Tensor]) -> None:
        self.target = target
        self.num_examples = sum(t.numel() for t in target.values())

    def batches(self):
        names = sorted(self.target)
        return [names[: len(names) // 2], names[len(names) // 2 :]]

    def loss(self, state, batch):
        return sum(((state[name] - self.target[name]) ** 2).sum() for name in batch)


def states(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        {"a": torch.randn(8, generator=gen), "b": torch.randn(8, generator=gen), "n": torch.tensor(3)}
        for _ in range(3)
    ]


def test_registry_and_arguments():
    assert SOUPS["learned"] is LearnedSoup and LearnedSoup.needs_scores
    with pytest.raises(InvalidSoupArgumentsError, match="at least one step"):
        LearnedSoup(steps=0)
    with pytest.raises(InvalidSoupArgumentsError, match="two ingredients"):
        LearnedSoup().fit(states()[:1], Target({"a": torch.zeros(8)}))


def test_global_weights_move_towards_the_ingredient_the_target_is():
    ingredients = states()
    objective = Target({"a": ingredients[1]["a"], "b": ingredients[1]["b"]})
    result = LearnedSoup(steps=40, lr=0.2).fit(ingredients, objective, names=["x", "y", "z"])
    assert sum(result.weights) == pytest.approx(1.0, abs=1e-9)
    assert max(range(3), key=lambda i: result.weights[i]) == 1 and result.weights[1] > 0.6
    assert result.loss < result.uniform_loss * 0.5
    assert result.history[0] == pytest.approx(result.uniform_loss) and result.per_tensor == {}
    assert result.mixing.weights == result.weights


def test_by_layer_weights_pick_each_tensor_from_its_own_ingredient_and_sum_to_one():
    ingredients = states(1)
    objective = Target({"a": ingredients[0]["a"], "b": ingredients[2]["b"]})
    result = LearnedSoup(by_layer=True, steps=40, lr=0.2).fit(ingredients, objective)
    assert set(result.per_tensor) == {"a", "b"}  # the integer buffer is not mixed
    for weights in result.per_tensor.values():
        assert sum(weights) == pytest.approx(1.0, abs=1e-9) and min(weights) > 0
    assert result.per_tensor["a"][0] > 0.6 and result.per_tensor["b"][2] > 0.6
    assert result.mixing.weights_for("a") == result.per_tensor["a"]
    # A global mixture cannot do this well: one weight set for both tensors.
    single = LearnedSoup(steps=40, lr=0.2).fit(ingredients, objective)
    assert result.loss < single.loss


def test_the_result_is_never_worse_than_the_uniform_start():
    ingredients = states(2)
    uniform = {k: sum(s[k] for s in ingredients) / 3 for k in ("a", "b")}
    objective = Target(uniform)  # the uniform soup is already optimal: a big step overshoots
    result = LearnedSoup(steps=3, lr=5.0).fit(ingredients, objective)
    assert result.loss <= result.uniform_loss
    assert result.best_step == 0 and result.weights == pytest.approx((1 / 3,) * 3)
