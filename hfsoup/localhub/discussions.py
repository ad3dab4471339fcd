"""Discussions and pull requests on the local Hub, enough for `create_commit(create_pr=True)` and what follows.

Routes (under `/api/{type}s/{namespace}/{name}/discussions`), as `huggingface_hub` calls them:

- `GET` (`get_repo_discussions`): `type` (`all`, `discussion`, `pull_request`), `status` (`all`, `open`, `closed`),
  `author`, and the page `p` of 50, newest first;
- `POST` (`create_discussion`, `create_pull_request`): `{title, description, pullRequest}`; a pull request gets the
  ref `refs/pr/N`, first pointing at `main`, which commits to `revision="refs/pr/N"` move;
- `GET /{num}` (`get_discussion_details`): the events (comments, commits, status and title changes), the target
  branch, the files in conflict and, with `diff=1`, a diff of the pull request;
- `POST /{num}/comment`, `/status` (`open` or `closed`), `/title`, and `/merge` (`merge_pull_request`: a three-way
  merge of the file tables onto the target branch; a file both sides changed differently is a conflict, a 409).

Discussions and pull requests share one numbering (`Repo.next_discussion_num`). Anyone whose token may read the repo
may open a discussion or a pull request and comment (as on the Hub); changing a status or title is for its author
and the repo's owners; merging, and committing to a pull request's ref, for the repo's owners.
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import unquote

from .access import NO_TOKEN_MESSAGE
from .protocol import LOCAL_USER, Request, Response, get_field, json_response, open_repo, repo_url
from .store import DEFAULT_BRANCH, EndpointError, Repo, comment_data, parse_count

PAGE = 50  # discussions per page, as on the Hub
MAX_TITLE = 200
MAX_COMMENT = 65536
MAX_EVENTS = 5000  # a discussion's events, so that one file cannot grow without end
_MAX_DIFF = 1 << 20
_MAX_DIFF_FILE = 256 << 10


def discussions_get(req: Request, repo_type: str, repo_id: str, tail: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    if not tail:
        return _list(req, repo)
    if len(tail) == 1:
        return json_response(_details(req, repo, _num(tail[0])))
    raise EndpointError(404, f"No such endpoint: GET {req.path}")


def discussions_post(req: Request, repo_type: str, repo_id: str, tail: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    if not tail:
        return _create(req, repo)
    if len(tail) == 2 and tail[1] in _CHANGES:
        return _CHANGES[tail[1]](req, repo, _num(tail[0]))
    raise EndpointError(404, f"No such endpoint: POST {req.path}")


def _num(text: str) -> int:
    num = parse_count(unquote(text))
    if not num:
        raise EndpointError(400, f"Invalid discussion number {text[:20]!r}: expected a positive integer")
    return num


def _author(req: Request) -> str:
    """Who is speaking: the token's user; a request of the permissive mode without a token speaks as the local
    user, anyone else without a token may only read."""
    if req.user is not None:
        return req.user.name
    if req.access.anonymous_writes:
        return LOCAL_USER
    raise EndpointError(401, NO_TOKEN_MESSAGE)


def _check_author_or_owner(req: Request, repo: Repo, record: dict[str, Any], what: str) -> str:
    author = _author(req)
    if record["author"] != author:
        req.check_write(repo.id.split("/")[0], what)
    return author


def _text(data: dict[str, Any], key: str, most: int, *, required: bool) -> str:
    value = get_field(data, key, str, "").strip()
    if required and not value:
        raise EndpointError(400, f"'{key}' must not be empty")
    if len(value) > most:
        raise EndpointError(400, f"'{key}' is over {most} characters")
    return value


# Listing and details ---------------------------------------------------------------------------------------------
def _brief(repo: Repo, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "num": record["num"],
        "title": record["title"],
        "status": record["status"],
        "createdAt": record["createdAt"],
        "author": {"name": record["author"]},
        "repo": {"name": repo.id, "type": repo.type},
        "isPullRequest": record["isPullRequest"],
        "numComments": sum(1 for e in record["events"] if e["type"] == "comment"),
        "pinned": False,
    }


def _list(req: Request, repo: Repo) -> Response:
    kind, status, author = req.param("type") or "all", req.param("status") or "all", req.param("author")
    if kind not in ("all", "discussion", "pull_request") or status not in ("all", "open", "closed"):
        raise EndpointError(400, f"Invalid type {kind[:30]!r} or status {status[:30]!r}")
    page = parse_count(req.param("p") or "0")
    if page is None:
        raise EndpointError(400, "Invalid page 'p': expected a number")
    records = []
    for num in reversed(repo.discussion_nums()):  # newest first
        record = repo.discussion(num)
        if kind != "all" and record["isPullRequest"] != (kind == "pull_request"):
            continue
        if status != "all" and (record["status"] == "open") != (status == "open"):
            continue
        if author is not None and record["author"] != author:
            continue
        records.append(record)
    start = page * PAGE
    return json_response(
        {
            "discussions": [_brief(repo, r) for r in records[start : start + PAGE]],
            "count": len(records),
            "start": start,
            "numClosedDiscussions": sum(1 for r in records if r["status"] != "open"),
        }
    )


def _details(req: Request, repo: Repo, num: int) -> dict[str, Any]:
    record = repo.discussion(num)
    details = {**_brief(repo, record), "events": record["events"]}
    if record["isPullRequest"]:
        details["changes"] = {"base": record["base"]}
        if record.get("mergeCommitId"):
            details["changes"]["mergeCommitId"] = record["mergeCommitId"]
        conflicts: list[str] = []
        if record["status"] == "open":
            try:
                conflicts = _merge(repo, record)[1]
            except EndpointError:  # the target branch was deleted: nothing to merge into, nothing in conflict
                conflicts = []
        details["filesWithConflicts"] = conflicts
        if req.flag("diff"):
            details["diff"] = _diff(repo, record)
    return details


# Changes ---------------------------------------------------------------------------------------------------------
def _create(req: Request, repo: Repo) -> Response:
    author = _author(req)
    data = req.json()
    title = _text(data, "title", MAX_TITLE, required=True)
    description = _text(data, "description", MAX_COMMENT, required=False)
    pull_request = bool(get_field(data, "pullRequest", bool, False))
    with repo.lock:  # the number, the record and the ref together: two PRs opened at once get two numbers
        base = f"refs/heads/{DEFAULT_BRANCH}"
        head = repo.refs()[base] if pull_request else None
        record = repo.open_discussion(
            None, title=title, description=description, author=author, pull_request=pull_request, base=base,
            base_sha=head,
        )  # fmt: skip
        if pull_request:
            repo.set_ref(f"refs/pr/{record['num']}", head)
    url = f"{repo_url(req, repo.type, repo.id)}/discussions/{record['num']}"
    return json_response({"num": record["num"], "url": url, "pullRequest": pull_request})


def _comment(req: Request, repo: Repo, num: int) -> Response:
    author = _author(req)
    text = _text(req.json(), "comment", MAX_COMMENT, required=True)
    return json_response({"newMessage": _add(repo, num, "comment", author, comment_data(text, author))})


def _status(req: Request, repo: Repo, num: int) -> Response:
    data = req.json()
    status = get_field(data, "status", str, "")
    if status not in ("open", "closed"):
        raise EndpointError(400, "'status' must be 'open' or 'closed'")
    record = repo.discussion(num)
    author = _check_author_or_owner(req, repo, record, "change this discussion")
    if record["status"] == "merged":
        raise EndpointError(400, f"Pull request #{num} is merged: its status cannot change")
    comment = _text(data, "comment", MAX_COMMENT, required=False)
    if comment:
        _add(repo, num, "comment", author, comment_data(comment, author))
    return json_response({"newStatus": _add(repo, num, "status-change", author, {"status": status})})


def _title(req: Request, repo: Repo, num: int) -> Response:
    title = _text(req.json(), "title", MAX_TITLE, required=True)
    record = repo.discussion(num)
    author = _check_author_or_owner(req, repo, record, "change this discussion")
    event = _add(repo, num, "title-change", author, {"from": record["title"], "to": title})
    return json_response({"newTitle": event})


def _add(repo: Repo, num: int, kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
    if len(repo.discussion(num)["events"]) >= MAX_EVENTS:
        raise EndpointError(400, f"Discussion #{num} has {MAX_EVENTS} events already: open a new one")
    return repo.add_discussion_event(num, kind, author, data)


def _pr(repo: Repo, num: int) -> dict[str, Any]:
    record = repo.discussion(num)
    if not record["isPullRequest"]:
        raise EndpointError(400, f"#{num} is a discussion, not a pull request")
    return record


def _merge_endpoint(req: Request, repo: Repo, num: int) -> Response:
    req.check_write(repo.id.split("/")[0], f"merge pull requests of this {repo.type}")
    author = _author(req)
    comment = _text(req.json(), "comment", MAX_COMMENT, required=False)
    with repo.lock:
        record = _pr(repo, num)
        if record["status"] != "open":
            raise EndpointError(400, f"Pull request #{num} is {record['status']}, not open")
        files, conflicts, target, pr_head = _merge(repo, record)
        if conflicts:
            raise EndpointError(
                409, f"Pull request #{num} conflicts with {record['base']} in: {', '.join(conflicts[:20])}"
            )
        sha = repo.write_commit(
            parents=[target, pr_head], files=files, title=f"{record['title']} (#{num})", message=""
        )
        if comment:
            repo.add_discussion_event(num, "comment", author, comment_data(comment, author))
        repo.add_discussion_event(num, "status-change", author, {"status": "merged"})
        record = repo.discussion(num)
        repo.save_discussion({**record, "status": "merged", "mergeCommitId": sha})
        repo.set_ref(record["base"], sha, exist_ok=True)  # last: the branch moves once everything is recorded
    return json_response({"mergeCommitId": sha})


def _merge(repo: Repo, record: dict[str, Any]) -> tuple[dict[str, Any], list[str], str, str]:
    """The pull request's files merged onto its target branch, the paths in conflict, and both heads."""
    refs = repo.refs()
    pr_ref = f"refs/pr/{record['num']}"
    if record["base"] not in refs or pr_ref not in refs:
        raise EndpointError(404, f"The target branch {record['base']} no longer exists", code="RevisionNotFound")
    target, pr_head = refs[record["base"]], refs[pr_ref]
    base = repo.commit(record["baseSha"])["files"]
    ours, theirs = repo.commit(target)["files"], repo.commit(pr_head)["files"]
    merged, conflicts = dict(ours), []
    for path in sorted(set(base) | set(theirs)):
        if theirs.get(path) == base.get(path):
            continue  # the pull request did not touch it
        if ours.get(path) not in (base.get(path), theirs.get(path)):
            conflicts.append(path)
        elif path in theirs:
            merged[path] = theirs[path]
        else:
            merged.pop(path, None)
    return merged, conflicts, target, pr_head


def _diff(repo: Repo, record: dict[str, Any]) -> str:
    """A git-style diff of what the pull request changes since it was opened (text files inline, bounded)."""
    base = repo.commit(record["baseSha"])["files"]
    theirs = repo.commit(repo.refs().get(f"refs/pr/{record['num']}", record["baseSha"]))["files"]
    parts: list[str] = []
    size = 0
    for path in sorted(set(base) | set(theirs)):
        old, new = base.get(path), theirs.get(path)
        if old == new:
            continue
        part = [f"diff --git a/{path} b/{path}"]
        texts = [_text_of(repo, entry) for entry in (old, new)]
        if any(t is None for t in texts):
            part.append(f"Binary files a/{path} and b/{path} differ")
        else:
            a, b = (t.splitlines(keepends=True) for t in texts)  # type: ignore[union-attr]
            part.append("".join(difflib.unified_diff(a, b, f"a/{path}", f"b/{path}")).rstrip("\n"))
        text = "\n".join(part) + "\n"
        size += len(text)
        if size > _MAX_DIFF:
            parts.append("(diff truncated)\n")
            break
        parts.append(text)
    return "".join(parts)


def _text_of(repo: Repo, entry: dict[str, Any] | None) -> str | None:
    if entry is None:
        return ""
    if entry.get("lfs") or entry["size"] > _MAX_DIFF_FILE:
        return None
    data = repo.store.blobs.read(entry["sha256"])
    if b"\0" in data:
        return None
    return data.decode("utf-8", "replace")


_CHANGES = {"comment": _comment, "status": _status, "title": _title, "merge": _merge_endpoint}
