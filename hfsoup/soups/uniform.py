"""The uniform soup (Wortsman et al., 2022, eq. 1) and its weighted variant.

Uniform: every ingredient gets weight 1/N. Weighted: the user gives N non-negative weights summing to 1; they are not
renormalised silently, because a typo in a weight would then change the soup without a word.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from ..errors import InvalidSoupArgumentsError, option
from .base import Mixing, as_tuple, uniform_weights

# Weights typed by hand with three decimals (0.333, 0.333, 0.334) must still pass.
SUM_TOLERANCE = 1e-3


class UniformSoup:
    """Average the ingredients tensor by tensor, uniformly or with fixed weights.

    Args:
        weights (`Sequence[float]`, *optional*):
            One non-negative weight per ingredient, summing to 1. Defaults to 1/N each.

    Example:
        ```py
        >>> UniformSoup(weights=[0.5, 0.25, 0.25]).mixing(3).weights
        (0.5, 0.25, 0.25)
        ```
    """

    name: ClassVar[str] = "uniform"
    needs_scores: ClassVar[bool] = False

    def __init__(self, *, weights: Sequence[float] | None = None) -> None:
        self.weights = None if weights is None else as_tuple(weights)

    def mixing(self, n_ingredients: int) -> Mixing:
        if self.weights is None:
            return Mixing(uniform_weights(n_ingredients))
        check_weights(self.weights, n_ingredients)
        return Mixing(self.weights)


def check_weights(weights: Sequence[float], n_ingredients: int) -> None:
    """Refuse weights that do not describe a weighted average of `n_ingredients` models."""
    shown = ",".join(f"{w:g}" for w in weights)
    if len(weights) != n_ingredients:
        raise InvalidSoupArgumentsError(
            f"Got {len(weights)} weights ({shown}) for {n_ingredients} ingredients; a weighted soup needs exactly "
            "one weight per ingredient, in the order the ingredients are given.",
            fix=f"Pass {n_ingredients} weights, one per ingredient in their order: --weights W1,W2,... "
            "(weights=[W1, W2, ...]), or none for a uniform soup.",
        )
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise InvalidSoupArgumentsError(
            f"Soup weights must be finite and non-negative; got {shown}.",
            fix="Use weights between 0 and 1 that sum to 1.",
        )
    total = sum(weights)
    if abs(total - 1.0) > SUM_TOLERANCE:
        normalised = [float(f"{w / total:.4g}") for w in weights] if total > 0 else None
        raise InvalidSoupArgumentsError(
            f"Soup weights must sum to 1 (a weighted average); {shown} sums to {total:g}.",
            fix=f"Did you mean {option('weights', normalised)}?" if normalised else "Give one positive weight.",
        )
