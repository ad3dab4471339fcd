"""File-backed storage for the local Hub: repos, branches, tags, commits and content-addressed blobs.

Everything lives under one root folder so that a server restarted on the same root serves the same repos:

```
root/
  blobs/ab/ab12...          file contents, named by their sha256 (regular and LFS files alike)
  repos/models/org/name/
    repo.json               id, type, visibility, creation date
    refs.json               {"refs/heads/main": sha, "refs/tags/v1": sha, "refs/pr/1": sha}
    commits/<sha>.json      parents, message, date and the full file table of the commit
```

Every file is written to a temporary name and `os.replace`d into place, so a crash never leaves a half blob or a
torn JSON file. A commit writes its commit file first and moves the branch last: a failed commit leaves the branch
where it was. Commits to one repo are serialized by a per-repo lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
# Namespaces and names as the Hub accepts them; this also keeps every id inside `root`.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?$")
_HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")
_CHUNK = 1 << 20
_COMMIT_CACHE_SIZE = 256

# What a new repo on the Hub starts with, abridged: the patterns that decide which files go to LFS.
_LFS_EXTENSIONS = (
    "7z arrow bin bz2 ckpt ftz gz h5 joblib mlmodel model msgpack npy npz onnx ot parquet pb pickle pkl pt pth"
)
_LFS_PATTERNS = [f"*.{ext}" for ext in f"{_LFS_EXTENSIONS} rar safetensors tar tflite tgz wasm xz zip zst".split()]
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in [*_LFS_PATTERNS, "*.lfs.*", "*.tar.*", "saved_model/**/*", "*tfevents*"]
)


class EndpointError(Exception):
    """An error the server answers with: an HTTP status, a Hub-like message and the Hub's `X-Error-Code`, if any.

    The `code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) is what `huggingface_hub` turns into
    `RepositoryNotFoundError`, `RevisionNotFoundError` and `EntryNotFoundError`. `headers` go on the response
    (e.g. `X-Repo-Commit` on a missing file) and `extra` into its JSON body (e.g. the `url` of an existing repo).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob holding `data`, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in git for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def utc_now() -> str:
    """The current time in the one format `huggingface_hub.utils.parse_datetime` expects."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_COUNT = re.compile(r"[0-9]{1,19}")


def parse_count(text: str) -> int | None:
    """A byte count, size, offset or time in a request, as an int; None unless it is 1-19 ASCII digits. Not
    `str.isdigit()`: it takes "²" (which `int` refuses) and 5,000 digits (past `int`'s limit), each a 500."""
    return int(text) if _COUNT.fullmatch(text) else None


def check_namespace(name: str) -> bool:
    """Whether `name` is a user, organization or repo name the Hub accepts (letters, digits, `-_.`, no `..`)."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None and ".." not in name


def check_repo_id(repo_id: str) -> str:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(check_namespace(p) for p in parts):
        raise EndpointError(
            400, f"Invalid repo id {repo_id[:200]!r}: expected 'namespace/name' with letters, digits, '-_.'"
        )
    return repo_id


def file_entry(data: bytes, *, lfs: bool) -> dict[str, Any]:
    """The row a commit's file table holds for `data` (stored as a regular git blob or through LFS)."""
    sha256 = hashlib.sha256(data).hexdigest()
    return lfs_entry(sha256, len(data)) if lfs else {"sha256": sha256, "size": len(data), "oid": git_blob_oid(data)}


def lfs_entry(sha256: str, size: int) -> dict[str, Any]:
    return {"sha256": sha256, "size": size, "oid": git_blob_oid(lfs_pointer(sha256, size)), "lfs": True}


class BlobStore:
    """File contents named by their sha256, shared by every repo of the store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        path = self.path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256):
            write_atomic(self.path(sha256), data)
        return sha256

    def clean_orphans(self) -> int:
        """Delete the temporary files of uploads a crash interrupted; the number removed. Only while no other
        server uses this store (`HubStore` makes sure), or its uploads in flight would go too."""
        removed = 0
        for pattern in (".upload-*", "*/.tmp-*"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def put_stream(self, read: Callable[[int], bytes], *, sha256: str, size: int) -> None:
        """Store the bytes `read` yields (until it returns b"") if they hash to `sha256` and number `size`.

        The bytes are checked even when the blob is already stored: an upload is how a client proves it holds the
        content, before a repo of its own may name it (see `Repo.holds_blob`).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        digest, received = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := read(_CHUNK):
                    digest.update(chunk)
                    received += len(chunk)
                    f.write(chunk)
                    if received > size:  # never write more than announced to disk
                        break
            if received != size or digest.hexdigest() != sha256:
                raise EndpointError(
                    400,
                    f"LFS object does not match its announced oid/size: expected sha256 {sha256} and {size} bytes,"
                    f" received sha256 {digest.hexdigest()} and {received} bytes",
                )
            self.path(sha256).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, self.path(sha256))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()


class Repo:
    """One repository: its metadata, refs and commits on disk. Obtain it from `HubStore.get`."""

    def __init__(self, store: HubStore, repo_type: str, repo_id: str) -> None:
        self.store = store
        self.type = repo_type
        self.id = repo_id
        self.dir = store.root / "repos" / f"{repo_type}s" / repo_id
        self.lock = store.lock_for(self.dir)

    # Metadata and refs -------------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "repo.json").read_text())

    def update_meta(self, **changes: Any) -> None:
        with self.lock:
            write_atomic(self.dir / "repo.json", json.dumps({**self.meta, **changes}, indent=1).encode())

    @property
    def private(self) -> bool:
        return bool(self.meta.get("private"))

    def refs(self) -> dict[str, str]:
        try:
            return json.loads((self.dir / "refs.json").read_text())
        except FileNotFoundError:  # deleted while this request was running
            raise EndpointError(404, "Repository not found", code="RepoNotFound") from None

    def _write_refs(self, refs: dict[str, str]) -> None:
        write_atomic(self.dir / "refs.json", json.dumps(refs, indent=1, sort_keys=True).encode())

    def resolve(self, rev: str) -> str:
        """The commit SHA `rev` (branch, tag, `refs/...`, full or unambiguous short SHA) points to."""
        refs = self.refs()
        for ref in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}"):
            if ref.startswith("refs/") and ref in refs:
                return refs[ref]
        if _HEX_RE.match(rev):
            if len(rev) == 40 and (self.dir / "commits" / f"{rev}.json").is_file():
                return rev
            matches = [p.stem for p in (self.dir / "commits").glob(f"{rev}*.json")] if len(rev) < 40 else []
            if len(matches) == 1:
                return matches[0]
        raise EndpointError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")

    def branch_ref(self, rev: str) -> str:
        """The ref a commit to `rev` moves: a branch or a pull request, never a tag or a bare SHA."""
        refs = self.refs()
        for ref in (f"refs/heads/{rev}", rev):
            if ref.startswith(("refs/heads/", "refs/pr/")) and ref in refs:
                return ref
        if f"refs/tags/{rev}" in refs or _HEX_RE.match(rev):
            raise EndpointError(400, f"Invalid rev id: {rev} (commits go to a branch, not to a tag or a commit)")
        raise EndpointError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")

    def set_ref(self, ref: str, sha: str, *, exist_ok: bool = False) -> None:
        with self.lock:
            refs = self.refs()
            if ref in refs and not exist_ok:
                raise EndpointError(409, f"Reference already exists: {ref}")
            self._write_refs({**refs, ref: sha})

    def delete_ref(self, ref: str) -> None:
        with self.lock:
            refs = self.refs()
            if ref == f"refs/heads/{DEFAULT_BRANCH}":
                raise EndpointError(403, f"Cannot delete the default branch '{DEFAULT_BRANCH}'")
            if ref not in refs:
                raise EndpointError(404, f"Invalid rev id: {ref.split('/', 2)[-1]}", code="RevisionNotFound")
            del refs[ref]
            self._write_refs(refs)

    def holds_blob(self, sha256: str) -> bool:
        """Whether this repo may name blob `sha256`: a commit of it names the blob, or it was uploaded to it.

        Blobs are shared by every repo of the store; without this check a caller who learnt the sha256 of a private
        file could commit it to a repo of their own and download it from there.
        """
        marker = self.dir / "lfs" / sha256
        if marker.is_file():
            return True
        for path in (self.dir / "commits").glob("*.json"):
            if any(entry["sha256"] == sha256 for entry in self.store.read_commit(path)["files"].values()):
                self.grant_blob(sha256)
                return True
        return False

    def grant_blob(self, sha256: str) -> None:
        write_atomic(self.dir / "lfs" / sha256, b"")

    def new_pr_ref(self) -> str:
        numbers = [int(ref.rsplit("/", 1)[1]) for ref in self.refs() if ref.startswith("refs/pr/")]
        return f"refs/pr/{max(numbers, default=0) + 1}"

    # Commits ------------------------------------------------------------------------------------------------------
    def commit(self, sha: str) -> dict[str, Any]:
        return self.store.read_commit(self.dir / "commits" / f"{sha}.json")

    def history(self, sha: str) -> Iterator[dict[str, Any]]:
        """Commits from `sha` back to the first one, newest first, following first parents."""
        next_sha: str | None = sha
        while next_sha is not None:
            commit = self.commit(next_sha)
            yield commit
            next_sha = commit["parents"][0] if commit["parents"] else None

    def write_commit(self, *, parents: list[str], files: dict[str, Any], title: str, message: str) -> str:
        date = utc_now()
        record = {"parents": parents, "title": title, "message": message, "date": date, "authors": ["hfsoup-local"]}
        digest = json.dumps({**record, "files": files, "nonce": time.perf_counter_ns()}, sort_keys=True)
        sha = hashlib.sha1(digest.encode()).hexdigest()
        record = {"id": sha, **record, "files": files}
        write_atomic(self.dir / "commits" / f"{sha}.json", json.dumps(record, sort_keys=True).encode())
        return sha

    def apply(
        self,
        rev: str,
        operations: list[tuple[str, str, Any]],
        *,
        title: str,
        message: str,
        parent: str | None,
        create_pr: bool = False,
    ) -> tuple[str, str]:
        """Commit `operations` on branch `rev` atomically; return the new commit SHA and the ref that moved.

        Operations are `("add", path, entry)`, `("delete_file", path, None)` and `("delete_folder", path, None)`.
        """
        with self.lock:
            ref = self.branch_ref(rev)
            head = self.refs()[ref]
            if parent is not None and self.resolve(parent) != head:
                raise EndpointError(412, f"A commit has happened since {parent}. Please refresh and try again.")
            files = dict(self.commit(head)["files"])
            for kind, path, entry in operations:
                if kind == "add":
                    files[path] = entry
                elif kind == "delete_file":
                    if files.pop(path, None) is None:
                        raise EndpointError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                else:
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise EndpointError(
                            404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound"
                        )
                    for p in doomed:
                        del files[p]
            if create_pr:
                ref = self.new_pr_ref()
            sha = self.write_commit(parents=[head], files=files, title=title, message=message)
            self._write_refs({**self.refs(), ref: sha})  # The one step that makes the commit visible.
            return sha, ref


class HubStore:
    """All repos and blobs under `root`; safe to share between the threads of one server."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root / "blobs")
        self._locks: dict[Path, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._commit_cache: dict[Path, dict[str, Any]] = {}
        self._claim: IO[bytes] | None = None

    def claim(self) -> bool:
        """Mark this store as served by this process and clean what crashed uploads left; False (and nothing
        cleaned) when another server holds it, whose uploads in flight look just like orphans."""
        if self._claim is not None:
            return True
        handle = open(self.root / ".server.lock", "ab")  # noqa: SIM115 (held open until release())
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): clean nothing rather than another server's uploads
            handle.close()
            return False
        except OSError:
            handle.close()
            return False
        self._claim = handle
        self.blobs.clean_orphans()
        return True

    def release(self) -> None:
        handle, self._claim = self._claim, None
        if handle is not None:
            handle.close()  # closing the file drops the lock

    def lock_for(self, path: Path) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(path, threading.RLock())

    def read_commit(self, path: Path) -> dict[str, Any]:
        # Commit files never change once written, so caching them is safe.
        commit = self._commit_cache.get(path)
        if commit is None:
            commit = json.loads(path.read_text())
            if len(self._commit_cache) >= _COMMIT_CACHE_SIZE:  # Crude, but bounds a long-running server's memory.
                self._commit_cache.clear()
            self._commit_cache[path] = commit
        return commit

    def get(self, repo_type: str, repo_id: str) -> Repo:
        """The repo `repo_id` of `repo_type`; raises a `RepoNotFound` error when there is none."""
        if repo_type not in REPO_TYPES:
            raise EndpointError(400, f"Invalid repo type '{repo_type}', expected one of {REPO_TYPES}")
        check_repo_id(repo_id)
        repo = Repo(self, repo_type, repo_id)
        if not (repo.dir / "refs.json").is_file():
            raise EndpointError(404, "Repository not found", code="RepoNotFound")
        return repo

    def create(self, repo_type: str, repo_id: str, *, private: bool = False, sdk: str | None = None) -> Repo:
        """Create a repo with an initial commit holding `.gitattributes`, as the Hub does; 409 if it exists."""
        if repo_type not in REPO_TYPES:
            raise EndpointError(400, f"Invalid repo type '{repo_type}', expected one of {REPO_TYPES}")
        repo = Repo(self, repo_type, check_repo_id(repo_id))
        with repo.lock:
            if (repo.dir / "refs.json").is_file():
                raise EndpointError(409, f"You already created this {repo_type} repo: {repo_id}")
            meta = {"id": repo_id, "type": repo_type, "private": private, "createdAt": utc_now(), "sdk": sdk}
            write_atomic(repo.dir / "repo.json", json.dumps(meta, indent=1).encode())
            attributes = DEFAULT_GITATTRIBUTES.encode()
            self.blobs.put_bytes(attributes)
            files = {".gitattributes": file_entry(attributes, lfs=False)}
            sha = repo.write_commit(parents=[], files=files, title="initial commit", message="")
            repo._write_refs({f"refs/heads/{DEFAULT_BRANCH}": sha})  # Written last: the repo exists from here on.
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        repo = self.get(repo_type, repo_id)
        with repo.lock:
            # Hide the repo first (its refs), then remove the rest; blobs stay, other repos may share them.
            (repo.dir / "refs.json").unlink()
            shutil.rmtree(repo.dir, ignore_errors=True)
        with self._locks_guard:
            self._commit_cache = {p: c for p, c in self._commit_cache.items() if repo.dir not in p.parents}
