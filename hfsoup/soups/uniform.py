"""The uniform soup (Wortsman et al., 2022, eq. 1) and its weighted variant.

Uniform: every ingredient gets weight 1/N. Weighted: the user gives N non-negative weights summing to 1; they are not
renormalised silently, because a typo in a weight would then change the soup without a word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .. import schema
from ..errors import InvalidSoupArgumentsError
from ..errors import option as spelled
from ..options import option
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, as_tuple, uniform_weights

if TYPE_CHECKING:
    from .memory import MemoryContext, Part

# Weights typed by hand with three decimals (0.333, 0.333, 0.334) must still pass.
SUM_TOLERANCE = 1e-3


class UniformSoup(SoupMethod):
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
    description: ClassVar[str] = (
        "the weights of every ingredient averaged tensor by tensor (with the mixing weights below)"
    )
    records_loss: ClassVar[bool] = True
    plot_style: ClassVar[PlotStyle] = PlotStyle("s", "tab:orange")

    @dataclass
    class Options:
        weights: list[float] | None = option(
            None,
            kind=schema.weights(),
            help="one weight per ingredient, summing to 1 (default: 1/N each)",
        )

    def mixing(self, n_ingredients: int) -> Mixing:
        weights = self.options.weights
        if weights is None:
            return Mixing(uniform_weights(n_ingredients))
        weights = as_tuple(weights)
        check_weights(weights, n_ingredients)
        return Mixing(weights)

    def problems(self, n_ingredients: int) -> list[tuple[str, str]]:
        weights = self.options.weights
        if weights is not None and len(weights) != n_ingredients:
            return [("weights", f"{len(weights)} weights for {n_ingredients} ingredients")]
        return []

    def memory_parts(self, context: MemoryContext) -> list[Part]:
        # Scored, the weighted sum is the soup being scored (counted by scoring): one ingredient read at a time.
        return [] if context.scored else context.streamed()

    def run(self, context: SoupContext) -> Outcome:
        return Outcome(self.mixing(context.n))

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        weights = provenance.get("weights") or []
        if weights and len(set(weights)) > 1:
            return ["--weights " + ",".join(f"{w:g}" for w in weights)]
        return []


def check_weights(weights: Sequence[float], n_ingredients: int) -> None:
    """Refuse weights that do not describe a weighted average of `n_ingredients` models."""
    shown = ",".join(f"{w:g}" for w in weights)
    if len(weights) != n_ingredients:
        raise InvalidSoupArgumentsError(
            f"Got {len(weights)} weights ({shown}) for {n_ingredients} ingredients; a weighted soup needs exactly "
            "one weight per ingredient, in the order the ingredients are given.",
            fix=f"Pass {n_ingredients} weights, one per ingredient in their order: --weights W1,W2,... "
            "(UniformSoup(weights=[W1, W2, ...])), or none for a uniform soup.",
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
            fix=f"Did you mean {spelled('weights', normalised, within='UniformSoup')}?"
            if normalised
            else "Give one positive weight.",
        )
