"""What every soup method produces: mixing weights, global or per tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol


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
    """A soup recipe: given the ingredients, decide how to mix them."""

    name: ClassVar[str]

    def mixing(self, n_ingredients: int) -> Mixing: ...


def uniform_weights(n: int) -> tuple[float, ...]:
    return tuple(1.0 / n for _ in range(n))


def as_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
