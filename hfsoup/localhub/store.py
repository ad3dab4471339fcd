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

import contextlib
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

    def squash(self, branch: str, message: str) -> set[str]:
        """Replace the history of `branch` by one commit holding its files (`super_squash_history`); returns the
        blobs only the replaced history named, for `HubStore.collect`."""
        with self.lock:
            before = self.blob_refs()
            ref = self.branch_ref(branch)
            if not ref.startswith("refs/heads/"):
                raise EndpointError(400, f"Invalid rev id: {branch} (only a branch's history can be squashed)")
            files = self.commit(self.refs()[ref])["files"]
            title, _, body = message.partition("\n")
            sha = self.write_commit(parents=[], files=files, title=title or "Super-squash", message=body.strip())
            self._write_refs({**self.refs(), ref: sha})
            self._prune_commits()
            dropped = before - self.blob_refs()
            for sha256 in dropped:  # they were committed: no upload awaits its commit, the grant may go
                (self.dir / "lfs" / sha256).unlink(missing_ok=True)
            return dropped

    def _prune_commits(self) -> None:
        """Delete the commits no ref reaches (the history a squash replaced; what tags and pull requests still
        reach stays), so that the blobs only they named can be collected."""
        reachable: set[str] = set()
        pending = list(self.refs().values())
        while pending:
            sha = pending.pop()
            if sha not in reachable:
                reachable.add(sha)
                pending += self.commit(sha)["parents"]
        for path in (self.dir / "commits").glob("*.json"):
            if path.stem not in reachable:
                path.unlink(missing_ok=True)
        self.store._forget(self.dir)

    def blob_refs(self, *, markers_newer_than: float | None = None) -> set[str]:
        """Every blob a commit of this repo names, and (when given a time) those uploaded to it since then, whose
        commit may still be on its way."""
        found: set[str] = set()
        for path in (self.dir / "commits").glob("*.json"):
            try:
                found.update(entry["sha256"] for entry in self.store.read_commit(path)["files"].values())
            except (OSError, ValueError):  # a commit file removed under us (repo deleted): nothing it names counts
                continue
        if markers_newer_than is not None:
            for marker in (self.dir / "lfs").glob("*"):
                try:
                    if marker.stat().st_mtime >= markers_newer_than or marker.name in found:
                        found.add(marker.name)
                    else:  # an upload never committed, long ago: its grant goes, and the blob with it
                        marker.unlink(missing_ok=True)
                except OSError:
                    continue
        return found

    def new_pr_ref(self) -> str:
        return f"refs/pr/{self.next_discussion_num()}"

    # Discussions and pull requests ---------------------------------------------------------------------------------
    def next_discussion_num(self) -> int:
        """Discussions and pull requests share one numbering, as on the Hub: PR 3 is discussion 3 and `refs/pr/3`."""
        numbers = [int(ref.rsplit("/", 1)[1]) for ref in self.refs() if ref.startswith("refs/pr/")]
        numbers += [int(p.stem) for p in (self.dir / "discussions").glob("*.json") if p.stem.isdigit()]
        return max(numbers, default=0) + 1

    def discussion_nums(self) -> list[int]:
        return sorted(int(p.stem) for p in (self.dir / "discussions").glob("*.json") if p.stem.isdigit())

    def discussion(self, num: int) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "discussions" / f"{num}.json").read_text())
        except (FileNotFoundError, ValueError):
            raise EndpointError(404, f"Discussion {num} not found in {self.id}") from None

    def save_discussion(self, record: dict[str, Any]) -> None:
        with self.lock:
            write_atomic(self.dir / "discussions" / f"{record['num']}.json", json.dumps(record, indent=1).encode())

    def open_discussion(
        self,
        num: int | None,
        *,
        title: str,
        description: str,
        author: str,
        pull_request: bool,
        base: str | None = None,
        base_sha: str | None = None,
        commit: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Record a new discussion (or pull request), its description as the first comment; returns it."""
        with self.lock:
            num = self.next_discussion_num() if num is None else num
            record: dict[str, Any] = {
                "num": num,
                "title": title,
                "status": "open",
                "isPullRequest": pull_request,
                "author": author,
                "createdAt": utc_now(),
                "events": [],
            }
            if pull_request:
                record.update({"base": base, "baseSha": base_sha, "mergeCommitId": None})
            record["events"].append(discussion_event("comment", author, comment_data(description, author)))
            if commit is not None:
                record["events"].append(discussion_event("commit", author, {"subject": commit[1], "oid": commit[0]}))
            self.save_discussion(record)
            return record

    def add_discussion_event(self, num: int, kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            record = self.discussion(num)
            event = discussion_event(kind, author, data)
            record["events"].append(event)
            if kind == "status-change":
                record["status"] = data["status"]
            elif kind == "title-change":
                record["title"] = data["to"]
            self.save_discussion(record)
            return event

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
        author: str = "hfsoup-local",
    ) -> tuple[str, str]:
        """Commit `operations` on branch `rev` atomically; return the new commit SHA and the ref that moved.

        Operations are `("add", path, entry)`, `("delete_file", path, None)` and `("delete_folder", path, None)`.
        With `create_pr`, the commit goes to a new `refs/pr/N` instead, and pull request N (a discussion) records
        it, with `rev` as the branch it proposes to change.
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
            base_ref = ref
            if create_pr:
                ref = self.new_pr_ref()
            sha = self.write_commit(parents=[head], files=files, title=title, message=message)
            if create_pr:  # the pull request exists before its ref does: a listed ref/pr/N always has its record
                self.open_discussion(
                    int(ref.rsplit("/", 1)[1]),
                    title=title,
                    description=message,
                    author=author,
                    pull_request=True,
                    base=base_ref,
                    base_sha=head,
                    commit=(sha, title),
                )
            elif ref.startswith("refs/pr/") and (self.dir / "discussions" / f"{ref.rsplit('/', 1)[1]}.json").is_file():
                self.add_discussion_event(int(ref.rsplit("/", 1)[1]), "commit", author, {"subject": title, "oid": sha})
            self._write_refs({**self.refs(), ref: sha})  # The one step that makes the commit visible.
            return sha, ref


def discussion_event(kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
    """One event of a discussion as the Hub serialises it (`huggingface_hub.community.deserialize_event` reads it)."""
    return {"id": os.urandom(12).hex(), "type": kind, "createdAt": utc_now(), "author": {"name": author}, "data": data}


def comment_data(text: str, author: str) -> dict[str, Any]:
    import html

    latest = {"raw": text, "html": f"<p>{html.escape(text)}</p>", "updatedAt": utc_now(), "author": {"name": author}}
    return {"edited": False, "hidden": False, "latest": latest, "numEdits": 0, "history": [latest]}


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
        self._gc_fallback = threading.Lock()

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

    def delete(self, repo_type: str, repo_id: str) -> set[str]:
        """Delete a repo; returns the blobs it named, which `collect` removes unless another repo names them."""
        repo = self.get(repo_type, repo_id)
        with repo.lock:
            named = repo.blob_refs() | {p.name for p in (repo.dir / "lfs").glob("*")}
            # Hide the repo first (its refs), then remove the rest; blobs stay, other repos may share them.
            (repo.dir / "refs.json").unlink()
            shutil.rmtree(repo.dir, ignore_errors=True)
        self._forget(repo.dir)
        return named

    def _forget(self, folder: Path) -> None:
        with self._locks_guard:
            self._commit_cache = {p: c for p, c in self._commit_cache.items() if folder not in p.parents}

    def repos(self, repo_type: str | None = None) -> Iterator[Repo]:
        """Every repo of the store (of `repo_type`, if given), in id order."""
        for kind in [repo_type] if repo_type else REPO_TYPES:
            base = self.root / "repos" / f"{kind}s"
            for refs in sorted(base.glob("*/*/refs.json")):
                namespace, name = refs.parent.parent.name, refs.parent.name
                if check_namespace(namespace) and check_namespace(name):
                    yield Repo(self, kind, f"{namespace}/{name}")

    def duplicate(self, repo_type: str, from_id: str, to_id: str, *, private: bool) -> Repo:
        """A new repo `to_id` with the branches, tags and history of `from_id` (blobs are shared, not copied)."""
        source = self.get(repo_type, from_id)
        target = Repo(self, repo_type, check_repo_id(to_id))
        with target.lock:
            if (target.dir / "refs.json").is_file():
                raise EndpointError(409, f"You already created this {repo_type} repo: {to_id}")
            shutil.rmtree(target.dir, ignore_errors=True)  # what a deleted repo of that name may have left
            with source.lock:
                refs = {
                    ref: sha for ref, sha in source.refs().items() if ref.startswith(("refs/heads/", "refs/tags/"))
                }
                shutil.copytree(source.dir / "commits", target.dir / "commits")
                meta = {**source.meta, "id": to_id, "private": private, "createdAt": utc_now()}
            meta.pop("gated", None)
            write_atomic(target.dir / "repo.json", json.dumps(meta, indent=1).encode())
            target._write_refs(refs)  # last: the repo exists from here on
        return target

    def move(self, repo_type: str, from_id: str, to_id: str) -> Repo:
        """Rename `from_id` to `to_id` (another name, or another namespace), with its history and discussions."""
        source = self.get(repo_type, from_id)
        target = Repo(self, repo_type, check_repo_id(to_id))
        if source.dir == target.dir:
            raise EndpointError(400, f"Cannot move {from_id} onto itself")
        first, second = sorted([source, target], key=lambda r: str(r.dir))
        with first.lock, second.lock:  # in path order: two moves in opposite directions cannot deadlock
            if (target.dir / "refs.json").is_file():
                raise EndpointError(409, f"You already created this {repo_type} repo: {to_id}")
            source.refs()  # 404 if it was deleted meanwhile
            shutil.rmtree(target.dir, ignore_errors=True)
            target.dir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source.dir, target.dir)
            target.update_meta(id=to_id)
        self._forget(source.dir)
        return target

    # Garbage collection -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) by every request that stores blobs or names them in a commit; `collect` takes it alone, in
        this process and in any other (`hfsoup hub gc` next to a running server), so it never removes a blob that a
        commit in flight is about to name."""
        with self._gc_lock(shared=True):
            yield

    @contextlib.contextmanager
    def _gc_lock(self, *, shared: bool) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): serialise in this process only
            with self._gc_fallback:
                yield
            return
        with open(self.root / ".gc.lock", "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def collect(self, candidates: set[str] | None = None, *, grace_seconds: float = 3600) -> tuple[int, int]:
        """Remove the blobs no repo names (only among `candidates`, if given): none of their commits, on any ref or
        in any history, and no upload of the last `grace_seconds` awaiting its commit. Returns (blobs, bytes)."""
        if candidates is not None and not candidates:
            return 0, 0
        with self._gc_lock(shared=False):
            cutoff = time.time() - grace_seconds
            named: set[str] = set()
            for repo in self.repos():
                named |= repo.blob_refs(markers_newer_than=cutoff)
            if candidates is None:
                stored = [p for p in self.blobs.root.glob("??/*") if not p.name.startswith(".")]
            else:
                stored = [self.blobs.path(sha) for sha in candidates]
            removed = freed = 0
            for path in stored:
                if path.name in named or not path.is_file():
                    continue
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                removed, freed = removed + 1, freed + size
            return removed, freed
