"""Task arithmetic (Ilharco et al., 2023, "Editing models with task arithmetic"): the base plus the scaled sum of the
task vectors, `base + scale * sum_i w_i (theta_i - base)`.

It is an affine combination of the ingredients and the base, so the engine's weighted sum computes it block by block
as it does the uniform soup: ingredient `i` weighs `scale * w_i` and the base `1 - scale * sum_i w_i`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import schema
from ..options import option
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, as_tuple, option_args, recorded_options


def scale_option(default: float = 1.0) -> Any:
    return option(default, kind=schema.candidates(schema.number()), help="multiplies the merged task vector")


def weights_option() -> Any:
    return option(
        None,
        kind=schema.numbers(),
        help="one weight per ingredient's task vector, any sign (default: 1 each)",
    )


def weights_problems(weights: list[float] | None, n_ingredients: int) -> list[tuple[str, str]]:
    if weights is not None and len(weights) != n_ingredients:
        return [("weights", f"{len(weights)} weights for {n_ingredients} ingredients")]
    return []


class TaskArithmetic(SoupMethod):
    """The base plus `scale` times the (weighted) sum of the task vectors `theta_i - base`.

    Args:
        weights (`Sequence[float]`, *optional*): one weight per ingredient (1 each by default); may be negative
            (a negated task vector removes a behaviour).
        scale (`float`, *optional*, defaults to 1): multiplies the summed task vectors.

    Example:
        ```py
        >>> TaskArithmetic(scale=0.5).run(SoupContext(names=["a", "b"])).mixing
        Mixing(weights=(0.5, 0.5), per_tensor={}, base_weight=0.0)
        ```
    """

    name: ClassVar[str] = "task-arithmetic"
    description: ClassVar[str] = (
        "the base plus the scaled sum of the task vectors, each fine-tune minus the base (Ilharco et al., 2023)"
    )
    needs_base: ClassVar[bool] = True
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle("P", "tab:purple")

    @dataclass
    class Options:
        weights: list[float] | None = weights_option()
        scale: float = scale_option()

    def problems(self, n_ingredients: int) -> list[tuple[str, str]]:
        return weights_problems(self.options.weights, n_ingredients)

    def run(self, context: SoupContext) -> Outcome:
        weights = as_tuple(self.options.weights or [1.0] * context.n)
        scaled = tuple(self.options.scale * w for w in weights)
        mixing = Mixing(scaled, base_weight=1.0 - sum(scaled))
        return Outcome(mixing, recorded_options(self))

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))
