"""Write endpoints of the local Hub: repos, settings, branches, tags, the upload protocol and README validation.

An upload runs as `huggingface_hub.create_commit` drives it:

1. `POST /api/{type}s/{id}/preupload/{rev}` says, per file, whether it goes through LFS or inline as a regular file;
2. LFS files: `POST /{prefix}{id}.git/info/lfs/objects/batch` hands out an upload URL per missing object, the client
   `PUT`s the bytes there (checked against their sha256 and size) and calls the `verify` URL;
3. `POST /api/{type}s/{id}/commit/{rev}` sends an NDJSON body (a `header`, then `file`, `lfsFile`, `deletedFile`,
   `deletedFolder` lines) and the branch moves to the new commit, or not at all.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from typing import Any
from urllib.parse import unquote

from .cards import model_card_errors
from .protocol import (
    LOCAL_USER,
    URL_PREFIXES,
    Request,
    Response,
    check_path,
    file_response,
    front_matter,
    get_field,
    json_response,
    open_repo,
    open_repo_to_propose,
    repo_url,
)
from .store import DEFAULT_BRANCH, EndpointError, Repo, check_repo_id, file_entry, lfs_entry, parse_count

# Files the Hub would refuse as regular git blobs: large ones, binary ones, and these extensions.
LFS_THRESHOLD = 10 * 1024 * 1024
BINARY_EXTENSIONS = {".safetensors", ".bin", ".parquet", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".npy"}
BINARY_EXTENSIONS |= {".npz", ".arrow", ".pkl", ".pickle", ".zip", ".gz", ".tar", ".pb", ".tflite", ".model", ".ot"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_BAD_REF_RE = re.compile(r"(\.\.|[\s\x00-\x1f\x7f~^:?*\[\\]|^[/.-]|/$|\.lock$|^refs/|@\{)")


# Repos -----------------------------------------------------------------------------------------------------------
def _repo_from_body(req: Request, data: dict[str, Any]) -> tuple[str, str]:
    name = get_field(data, "name", str)
    if not name:
        raise EndpointError(400, "The request needs a repo 'name'")
    organization = get_field(data, "organization", str)
    namespace = organization or (req.user.name if req.user is not None else LOCAL_USER)
    repo_type = get_field(data, "type", str, "model")
    if repo_type not in URL_PREFIXES:
        raise EndpointError(400, f"Invalid repo type {repo_type[:50]!r}, expected one of {sorted(URL_PREFIXES)}")
    return repo_type, f"{namespace}/{name}"


def _private(data: dict[str, Any]) -> bool | None:
    if "visibility" in data:
        return get_field(data, "visibility", str) == "private"
    return get_field(data, "private", bool)


def create_repo(req: Request) -> Response:
    data = req.json()
    repo_type, repo_id = _repo_from_body(req, data)
    req.check_write(repo_id.split("/")[0], f"create a {repo_type}")
    url = repo_url(req, repo_type, repo_id)
    try:
        req.store.create(repo_type, repo_id, private=bool(_private(data)), sdk=get_field(data, "sdk", str))
    except EndpointError as err:
        if err.status == 409:  # The Hub's 409 carries the url, which `create_repo(exist_ok=True)` relies on.
            err.extra["url"] = url
        raise
    return json_response({"url": url, "name": repo_id, "id": repo_id})


def delete_repo(req: Request) -> Response:
    """Delete a repo, then the blobs it alone named: deleting every repo that used a file frees its disk space."""
    repo_type, repo_id = _repo_from_body(req, req.json())
    open_repo(req, repo_type, repo_id, write=True)
    named = req.store.delete(repo_type, repo_id)
    req.store.collect(named)
    return json_response({})


def duplicate_repo(req: Request, repo_type: str, repo_id: str) -> Response:
    """`POST /api/{type}s/{id}/duplicate` `{repository, visibility}`: a copy of its branches, tags and history."""
    open_repo(req, repo_type, repo_id)
    data = req.json()
    target = get_field(data, "repository", str, "")
    check_repo_id(target)
    req.check_write(target.split("/")[0], f"create a {repo_type}")
    visibility = get_field(data, "visibility", str)
    if visibility not in (None, "public", "private"):
        raise EndpointError(400, "'visibility' must be 'public' or 'private'")
    source = req.store.get(repo_type, repo_id)
    private = source.private if visibility is None else visibility == "private"
    url = repo_url(req, repo_type, target)
    try:
        with req.store.writing():  # a collection listing repos meanwhile must see the copy or its source whole
            req.store.duplicate(repo_type, repo_id, target, private=private)
    except EndpointError as err:
        if err.status == 409:  # `duplicate_repo(exist_ok=True)` reads the url of the 409
            err.extra["url"] = url
        raise
    return json_response({"url": url, "filesCopyPending": False})


def move_repo(req: Request) -> Response:
    """`POST /api/repos/move` `{fromRepo, toRepo, type}`: rename a repo or hand it to another namespace the token
    may write to."""
    data = req.json()
    repo_type = get_field(data, "type", str, "model")
    if repo_type not in URL_PREFIXES:
        raise EndpointError(400, f"Invalid repo type {repo_type[:50]!r}, expected one of {sorted(URL_PREFIXES)}")
    source, target = get_field(data, "fromRepo", str, ""), check_repo_id(get_field(data, "toRepo", str, ""))
    open_repo(req, repo_type, source, write=True)
    req.check_write(target.split("/")[0], f"create a {repo_type}")
    with req.store.writing():  # a collection must not miss the repo while it moves from one folder to another
        req.store.move(repo_type, source, target)
    return json_response({})


def super_squash(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    """`POST /api/{type}s/{id}/super-squash/{branch}` `{message}`: one commit instead of the branch's history; the
    blobs only the old history named are removed."""
    repo = open_repo(req, repo_type, repo_id, write=True)
    message = get_field(req.json(), "message", str, "") or "Super-squash"
    req.store.collect(repo.squash(unquote("/".join(segments)), message[:65536]))
    return json_response({})


def update_settings(req: Request, repo_type: str, repo_id: str) -> Response:
    repo = open_repo(req, repo_type, repo_id, write=True)
    data = req.json()
    changes: dict[str, Any] = {}
    private = _private(data)
    if private is not None:
        changes["private"] = private
    if "gated" in data:
        if data["gated"] not in (False, "auto", "manual"):
            raise EndpointError(400, "'gated' must be false, 'auto' or 'manual'")
        changes["gated"] = data["gated"]
    repo.update_meta(**changes)
    return json_response({})


# Branches and tags -----------------------------------------------------------------------------------------------
def _ref_name(segments: list[str]) -> str:
    name = unquote("/".join(segments))
    if not name or _BAD_REF_RE.search(name) or len(name) > 256:
        raise EndpointError(400, f"Invalid reference name: {name[:200]!r}")
    return name


def create_branch(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id, write=True)
    branch = _ref_name(segments)
    start = repo.resolve(get_field(req.json(), "startingPoint", str) or DEFAULT_BRANCH)
    repo.set_ref(f"refs/heads/{branch}", start)
    return json_response({})


def delete_branch(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    open_repo(req, repo_type, repo_id, write=True).delete_ref(f"refs/heads/{unquote('/'.join(segments))}")
    return json_response({})


def create_tag(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    repo = open_repo(req, repo_type, repo_id, write=True)
    sha = repo.resolve(unquote("/".join(segments)))
    tag = get_field(req.json(), "tag", str, "")
    repo.set_ref(f"refs/tags/{_ref_name([tag])}", sha)
    return json_response({})


def delete_tag(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    open_repo(req, repo_type, repo_id, write=True).delete_ref(f"refs/tags/{unquote('/'.join(segments))}")
    return json_response({})


# Upload protocol -------------------------------------------------------------------------------------------------
def preupload(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    rev = unquote("/".join(segments))
    repo = open_repo_to_propose(req, repo_type, repo_id, rev, create_pr=req.flag("create_pr"))
    sha = repo.resolve(rev)
    files = repo.commit(sha)["files"]
    attributes = files.get(".gitattributes")
    patterns = _lfs_patterns(req.store.blobs.read(attributes["sha256"]).decode() if attributes else "")
    answers = []
    for item in get_field(req.json(), "files", list, []):
        if not isinstance(item, dict):
            raise EndpointError(400, "'files' must be a list of objects")
        path = check_path(get_field(item, "path", str, ""))
        try:
            sample = base64.b64decode(get_field(item, "sample", str, ""), validate=True)
        except binascii.Error as err:
            raise EndpointError(400, f"Invalid base64 'sample' for {path!r}: {err}") from err
        lfs = _wants_lfs(path, get_field(item, "size", int, 0), sample, patterns)
        # The oid of the file already there lets the client skip unchanged files (sha256 for LFS, git sha1 else).
        existing, oid = files.get(path), None
        if existing is not None and bool(existing.get("lfs")) == lfs:
            oid = existing["sha256"] if lfs else existing["oid"]
        answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
    return json_response({"files": answers, "commitOid": sha})


def _lfs_patterns(gitattributes: str) -> list[str]:
    return [line.split()[0] for line in gitattributes.splitlines() if "filter=lfs" in line.split()[1:]]


def _wants_lfs(path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
    if size == 0:  # The client commits empty files as regular whatever we say; say the same.
        return False
    if size > LFS_THRESHOLD or b"\0" in sample:
        return True
    name = path.rsplit("/", 1)[-1]
    if any(name.endswith(ext) for ext in BINARY_EXTENSIONS):
        return True
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


def _lfs_href(req: Request, operation: str, repo_key: str, oid: str, size: int, action: str = "") -> str:
    return f"{req.base_url}/_lfs/{oid}/{size}{action}?{req.access.sign(operation, repo_key, oid, size)}"


def lfs_batch(req: Request, repo_type: str, repo_id: str) -> Response:
    repo = open_repo(req, repo_type, repo_id)
    data = req.json()
    operation = data.get("operation")
    if operation not in ("upload", "download"):
        raise EndpointError(400, f"Unsupported LFS operation {str(operation)[:50]!r}: expected 'upload' or 'download'")
    if operation == "upload":  # a reader may upload for a pull request (no ref, or a refs/pr/N of theirs)
        ref = data.get("ref")
        name = ref.get("name") if isinstance(ref, dict) else None
        open_repo_to_propose(req, repo_type, repo_id, name if isinstance(name, str) else None, create_pr=False)
    repo_key = f"{repo_type}/{repo_id}"
    objects = []
    for obj in get_field(data, "objects", list, []):
        oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
        if not isinstance(oid, str) or not _SHA256_RE.match(oid) or type(size) is not int or size < 0:
            oid, size = str(oid)[:64], size if type(size) is int else 0
            objects.append({"oid": oid, "size": size, "error": _lfs_error(422, oid)})
            continue
        # Only what this repo holds counts as present: blobs are shared by every repo of the store.
        present = req.store.blobs.has(oid, size) and repo.holds_blob(oid)
        if operation == "upload" and not present:
            actions = {
                "upload": {"href": _lfs_href(req, "upload", repo_key, oid, size)},
                "verify": {"href": _lfs_href(req, "upload", repo_key, oid, size, "/verify")},
            }
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        elif operation == "upload":  # Already stored: no action, the client skips the upload.
            objects.append({"oid": oid, "size": size})
        elif present:
            href = _lfs_href(req, "download", repo_key, oid, size)
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {"download": {"href": href}}})
        else:
            objects.append({"oid": oid, "size": size, "error": _lfs_error(404, oid)})
    return json_response(
        {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
    )


def _lfs_error(code: int, oid: str) -> dict[str, Any]:
    message = "Object does not exist" if code == 404 else f"Invalid object: oid '{oid}' must be 64 hex, size >= 0"
    return {"code": code, "message": message}


def _signed_object(req: Request, operation: str, oid: str, size: str) -> tuple[Repo, str, int]:
    """The repo, sha256 and size a signed LFS URL names; 403 without a valid signature (see `AccessPolicy.sign`)."""
    length = parse_count(size)
    if not _SHA256_RE.match(oid) or length is None:
        raise EndpointError(404, f"No such LFS object: {oid[:64]}/{size[:20]}")
    repo_type, _, repo_id = req.access.check_signature(req.query, operation, oid, length).partition("/")
    return req.store.get(repo_type, repo_id), oid, length


def lfs_put(req: Request, oid: str, size: str) -> Response:
    """Receive an LFS object, streamed to disk, at an upload URL the batch API signed for one repo and object."""
    repo, sha256, length = _signed_object(req, "upload", oid, size)
    declared = req.headers.get("Content-Length")
    if declared is not None and parse_count(declared) not in (None, length):
        raise EndpointError(400, f"The upload announces {declared} bytes, the object has {length}")
    with req.store.writing():  # a collection running now must not take the blob before its grant is written
        req.store.blobs.put_stream(req.read, sha256=sha256, size=length)  # checked even if stored: proof of possession
        repo.grant_blob(sha256)
    return Response(200, headers={"ETag": f'"{sha256}"'})


def lfs_verify(req: Request, oid: str, size: str) -> Response:
    repo, sha256, length = _signed_object(req, "upload", oid, size)
    if not req.store.blobs.has(sha256, length) or not repo.holds_blob(sha256):
        raise EndpointError(404, f"LFS object {sha256} ({length} bytes) was not uploaded")
    return json_response({})


def lfs_get(req: Request, oid: str, size: str) -> Response:
    repo, sha256, length = _signed_object(req, "download", oid, size)
    if not req.store.blobs.has(sha256, length) or not repo.holds_blob(sha256):
        raise EndpointError(404, f"LFS object {sha256} ({length} bytes) does not exist")
    return file_response(req, req.store.blobs.path(sha256), length, {"ETag": f'"{sha256}"'})


def commit(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    create_pr = req.flag("create_pr")
    repo = open_repo_to_propose(req, repo_type, repo_id, unquote("/".join(segments)), create_pr=create_pr)
    with req.store.writing():  # from the first blob stored to the branch moved: no collection in between
        header, operations = _parse_commit(req, repo)
        summary = get_field(header, "summary", str, "")
        sha, ref = repo.apply(
            unquote("/".join(segments)),
            operations,
            title=summary,
            message=get_field(header, "description", str, ""),
            parent=get_field(header, "parentCommit", str),
            create_pr=create_pr,
            author=req.user.name if req.user is not None else LOCAL_USER,
        )
    url = repo_url(req, repo_type, repo_id)
    pr_url = f"{url}/discussions/{ref.rsplit('/', 1)[1]}" if create_pr else None
    return json_response(
        {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{url}/commit/{sha}",
            "commitMessage": summary,
            "hookOutput": "",
            "pullRequestUrl": pr_url,
        }
    )


def _parse_commit(req: Request, repo: Repo) -> tuple[dict[str, Any], list[tuple[str, str, Any]]]:
    """Read the NDJSON commit body, streamed line by line, into its header and `Repo.apply` operations; every
    problem is a 400/422 (a line past `max_json_bytes` a 413), and a regular file is stored as soon as it is read."""
    header: dict[str, Any] | None = None
    operations: list[tuple[str, str, Any]] = []
    for number, line in enumerate(req.lines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise EndpointError(400, f"Invalid commit payload on line {number}: {str(err)[:200]}") from err
        if not isinstance(value, dict):
            raise EndpointError(400, f"Invalid commit payload on line {number}: 'value' must be an object")
        if key == "header":
            header = value
        elif key == "file":
            path = check_path(get_field(value, "path", str, ""))
            content = get_field(value, "content", str, "")
            base64_encoded = value.get("encoding") == "base64"
            try:
                data = base64.b64decode(content, validate=True) if base64_encoded else content.encode()
            except (binascii.Error, UnicodeEncodeError) as err:
                raise EndpointError(400, f"Invalid content for {path!r}: {err}") from err
            req.store.blobs.put_bytes(data)  # Content-addressed: harmless if the commit fails later.
            operations.append(("add", path, file_entry(data, lfs=False)))
        elif key == "lfsFile":
            path, oid = check_path(get_field(value, "path", str, "")), get_field(value, "oid", str, "")
            announced = get_field(value, "size", int)
            # The object must have been uploaded to this repo (or be in its history): a sha256 alone proves nothing.
            if not _SHA256_RE.match(oid) or not req.store.blobs.has(oid) or not repo.holds_blob(oid):
                raise EndpointError(
                    422, f"LFS object {oid[:64]} for {path!r} was never uploaded: upload it through the LFS batch API"
                )
            size = req.store.blobs.path(oid).stat().st_size
            if announced not in (None, size):
                raise EndpointError(422, f"LFS object {oid} for {path!r} has {size} bytes, not {announced}")
            operations.append(("add", path, lfs_entry(oid, size)))
        elif key in ("deletedFile", "deletedFolder"):
            path = check_path(get_field(value, "path", str, "").rstrip("/"))
            operations.append(("delete_file" if key == "deletedFile" else "delete_folder", path, None))
        else:
            raise EndpointError(400, f"Unknown commit operation {str(key)[:50]!r} on line {number}")
    if header is None or not get_field(header, "summary", str):
        raise EndpointError(400, "The commit needs a 'header' line with a non-empty 'summary'")
    return header, operations


def validate_yaml(req: Request) -> Response:
    """`POST /api/validate-yaml`: 200 when the README's front matter is a YAML mapping that (for a model card) passes
    the Hub's metadata checks (`hub_cards`), else 400 listing every problem."""
    data = req.json()
    try:
        metadata = front_matter(str(data.get("content", "")))
    except ValueError as err:
        raise EndpointError(400, str(err), extra={"errors": [{"message": str(err)}]}) from err
    errors = model_card_errors(metadata) if metadata and data.get("repoType", "model") == "model" else []
    if errors:
        raise EndpointError(400, "; ".join(errors), extra={"errors": [{"message": e} for e in errors]})
    return json_response({"errors": [], "warnings": []})
