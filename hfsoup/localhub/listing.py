"""Listing endpoints of the local Hub: `list_models`, `list_datasets`, `list_spaces` and `list_user_repos`.

`GET /api/{models|datasets|spaces}` takes what `huggingface_hub` sends: `author`, `search` (substrings of the id,
ANDed when repeated), `filter` (tags, ANDed: the card's tags, `license:`, `dataset:`, and the model tree's
`base_model:finetune:<id>`, see `cards.derived_tags`), `pipeline_tag`, `gated`, `sort` (`lastModified`, `createdAt`,
`downloads`, `likes`, `trendingScore`, `id`) with `direction` (`-1`, the default, newest or largest first; `1` the
other way), `limit` (at most 1000 a page, as on the Hub), `full`, `cardData` and `expand`. More pages follow through
the `Link: rel="next"` header. A private repo is listed only to a token that may read it.

`GET /api/settings/repositories` (and `/api/organizations/{org}/settings/repositories`), what `hf repos ls` calls,
lists the token's own repos (or the organization's) with the storage each one's blobs take.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from .access import NO_TOKEN_MESSAGE
from .protocol import Request, Response, json_response
from .reads import repo_summary
from .store import DEFAULT_BRANCH, EndpointError, Repo, check_namespace, parse_count

#: The most entries one page holds, whatever `limit` asks (the Hub's cap).
MAX_PAGE = 1000
_SORT_KEYS = {"lastModified", "createdAt", "downloads", "likes", "trendingScore", "id"}
#: What a listing entry holds without `full`: the rest (siblings, sha, card data) costs more to send.
_BRIEF = ("_id", "id", "author", "private", "gated", "downloads", "likes", "trendingScore", "tags", "createdAt")
_BRIEF_MODEL = ("lastModified", "pipeline_tag", "library_name")


def list_models(req: Request) -> Response:
    return _listing(req, "model")


def list_datasets(req: Request) -> Response:
    return _listing(req, "dataset")


def list_spaces(req: Request) -> Response:
    return _listing(req, "space")


def _values(req: Request, name: str) -> list[str]:
    return [v for v in req.query.get(name, []) + req.query.get(f"{name}[]", []) if v]


def _listing(req: Request, repo_type: str) -> Response:
    author, searches, filters = req.param("author"), _values(req, "search"), _values(req, "filter")
    if author is not None and not check_namespace(author):
        raise EndpointError(400, f"Invalid author {author[:100]!r}")
    sort, direction = req.param("sort") or "id", req.param("direction") or ("1" if req.param("sort") is None else "-1")
    if sort not in _SORT_KEYS or direction not in ("1", "-1"):
        raise EndpointError(400, f"Invalid sort {sort[:40]!r} or direction {direction[:5]!r}")
    limit = _count(req, "limit", MAX_PAGE)
    gated, pipeline_tag = req.param("gated"), req.param("pipeline_tag")
    full, card_data = req.flag("full"), req.flag("cardData")
    expand = _values(req, "expand")

    entries = []
    for repo in req.store.repos(repo_type):
        namespace = repo.id.split("/")[0]
        if author is not None and namespace.lower() != author.lower():
            continue
        if any(s.lower() not in repo.id.lower() for s in searches):
            continue
        try:
            private = repo.private
            if not req.access.may_read(req.user, namespace, private):
                continue
            info = repo_summary(repo, repo.resolve(DEFAULT_BRANCH))
        except (EndpointError, OSError, ValueError):  # deleted or moved while we listed
            continue
        if any(tag not in info["tags"] for tag in filters):
            continue
        if gated is not None and bool(info["gated"]) != (gated.lower() == "true"):
            continue
        if pipeline_tag is not None and info.get("pipeline_tag") != pipeline_tag:
            continue
        entries.append((info, _entry(info, repo_type, full=full, card_data=card_data, expand=expand)))
    entries.sort(key=lambda pair: (pair[0][sort], pair[0]["id"]), reverse=direction == "-1")
    return _page(req, [entry for _, entry in entries], min(limit, req.page_size))


def _entry(info: dict[str, Any], repo_type: str, *, full: bool, card_data: bool, expand: list[str]) -> dict[str, Any]:
    if expand:
        return {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
    keys = set(_BRIEF) | (set(_BRIEF_MODEL) if repo_type == "model" else {"lastModified"})
    if full:
        keys |= {"sha", "siblings", "disabled", "usedStorage", "sdk"}
    if card_data or full:
        keys.add("cardData")
    entry = {key: value for key, value in info.items() if key in keys}
    if repo_type == "model":
        entry["modelId"] = info["id"]
    return entry


def _count(req: Request, name: str, most: int) -> int:
    text = req.param(name)
    if text is None:
        return most
    value = parse_count(text)
    if value is None or value == 0:
        raise EndpointError(400, f"Invalid {name} {text[:40]!r}: expected a positive number")
    return min(value, most)


def _page(req: Request, items: list, size: int) -> Response:
    """One page of `items` from `cursor`, and a `Link: <...>; rel="next"` header when more remain."""
    cursor = req.param("cursor") or "0"
    start = parse_count(cursor)
    if start is None:
        raise EndpointError(400, f"Invalid cursor {cursor[:40]!r}")
    end = start + size
    headers = {}
    if end < len(items):
        query = {key: values for key, values in req.query.items() if key != "cursor"}
        query["cursor"] = [str(end)]
        headers["Link"] = f'<{req.base_url}{req.path}?{urlencode(query, doseq=True)}>; rel="next"'
    return json_response(items[start:end], headers=headers)


# hf repos ls -----------------------------------------------------------------------------------------------------
def user_repos(req: Request, namespace: str | None = None) -> Response:
    """`GET /api/settings/repositories`: the token's user's repos; `.../organizations/{org}/...`: the org's."""
    if req.user is None:
        raise EndpointError(401, NO_TOKEN_MESSAGE)
    if namespace is None:
        namespace = req.user.name
    elif not check_namespace(namespace):
        raise EndpointError(400, f"Invalid organization {namespace[:100]!r}")
    elif not req.user.owns(namespace):
        raise EndpointError(403, f"You are not a member of the organization {namespace}")
    rows = []
    for repo in req.store.repos():
        if repo.id.split("/")[0] != namespace:
            continue
        try:
            rows.append(_storage_row(repo))
        except (EndpointError, OSError, ValueError):  # deleted while we listed
            continue
    total = sum(row["storage"] for row in rows) or 1
    for row in rows:
        row["storagePercent"] = round(100 * row["storage"] / total, 2)
    rows.sort(key=lambda row: row["updatedAt"], reverse=True)
    return _page(req, rows, req.page_size)


def _storage_row(repo: Repo) -> dict[str, Any]:
    sizes: dict[str, int] = {}
    for path in (repo.dir / "commits").glob("*.json"):
        for entry in repo.store.read_commit(path)["files"].values():
            sizes[entry["sha256"]] = entry["size"]
    updated = max(repo.commit(sha)["date"] for sha in set(repo.refs().values()))
    return {
        "id": repo.id,
        "type": repo.type,
        "updatedAt": updated,
        "visibility": "private" if repo.private else "public",
        "storage": sum(sizes.values()),
    }
