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

from hfsoup.testing.hub_cards import model_card_errors
from hfsoup.testing.hub_protocol import (
    LOCAL_USER,
    Request,
    Response,
    card_metadata,
    check_path,
    file_response,
    json_response,
    open_repo,
    repo_url,
)
from hfsoup.testing.hub_store import DEFAULT_BRANCH, EndpointError, file_entry, lfs_entry

# Files the Hub would refuse as regular git blobs: large ones, binary ones, and these extensions.
LFS_THRESHOLD = 10 * 1024 * 1024
BINARY_EXTENSIONS = {".safetensors", ".bin", ".parquet", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".npy"}
BINARY_EXTENSIONS |= {".npz", ".arrow", ".pkl", ".pickle", ".zip", ".gz", ".tar", ".pb", ".tflite", ".model", ".ot"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_BAD_REF_RE = re.compile(r"(\.\.|[\s~^:?*\[\\]|^[/.-]|/$|\.lock$|^refs/|@\{)")


# Repos -----------------------------------------------------------------------------------------------------------
def _repo_from_body(data: dict[str, Any]) -> tuple[str, str]:
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise EndpointError(400, "The request needs a repo 'name'")
    return data.get("type") or "model", f"{data.get('organization') or LOCAL_USER}/{name}"


def create_repo(req: Request) -> Response:
    req.check_write()
    data = req.json()
    repo_type, repo_id = _repo_from_body(data)
    url = repo_url(req, repo_type, repo_id)
    private = data["visibility"] == "private" if "visibility" in data else bool(data.get("private"))
    try:
        req.store.create(repo_type, repo_id, private=private, sdk=data.get("sdk"))
    except EndpointError as err:
        if err.status == 409:  # The Hub's 409 carries the url, which `create_repo(exist_ok=True)` relies on.
            err.extra["url"] = url
        raise
    return json_response({"url": url, "name": repo_id, "id": repo_id})


def delete_repo(req: Request) -> Response:
    req.check_write()
    repo_type, repo_id = _repo_from_body(req.json())
    open_repo(req, repo_type, repo_id)
    req.store.delete(repo_type, repo_id)
    return json_response({})


def update_settings(req: Request, repo_type: str, repo_id: str) -> Response:
    req.check_write()
    repo = open_repo(req, repo_type, repo_id)
    data = req.json()
    changes: dict[str, Any] = {}
    if "visibility" in data or "private" in data:
        changes["private"] = data["visibility"] == "private" if "visibility" in data else bool(data["private"])
    if "gated" in data:
        changes["gated"] = data["gated"]
    repo.update_meta(**changes)
    return json_response({})


# Branches and tags -----------------------------------------------------------------------------------------------
def _ref_name(segments: list[str]) -> str:
    name = unquote("/".join(segments))
    if not name or _BAD_REF_RE.search(name):
        raise EndpointError(400, f"Invalid reference name: '{name}'")
    return name


def create_branch(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    req.check_write()
    repo = open_repo(req, repo_type, repo_id)
    branch = _ref_name(segments)
    start = repo.resolve(req.json().get("startingPoint") or DEFAULT_BRANCH)
    repo.set_ref(f"refs/heads/{branch}", start)
    return json_response({})


def delete_branch(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    req.check_write()
    open_repo(req, repo_type, repo_id).delete_ref(f"refs/heads/{unquote('/'.join(segments))}")
    return json_response({})


def create_tag(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    req.check_write()
    repo = open_repo(req, repo_type, repo_id)
    sha = repo.resolve(unquote("/".join(segments)))
    tag = req.json().get("tag")
    repo.set_ref(f"refs/tags/{_ref_name([str(tag or '')])}", sha)
    return json_response({})


def delete_tag(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    req.check_write()
    open_repo(req, repo_type, repo_id).delete_ref(f"refs/tags/{unquote('/'.join(segments))}")
    return json_response({})


# Upload protocol -------------------------------------------------------------------------------------------------
def preupload(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    req.check_write()
    repo = open_repo(req, repo_type, repo_id)
    sha = repo.resolve(unquote("/".join(segments)))
    files = repo.commit(sha)["files"]
    attributes = files.get(".gitattributes")
    patterns = _lfs_patterns(req.store.blobs.read(attributes["sha256"]).decode() if attributes else "")
    answers = []
    for item in req.json().get("files", []):
        path = check_path(str(item.get("path", "")))
        sample = base64.b64decode(item.get("sample") or "")
        lfs = _wants_lfs(path, int(item.get("size") or 0), sample, patterns)
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


def _lfs_href(req: Request, oid: str, size: int) -> str:
    return f"{req.base_url}/_lfs/{oid}/{size}"


def lfs_batch(req: Request, repo_type: str, repo_id: str) -> Response:
    open_repo(req, repo_type, repo_id)
    data = req.json()
    operation = data.get("operation")
    if operation not in ("upload", "download"):
        raise EndpointError(400, f"Unsupported LFS operation {operation!r}: expected 'upload' or 'download'")
    if operation == "upload":
        req.check_write()
    objects = []
    for obj in data.get("objects", []):
        oid, size = str(obj.get("oid", "")), obj.get("size")
        if not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
            objects.append({"oid": oid, "size": size if isinstance(size, int) else 0, "error": _lfs_error(422, oid)})
            continue
        present = req.store.blobs.has(oid, size)
        href = _lfs_href(req, oid, size)
        if operation == "upload" and not present:
            actions = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        elif operation == "upload":  # Already stored: no action, the client skips the upload.
            objects.append({"oid": oid, "size": size})
        elif present:
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {"download": {"href": href}}})
        else:
            objects.append({"oid": oid, "size": size, "error": _lfs_error(404, oid)})
    return json_response(
        {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
    )


def _lfs_error(code: int, oid: str) -> dict[str, Any]:
    message = "Object does not exist" if code == 404 else f"Invalid object: oid '{oid}' must be 64 hex, size >= 0"
    return {"code": code, "message": message}


def _lfs_object(oid: str, size: str) -> tuple[str, int]:
    if not _SHA256_RE.match(oid) or not size.isdigit():
        raise EndpointError(404, f"No such LFS object: {oid}/{size}")
    return oid, int(size)


def lfs_put(req: Request, oid: str, size: str) -> Response:
    """Receive an LFS object, streamed to disk; the upload URL itself is the credential, as with signed S3 URLs."""
    sha256, length = _lfs_object(oid, size)
    if not req.store.blobs.has(sha256, length):
        req.store.blobs.put_stream(req.read, sha256=sha256, size=length)
    return Response(200, headers={"ETag": f'"{sha256}"'})


def lfs_verify(req: Request, oid: str, size: str) -> Response:
    sha256, length = _lfs_object(oid, size)
    if not req.store.blobs.has(sha256, length):
        raise EndpointError(404, f"LFS object {sha256} ({length} bytes) was not uploaded")
    return json_response({})


def lfs_get(req: Request, oid: str, size: str) -> Response:
    sha256, length = _lfs_object(oid, size)
    if not req.store.blobs.has(sha256, length):
        raise EndpointError(404, f"LFS object {sha256} ({length} bytes) does not exist")
    return file_response(req, req.store.blobs.path(sha256), length, {"ETag": f'"{sha256}"'})


def commit(req: Request, repo_type: str, repo_id: str, segments: list[str]) -> Response:
    req.check_write()
    repo = open_repo(req, repo_type, repo_id)
    header, operations = _parse_commit(req)
    create_pr = req.flag("create_pr")
    sha, ref = repo.apply(
        unquote("/".join(segments)),
        operations,
        title=header["summary"],
        message=str(header.get("description") or ""),
        parent=header.get("parentCommit"),
        create_pr=create_pr,
    )
    url = repo_url(req, repo_type, repo_id)
    pr_url = f"{url}/discussions/{ref.rsplit('/', 1)[1]}" if create_pr else None
    return json_response(
        {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{url}/commit/{sha}",
            "commitMessage": header["summary"],
            "hookOutput": "",
            "pullRequestUrl": pr_url,
        }
    )


def _parse_commit(req: Request) -> tuple[dict[str, Any], list[tuple[str, str, Any]]]:
    """Read the NDJSON commit body into its header and `Repo.apply` operations; every problem is a 400/422."""
    header: dict[str, Any] | None = None
    operations: list[tuple[str, str, Any]] = []
    for number, line in enumerate(req.body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as err:
            raise EndpointError(400, f"Invalid commit payload on line {number}: {err}") from err
        if key == "header":
            header = value
        elif key == "file":
            path = check_path(str(value.get("path", "")))
            try:
                content = value.get("content", "")
                data = (
                    base64.b64decode(content, validate=True) if value.get("encoding") == "base64" else content.encode()
                )
            except (binascii.Error, AttributeError) as err:
                raise EndpointError(400, f"Invalid content for '{path}': {err}") from err
            req.store.blobs.put_bytes(data)  # Content-addressed: harmless if the commit fails later.
            operations.append(("add", path, file_entry(data, lfs=False)))
        elif key == "lfsFile":
            path, oid = check_path(str(value.get("path", ""))), str(value.get("oid", ""))
            if not _SHA256_RE.match(oid) or not req.store.blobs.has(oid):
                raise EndpointError(
                    422, f"LFS object {oid} for '{path}' was never uploaded: upload it through the LFS batch API first"
                )
            size = req.store.blobs.path(oid).stat().st_size
            if value.get("size") not in (None, size):
                raise EndpointError(422, f"LFS object {oid} for '{path}' has {size} bytes, not {value['size']}")
            operations.append(("add", path, lfs_entry(oid, size)))
        elif key in ("deletedFile", "deletedFolder"):
            path = check_path(str(value.get("path", "")).rstrip("/"))
            operations.append(("delete_file" if key == "deletedFile" else "delete_folder", path, None))
        else:
            raise EndpointError(400, f"Unknown commit operation '{key}' on line {number}")
    if not isinstance(header, dict) or not header.get("summary"):
        raise EndpointError(400, "The commit needs a 'header' line with a non-empty 'summary'")
    return header, operations


def validate_yaml(req: Request) -> Response:
    """`POST /api/validate-yaml`: 200 when the README's front matter is a YAML mapping that (for a model card) passes
    the Hub's metadata checks (`hub_cards`), else 400 listing every problem."""
    data = req.json()
    try:
        metadata = card_metadata(str(data.get("content", "")))
    except ValueError as err:
        raise EndpointError(400, str(err), extra={"errors": [{"message": str(err)}]}) from err
    errors = model_card_errors(metadata) if metadata and data.get("repoType", "model") == "model" else []
    if errors:
        raise EndpointError(400, "; ".join(errors), extra={"errors": [{"message": e} for e in errors]})
    return json_response({"errors": [], "warnings": []})
