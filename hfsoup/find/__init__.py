"""Finding ingredients on the Hub: a base model's fine-tunes and adapters, listed through the model tree and vetted
before any weights download (`search.find_ingredients`), with a sampled shared-initialization estimate read by Range
requests (`sampled`)."""

from __future__ import annotations

from .query import Query
from .search import Candidate, FindResult, NoCandidatesError, find_ingredients, refuse_unless_enough

__all__ = ["Candidate", "FindResult", "NoCandidatesError", "Query", "find_ingredients", "refuse_unless_enough"]
