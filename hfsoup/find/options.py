"""What a search for ingredients takes, declared once: the recipe's `ingredients: {search: {...}}` keys and the
keywords of `find_ingredients` (the CLI's flags are `hfsoup find`'s, in `cli/find.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..constants import FIND_JOBS, FIND_SORTS
from ..hub.refs import hub_id_problem
from ..options import option


@dataclass
class Search:
    """A base model's children on the Hub, as a recipe names them.

    Example (a recipe):
        ```yaml
        ingredients:
          search: {base: google-bert/bert-base-uncased, task: sst2, limit: 20}
        ```
    """

    base: str = option(kind=schema.custom(hub_id_problem), help="the base model's Hub ID (org/name)")
    task: str | None = option(None, kind=schema.string(optional=True), help="a GLUE task: keep its labels")
    pipeline_tag: str | None = option(None, kind=schema.string(optional=True), help="only this pipeline tag")
    author: str | None = option(None, kind=schema.string(optional=True), help="only this user or organization")
    search: str | None = option(None, kind=schema.string(optional=True), help="only IDs containing this text")
    sort: str = option("downloads", kind=schema.one_of(FIND_SORTS), help="order, largest first")
    limit: int | None = option(None, kind=schema.positive_int(optional=True), help="stop once this many passed")
    jobs: int = option(FIND_JOBS, kind=schema.positive_int(), help="candidates checked at once")
