"""WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): `(1 - alpha) * base + alpha * theta`,
the zero-shot model (`--base`, usually the pretrained CLIP) interpolated with the fine-tune `theta`, or with the
uniform soup of several fine-tunes. An affine combination, computed by the engine's weighted sum block by block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import schema
from ..options import option
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, option_args, recorded_options


class WiseFT(SoupMethod):
    """Interpolate the base (the zero-shot model) and the fine-tunes' uniform soup: `(1 - alpha) base + alpha theta`.

    Args:
        alpha (`float`, *optional*, defaults to 0.5): the fine-tunes' share; 0 is the base, 1 the uniform soup.

    Example:
        ```py
        >>> WiseFT(alpha=0.4).run(SoupContext(names=["a", "b"])).mixing.base_weight
        0.6
        ```
    """

    name: ClassVar[str] = "wise-ft"
    description: ClassVar[str] = (
        "the base (zero-shot) model interpolated with the fine-tunes' uniform soup, (1 - alpha) base + alpha soup "
        "(Wortsman et al., 2022)"
    )
    needs_base: ClassVar[bool] = True
    min_ingredients: ClassVar[int] = 1
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle("h", "tab:cyan")

    @dataclass
    class Options:
        alpha: float = option(
            0.5, kind=schema.candidates(schema.unit()), help="the fine-tunes' share (0: the base, 1: their soup)"
        )

    def run(self, context: SoupContext) -> Outcome:
        alpha = self.options.alpha
        mixing = Mixing(tuple(alpha / context.n for _ in range(context.n)), base_weight=1.0 - alpha)
        return Outcome(mixing, recorded_options(self))

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))
