"""Soup methods, one module each, and `SOUPS`: the one place methods are listed.

A method (`base.SoupMethod`) declares its name, description, plot style and `Options`, and decides the mixing weights
through `run(context)`; `engine.stream_soup` applies them tensor by tensor. The CLI flags, recipe keys, the model
card's method text, the results table's rows and the plot all come from `SOUPS`: adding a method is adding a module
and a line here.
"""

from __future__ import annotations

from .base import (
    HeldOutLoss,
    Mixing,
    Outcome,
    PlotStyle,
    Scorer,
    SoupContext,
    SoupMethod,
    StateDict,
    SummedScorer,
)
from .dare import DareLinear, DareTies
from .fisher import FisherSoup
from .greedy import GreedyResult, GreedySoup
from .learned import LearnedResult, LearnedSoup
from .merge import TensorInputs, TensorMerge
from .model_stock import ModelStock
from .regmean import RegMeanSoup
from .slerp import SlerpSoup
from .task_arithmetic import TaskArithmetic
from .ties import TiesSoup
from .uniform import UniformSoup
from .wise_ft import WiseFT

SOUPS: dict[str, type[SoupMethod]] = {
    UniformSoup.name: UniformSoup,
    GreedySoup.name: GreedySoup,
    LearnedSoup.name: LearnedSoup,
    # The data-free merges (issue 17): defined per tensor, most relative to the pretrained base (`--base`).
    TaskArithmetic.name: TaskArithmetic,
    TiesSoup.name: TiesSoup,
    DareLinear.name: DareLinear,
    DareTies.name: DareTies,
    SlerpSoup.name: SlerpSoup,
    ModelStock.name: ModelStock,
    WiseFT.name: WiseFT,
    # The data-dependent merges (issue 17): statistics of each ingredient on the task's held-out data.
    FisherSoup.name: FisherSoup,
    RegMeanSoup.name: RegMeanSoup,
}


def make_method(method: str | SoupMethod, options: object = None) -> SoupMethod:
    """A method from its name in `SOUPS` and its options (an `Options`, a mapping or None), or as given."""
    from ..errors import InvalidSoupArgumentsError

    if isinstance(method, SoupMethod):
        if options is not None:
            raise InvalidSoupArgumentsError(
                f"Got a {method.name} soup object and separate options; give its options to the object only.",
                fix=f"Pass {type(method).__name__}(...) alone, or the method's name with options=.",
            )
        return method
    if method not in SOUPS:
        raise InvalidSoupArgumentsError(
            f"Unknown soup method {method!r}.", fix=f"Choose one of: {', '.join(sorted(SOUPS))}."
        )
    return SOUPS[method](options)


__all__ = [
    "SOUPS",
    "DareLinear",
    "DareTies",
    "FisherSoup",
    "RegMeanSoup",
    "ModelStock",
    "SlerpSoup",
    "TaskArithmetic",
    "TensorInputs",
    "TensorMerge",
    "TiesSoup",
    "WiseFT",
    "GreedyResult",
    "GreedySoup",
    "HeldOutLoss",
    "LearnedResult",
    "LearnedSoup",
    "Mixing",
    "Outcome",
    "PlotStyle",
    "Scorer",
    "SoupContext",
    "SoupMethod",
    "StateDict",
    "SummedScorer",
    "UniformSoup",
    "make_method",
]
