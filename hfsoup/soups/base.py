"""What every soup method produces (mixing weights, global or per tensor), and what the searching methods score with.

The greedy and learned soups never see the evaluator: they get a `Scorer` (state dict -> score) or a `HeldOutLoss`
(state dict and batch -> a differentiable loss), which `cook.py` builds from the evaluator, and each piece tests alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

#: Tensor name -> tensor, as in a `model.safetensors` file.
StateDict = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class Mixing:
    """Weights for a weighted average of the ingredients.

    Args:
        weights (`Sequence[float]`):
            One weight per ingredient, used for every tensor not in `per_tensor`.
        per_tensor (`dict[str, Sequence[float]]`, *optional*):
            Weights for single tensors (learned per-layer soups).
    """

    weights: tuple[float, ...]
    per_tensor: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def weights_for(self, name: str) -> tuple[float, ...]:
        return self.per_tensor.get(name, self.weights)


class SoupMethod(Protocol):
    """A soup recipe: given the ingredients, decide how to mix them.

    Methods with `needs_scores = True` (greedy, learned) decide from held-out scores: they have no `mixing(n)` of
    their own but a search that returns a result with a `mixing`.
    """

    name: ClassVar[str]
    needs_scores: ClassVar[bool]


class Scorer(Protocol):
    """The held-out score of a model with these weights; higher is better."""

    def __call__(self, state: StateDict) -> float: ...


@runtime_checkable
class SummedScorer(Protocol):
    """A score that is the mean of per-example scores in `[0, max_per_example]` (accuracy: 0 or 1 each).

    Such a scorer can report as it goes, so a search may stop scoring a candidate as soon as even a perfect score on
    the examples left could not change its decision. `__call__(state)` must equal
    `sum(s for s, _ in partial_sums(state)) / num_examples`.
    """

    num_examples: int
    max_per_example: float

    def __call__(self, state: StateDict) -> float: ...

    def partial_sums(self, state: StateDict) -> Iterator[tuple[float, int]]:
        """Per batch, in a fixed order: the sum of the batch's per-example scores and its number of examples."""
        ...


class HeldOutLoss(Protocol):
    """A differentiable held-out objective, batch by batch: what a learned soup minimizes."""

    num_examples: int

    def batches(self) -> Sequence[Any]: ...

    def loss(self, state: StateDict, batch: Any) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's examples, for the model with weights `state`."""
        ...


def uniform_weights(n: int) -> tuple[float, ...]:
    return tuple(1.0 / n for _ in range(n))


def as_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
