"""The request and response model the local Hub's endpoints share, and the helpers they all use.

An endpoint is a function `(Request, *args) -> Response`. It raises `EndpointError` for anything the client should see
as a Hub error; `hub_server` turns that into a JSON `{"error": ...}` body with the Hub's `X-Error-Code` header.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .access import ADMIN, AccessPolicy, HubUser
from .store import EndpointError, HubStore, Repo

URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
#: The user of the permissive mode (`AccessPolicy(anonymous_writes=True)`), and the namespace of its anonymous repos.
LOCAL_USER = ADMIN.name
_RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")  # ASCII, bounded: int() takes both
# Control characters (NUL, newline...) and backslashes: a path holding one means something else to some tool.
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Request:
    """One HTTP request, as the endpoints see it."""

    method: str
    path: str  # raw (still percent-encoded) path, without the query string
    query: dict[str, list[str]]
    headers: Message
    store: HubStore
    base_url: str  # scheme://host:port the client used, for URLs we hand back
    token: str | None = None
    body: bytes = b""
    #: Reads the request body incrementally (streaming endpoints only); returns b"" at the end.
    read: Callable[[int], bytes] = lambda n: b""
    page_size: int = 1000
    access: AccessPolicy = field(default_factory=AccessPolicy)
    #: Who sent the request (None: no token), from `access.user_for(token)`.
    user: HubUser | None = None
    #: The most bytes a JSON body, or one line of a commit's NDJSON, may hold.
    max_json_bytes: int = 16 << 20

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name) or self.query.get(f"{name}[]")
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("1", "true", "yes")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body: `{}`); anything else is a 400."""
        try:
            data = json.loads(self.body or b"{}")
        except (ValueError, RecursionError) as err:
            raise EndpointError(400, f"Request body is not valid JSON: {str(err)[:200]}") from err
        if not isinstance(data, dict):
            raise EndpointError(400, f"Request body must be a JSON object, got {type(data).__name__}")
        return data

    def lines(self) -> Iterator[bytes]:
        """The (streamed) body split at newlines; a line longer than `max_json_bytes` is a 413."""
        buffer = bytearray()
        while chunk := self.read(1 << 20):
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                yield bytes(buffer[:end])
                del buffer[: end + 1]
            if len(buffer) > self.max_json_bytes:
                raise EndpointError(413, f"A line of the request body is over {self.max_json_bytes} bytes")
        if buffer:
            yield bytes(buffer)

    def check_write(self, namespace: str, what: str) -> None:
        """Refuse the request unless its token may `what` (e.g. "update this model") under `namespace`."""
        self.access.check_write(self.user, namespace, what)


def get_field(data: dict[str, Any], key: str, kinds: type | tuple[type, ...], default: Any = None) -> Any:
    """`data[key]` if it has one of the JSON types `kinds` (absent or null: `default`), else a 400 naming the field."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        names = " or ".join(k.__name__ for k in _as_tuple(kinds))
        raise EndpointError(400, f"'{key}' must be a {names}, got {type(value).__name__}")
    return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


@dataclass
class Response:
    """What an endpoint answers: a status, headers, and either `body` or a slice of a file on disk."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: (path, start, length): stream this slice of a file instead of `body`.
    file: tuple[Path, int, int] | None = None
    #: Fault injection (`hub_faults`): send only this many body bytes, then drop the connection.
    cut_after: int | None = None

    @property
    def length(self) -> int:
        return self.file[2] if self.file is not None else len(self.body)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data).encode()
    return Response(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


def error_response(error: EndpointError) -> Response:
    headers = dict(error.headers)
    if error.code:
        headers["X-Error-Code"] = error.code
    # Header values must be latin-1 and one line: keep the header short, the body carries the full message.
    # Control characters (a NUL or a newline from a path the client sent) would break the header or inject another.
    first_line = _CONTROL_CHARS.sub("?", (error.message.splitlines() or [""])[0])
    headers["X-Error-Message"] = first_line.encode("latin-1", "replace").decode("latin-1")[:500]
    return json_response({"error": error.message, **error.extra}, error.status, headers)


def open_repo(req: Request, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
    """The repo, if this request may see it (and, with `write`, change it).

    A private repo the caller may not read looks missing, as on the Hub: 404 `RepoNotFound`, or 401 without a
    token. A readable repo of another namespace is a 403 for writes.
    """
    try:
        repo = req.store.get(repo_type, repo_id)
    except EndpointError as err:
        if err.code == "RepoNotFound" and req.user is None:  # a 404 would tell a private repo from a missing one
            err.status = 401
        raise
    namespace = repo_id.split("/")[0]
    if not req.access.may_read(req.user, namespace, repo.private):
        raise EndpointError(401 if req.user is None else 404, "Repository not found", code="RepoNotFound")
    if write:
        req.check_write(namespace, f"update this {repo_type}")
    return repo


def open_repo_to_propose(req: Request, repo_type: str, repo_id: str, rev: str | None, *, create_pr: bool) -> Repo:
    """The repo, if this request may commit to `rev` of it: its owners may; so may, as on the Hub, any reader with a
    token who opens a pull request (`create_pr`), or who commits to `refs/pr/N` of an open pull request of theirs.
    `rev` None: a reader's LFS upload that names no ref (what `create_commit(create_pr=True)` sends)."""
    repo = open_repo(req, repo_type, repo_id)
    try:
        req.check_write(repo_id.split("/")[0], f"update this {repo_type}")
    except EndpointError:
        if req.user is None or not (create_pr or rev is None or _own_open_pr(repo, rev, req.user.name)):
            raise
    return repo


def _own_open_pr(repo: Repo, rev: str, user: str) -> bool:
    number = rev.removeprefix("refs/pr/")
    if not rev.startswith("refs/pr/") or not number.isdigit() or len(number) > 9:
        return False
    try:
        record = repo.discussion(int(number))
    except EndpointError:
        return False
    return record["author"] == user and record["status"] == "open"


def repo_url(req: Request, repo_type: str, repo_id: str) -> str:
    """The repo's web URL as the Hub spells it (`RepoUrl` and `CommitInfo` parse the type and id back out of it)."""
    return f"{req.base_url}/{URL_PREFIXES[repo_type]}{repo_id}"


def split_rev(repo: Repo, segments: list[str]) -> tuple[str, str, str]:
    """Split `segments` (raw URL segments) into (revision, commit SHA, path in repo).

    Clients quote the revision as one segment (`refs%2Fpr%2F1`), but a revision may also arrive with literal
    slashes (`refs/pr/1/config.json`); the shortest prefix that names a revision wins.
    """
    if not segments or not segments[0]:
        raise EndpointError(404, "Invalid rev id: (empty)", code="RevisionNotFound")
    for k in range(1, len(segments) + 1):
        rev = unquote("/".join(segments[:k]))
        try:
            sha = repo.resolve(rev)
        except EndpointError:
            continue
        return rev, sha, unquote("/".join(segments[k:])).strip("/")
    raise EndpointError(404, f"Invalid rev id: {unquote(segments[0])}", code="RevisionNotFound")


def check_path(path: str) -> str:
    """A path in a repo as the Hub accepts it: relative, no empty, `.` or `..` segments, nothing under `.git/`,
    no control characters (NUL, newline) and no backslash."""
    parts = path.split("/")
    bad = not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git"
    if bad or _BAD_PATH_CHARS.search(path) or len(path) > 4096:
        raise EndpointError(400, f"Invalid path in repo: {path[:200]!r}")
    return path


def file_response(req: Request, path: Path, size: int, headers: dict[str, str], *, name: str = "") -> Response:
    """Serve a whole file, or the byte range the client asked for (206, or 416 when it lies past the end)."""
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream",
        **headers,
    }
    match = _RANGE_RE.match(req.headers.get("Range", "").strip())
    if match is None:  # No range, or one we do not support (several ranges): the whole file is a valid answer.
        return Response(200, headers=headers, file=(path, 0, size))
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    elif last:  # "bytes=-N": the last N bytes.
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = 0, -1
    if start >= size or end < start:
        return Response(416, headers={**headers, "Content-Range": f"bytes */{size}"})
    return Response(
        206, headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"}, file=(path, start, end - start + 1)
    )


def front_matter(text: str) -> dict[str, Any] | None:
    """The YAML front matter of a README, parsed; None without front matter; raises ValueError when it is invalid."""
    match = re.match(r"^---[ \t]*\r?\n(.*?)^---[ \t]*$", text, re.DOTALL | re.MULTILINE)
    if match is None:
        return None
    try:
        import yaml

        from ..io import safeyaml
    except ImportError:  # PyYAML is a project dependency; without it we simply omit the card data.
        return None
    try:
        data = safeyaml.load(match.group(1))  # bounded: a few aliases must not expand into gigabytes of model_info
    except yaml.YAMLError as err:
        raise ValueError(f"Invalid YAML in the README front matter: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"The README front matter must be a YAML mapping, got {type(data).__name__}")
    return data
