"""Finding ingredients on the Hub: a base model's fine-tunes and adapters, listed through the model tree and vetted
before any weights download (`search.find_ingredients`), with a sampled shared-initialization estimate read by Range
requests (`sampled`). `options.Search` declares what a search takes (a recipe's `ingredients: {search: ...}`).

The names are loaded on first use: a recipe's validation needs `Search` alone, not the Hub client.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Candidate": "search",
    "FindResult": "search",
    "NoCandidatesError": "search",
    "find_ingredients": "search",
    "refuse_unless_enough": "search",
    "Query": "query",
    "Search": "options",
}


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)


__all__ = sorted(_NAMES)
