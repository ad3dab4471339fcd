"""Which repos on the Hub name a base model: `HfApi.list_models` over the model tree's `base_model:` tags.

The Hub tags every child of a model with `base_model:<relation>:<id>` (see shared/HUB-NOTES.md), so a base's
fine-tunes are `filter="base_model:finetune:<id>"` and its adapters `filter="base_model:adapter:<id>"`; merges and
quantizations are other relations, never ingredients. The two listings are joined, each repo once, in the order the
user asked for (`--sort`), and with `full=True` each entry carries the commit SHA it is pinned to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..constants import FIND_SORTS
from ..hub.errors import hub_errors
from ..hub.retries import with_retries

#: The relations whose children are ingredients, and `--sort` names to the Hub's sort keys.
RELATIONS = ("finetune", "adapter")
SORTS = dict(zip(FIND_SORTS, ("downloads", "likes", "lastModified"), strict=True))


@dataclass(frozen=True)
class Query:
    """What `hfsoup find` asks the Hub (recorded with the ingredients it found, so a soup says how it got them)."""

    base: str
    task: str | None = None
    pipeline_tag: str | None = None
    author: str | None = None
    search: str | None = None
    sort: str = "downloads"
    limit: int | None = None
    filters: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["filters"] = list(self.filters)
        return {k: v for k, v in data.items() if v not in (None, [])}


@dataclass(frozen=True)
class Listed:
    """One repo the listing returned."""

    repo_id: str
    sha: str | None
    relation: str
    downloads: int
    likes: int
    last_modified: str | None
    license: str | None


def list_children(query: Query, *, token: str | bool | None = None) -> list[Listed]:
    """Every fine-tune and adapter of `query.base` the Hub lists (all pages), each once, sorted as asked."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    found: dict[str, Listed] = {}
    for relation in RELATIONS:

        def listing(relation: str = relation) -> list:
            return list(
                api.list_models(
                    filter=[f"base_model:{relation}:{query.base}", *query.filters],
                    author=query.author,
                    search=query.search,
                    pipeline_tag=query.pipeline_tag,
                    sort=SORTS[query.sort],
                    full=True,
                )
            )

        with hub_errors("model", query.base):
            models = with_retries(listing, what=f"listing the {relation}s of {query.base}")
        for model in models:  # type: ignore[union-attr]
            if model.id in found or model.id == query.base:
                continue
            found[model.id] = Listed(
                repo_id=model.id,
                sha=model.sha,
                relation=relation,
                downloads=model.downloads or 0,
                likes=model.likes or 0,
                last_modified=model.last_modified.isoformat() if model.last_modified else None,
                license=_license(model.tags or []),
            )
    key = {"downloads": lambda m: m.downloads, "likes": lambda m: m.likes, "modified": lambda m: m.last_modified or ""}
    by_id = sorted(found.values(), key=lambda m: m.repo_id)
    return sorted(by_id, key=key[query.sort], reverse=True)  # stable: ties keep the id order


def _license(tags: list[str]) -> str | None:
    return next((t.partition(":")[2] for t in tags if t.startswith("license:")), None)
