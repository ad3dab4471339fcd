"""Read endpoints of the local Hub: repo info, tree and paths listings, refs, commits, file resolution, whoami.

Response shapes follow what `huggingface_hub` parses (`ModelInfo`, `RepoFile`, `RepoFolder`, `GitRefs`,
`GitCommitInfo`, `get_hf_file_metadata`); fields the clients never read are left out.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from .access import ANY_NAMESPACE, BAD_TOKEN_MESSAGE
from .cards import derived_tags
from .protocol import Request, Response, file_response, front_matter, get_field, json_response, open_repo, split_rev
from .store import DEFAULT_BRANCH, EndpointError, Repo, lfs_pointer, parse_count

Files = dict[str, dict[str, Any]]
_MAX_CARD_BYTES = 1 << 20


def whoami(req: Request) -> Response:
    """The token's user and its organizations; 401 without a token (and for an unknown one, before we get here)."""
    if req.user is None:
        raise EndpointError(401, BAD_TOKEN_MESSAGE)
    orgs = [{"type": "org", "name": org, "fullname": org} for org in req.user.orgs if org != ANY_NAMESPACE]
    return json_response(
        {
            "type": "user",
            "id": req.user.name,
            "name": req.user.name,
            "fullname": req.user.name,
            "email": None,
            "emailVerified": False,
            "isPro": False,
            "orgs": orgs,
            # Never echo the token itself: only its kind and role.
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        }
    )


# Repo info -------------------------------------------------------------------------------------------------------
def repo_info(req: Request, repo_type: str, repo_id: str, rev_segments: list[str] | None = None) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    sha = repo.resolve(unquote("/".join(rev_segments)) if rev_segments else DEFAULT_BRANCH)
    info = repo_summary(repo, sha)
    # `expand=...` asks for a subset of fields, as on the Hub; unknown names are simply absent.
    expand = req.query.get("expand", []) + req.query.get("expand[]", [])
    if expand:
        info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
    return json_response(info)


def repo_summary(repo: Repo, sha: str) -> dict[str, Any]:
    """What `model_info` (`dataset_info`, `space_info`) answers for `repo` at commit `sha`: every field we know;
    listings (`hub_listing`) pick from it."""
    commit = repo.commit(sha)
    files: Files = commit["files"]
    meta = repo.meta
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{repo.type}/{repo.id}".encode()).hexdigest()[:24],
        "id": repo.id,
        "author": repo.id.split("/")[0],
        "sha": sha,
        "lastModified": commit["date"],
        "createdAt": meta["createdAt"],
        "private": bool(meta.get("private")),
        "gated": meta.get("gated", False),
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "trendingScore": 0,
        "tags": [],
        "siblings": [_sibling(path, files[path]) for path in sorted(files)],
        "usedStorage": sum(entry["size"] for entry in files.values()),
    }
    card = _card_data(repo, files)
    if card is not None:
        info["cardData"] = card
        if repo.type == "model":
            info.update({key: card[key] for key in ("library_name", "pipeline_tag") if isinstance(card.get(key), str)})
    info["tags"] = derived_tags(repo.type, card or {}, files)
    if repo.type == "space":
        info["sdk"] = meta.get("sdk")
    return info


def _sibling(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
    if entry.get("lfs"):
        pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
        sibling["lfs"] = {"sha256": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    return sibling


def _card_data(repo: Repo, files: Files) -> dict[str, Any] | None:
    readme = files.get("README.md")
    if readme is None or readme["size"] > _MAX_CARD_BYTES:
        return None
    try:
        return front_matter(repo.store.blobs.read(readme["sha256"]).decode("utf-8", "replace"))
    except ValueError:  # An invalid card is served without card data, as the Hub does.
        return None


# Trees -----------------------------------------------------------------------------------------------------------
def tree(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    _, sha, path = split_rev(repo, segments)
    files: Files = repo.commit(sha)["files"]
    dirs = _dir_oids(files)
    if path and path not in dirs:
        raise EndpointError(404, f"Entry not found: '{path}' is not a folder at {sha}", code="EntryNotFound")
    prefix = f"{path}/" if path else ""
    recursive = req.flag("recursive")
    paths = [p for p in [*dirs, *files] if p.startswith(prefix) and p and (recursive or "/" not in p[len(prefix) :])]
    return _paged(req, _entries(repo, sha, files, dirs, sorted(paths), expand=req.flag("expand")))


def paths_info(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    sha = repo.resolve(unquote("/".join(segments)))
    if "json" in req.headers.get("Content-Type", ""):
        data = req.json()
        paths, expand = get_field(data, "paths", list, []), str(data.get("expand", "")).lower() == "true"
    else:  # huggingface_hub sends a form: paths=a&paths=b&expand=false
        form = parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)
        paths, expand = form.get("paths", []), form.get("expand", [""])[0].lower() == "true"
    files: Files = repo.commit(sha)["files"]
    dirs = _dir_oids(files)
    if not all(isinstance(p, str) for p in paths):
        raise EndpointError(400, "'paths' must be a list of strings")
    found = [p for p in dict.fromkeys(p.strip("/") for p in paths) if p in files or p in dirs]
    return json_response(_entries(repo, sha, files, dirs, found, expand=expand))


def _dir_oids(files: Files) -> dict[str, str]:
    """Every folder of the file table with a tree id: a hash of what lies beneath it."""
    members: dict[str, list[str]] = {}
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            members.setdefault("/".join(parts[:depth]), []).append(path)
    return {
        folder: hashlib.sha1("".join(f"{p} {files[p]['oid']}\n" for p in sorted(paths)).encode()).hexdigest()
        for folder, paths in members.items()
    }


def _entries(repo: Repo, sha: str, files: Files, dirs: dict[str, str], paths: list[str], *, expand: bool) -> list:
    entries = []
    for path in paths:
        if path in files:
            entry = files[path]
            item: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry.get("lfs"):
                pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
                item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
        else:
            item = {"type": "directory", "oid": dirs[path], "size": 0, "path": path}
        entries.append(item)
    if expand:  # The Hub adds each entry's last commit only on request: it costs a walk through the history.
        last = _last_commits(repo, sha, paths)
        for item in entries:
            commit = last[item["path"]]
            item["lastCommit"] = {"id": commit["id"], "title": commit["title"], "date": commit["date"]}
    return entries


def _last_commits(repo: Repo, sha: str, paths: list[str]) -> dict[str, dict[str, Any]]:
    """For each path, the newest commit (along first parents) that changed it or anything beneath it."""

    def signature(files: Files, path: str) -> object:
        if path in files:
            return files[path]["oid"]
        return sorted((p, e["oid"]) for p, e in files.items() if p.startswith(f"{path}/"))

    pending, found = set(paths), {}
    commits = repo.history(sha)
    commit = next(commits)
    while pending:
        parent = next(commits, None)
        parent_files = parent["files"] if parent is not None else {}
        for path in list(pending):
            if parent is None or signature(commit["files"], path) != signature(parent_files, path):
                found[path] = commit
                pending.discard(path)
        if parent is None:
            break
        commit = parent
    return found


def _paged(req: Request, items: list) -> Response:
    """One page of `items`, with a `Link: <...>; rel="next"` header when more remain (GitHub-style paging)."""
    cursor = req.param("cursor") or "0"
    start = parse_count(cursor)
    if start is None:
        raise EndpointError(400, f"Invalid cursor {cursor[:40]!r}")
    end = start + req.page_size
    headers = {}
    if end < len(items):
        query = {key: values for key, values in req.query.items() if key != "cursor"}
        query["cursor"] = [str(end)]
        headers["Link"] = f'<{req.base_url}{req.path}?{urlencode(query, doseq=True)}>; rel="next"'
    return json_response(items[start:end], headers=headers)


# Refs and commits ------------------------------------------------------------------------------------------------
def refs(req: Request, repo_type: str, repo_id: str) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    listing: dict[str, list] = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
    kinds = {"refs/heads/": "branches", "refs/tags/": "tags", "refs/pr/": "pullRequests"}
    for ref, target in sorted(repo.refs().items()):
        for prefix, kind in kinds.items():
            if ref.startswith(prefix):
                name = ref if kind == "pullRequests" else ref[len(prefix) :]
                listing[kind].append({"name": name, "ref": ref, "targetCommit": target})
    if not req.flag("include_prs"):
        del listing["pullRequests"]
    return json_response(listing)


def commits(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    sha = repo.resolve(unquote("/".join(segments)) or DEFAULT_BRANCH)
    formatted = "formatted" in req.query.get("expand[]", []) + req.query.get("expand", [])
    items = []
    for commit in repo.history(sha):
        item = {
            "id": commit["id"],
            "title": commit["title"],
            "message": commit["message"],
            "authors": [{"user": user, "avatar": None} for user in commit["authors"]],
            "date": commit["date"],
        }
        if formatted:
            item["formatted"] = {"title": commit["title"], "message": commit["message"]}
        items.append(item)
    return _paged(req, items)


# Files -----------------------------------------------------------------------------------------------------------
def resolve_file(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    """`HEAD`/`GET /{prefix}{id}/resolve/{rev}/{path}`: the file, with the headers `hf_hub_download` relies on."""
    repo = open_repo(req, repo_type, repo_id)
    _, sha, path = split_rev(repo, segments)
    entry = repo.commit(sha)["files"].get(path)
    headers = {"X-Repo-Commit": sha}
    if entry is None:
        raise EndpointError(404, f"Entry not found: {path} at {sha}", code="EntryNotFound", headers=headers)
    if entry.get("lfs"):
        # The Hub redirects LFS files to a CDN and names the content in X-Linked-*; serving them here directly is
        # accepted by the client, which prefers these headers for the cache key and the expected size.
        etag = f'"{entry["sha256"]}"'
        headers.update({"ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(entry["size"])})
    else:
        headers["ETag"] = f'"{entry["oid"]}"'
    blob = req.store.blobs.path(entry["sha256"])
    return file_response(req, blob, entry["size"], headers, name=path)
