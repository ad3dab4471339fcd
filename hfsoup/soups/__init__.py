"""Soup methods, one module each, and the registry the CLI and recipes look methods up in.

A method decides the mixing weights; `engine.stream_soup` applies them tensor by tensor. Adding a method is adding a
module and a line in `SOUPS`.
"""

from __future__ import annotations

from .base import HeldOutLoss, Mixing, Scorer, SoupMethod, StateDict, SummedScorer
from .greedy import GreedyResult, GreedySoup
from .learned import LearnedResult, LearnedSoup
from .uniform import UniformSoup

SOUPS: dict[str, type[SoupMethod]] = {
    UniformSoup.name: UniformSoup,
    GreedySoup.name: GreedySoup,
    LearnedSoup.name: LearnedSoup,
}

__all__ = [
    "SOUPS",
    "GreedyResult",
    "GreedySoup",
    "HeldOutLoss",
    "LearnedResult",
    "LearnedSoup",
    "Mixing",
    "Scorer",
    "SoupMethod",
    "StateDict",
    "SummedScorer",
    "UniformSoup",
]
