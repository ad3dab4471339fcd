"""Push a soup to the Hub: create the repo if needed, then one commit holding every file and the model card.

One `create_commit` carries every file (LFS objects are uploaded first, but nothing is visible until the commit), so
a push that fails at any point leaves the repo as it was. The branch head read before the commit is sent as its
parent: if someone pushes in between, the Hub refuses rather than mixing two soups. Files of an earlier version
that the new soup lacks (say, a shard) are deleted in the same commit, so the repo matches the folder exactly.

The token comes from `token=`/`--token`, else `HF_TOKEN`, else `hf auth login`'s stored token; it is only ever handed
to `huggingface_hub`, never logged, printed or written, and scrubbed from any error text that reaches the user.

Example:
    ```py
    >>> from hfsoup.publish.upload import push
    >>> result = push("soup/", "me/my-soup")
    >>> result.commit_url
    'https://huggingface.co/me/my-soup/commit/3f1c...'
    ```
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import constants
from ..constants import CARD_FILE
from ..errors import InvalidRepoIdError, PushRefusedError, UnsafePathError, option
from ..hub.errors import failure, hub_errors
from ..hub.retries import first_line
from .card import SoupFolder, build_card, ingredient_cards, read_soup_folder, shared_base

logger = logging.getLogger(__name__)

# Files every repo may hold besides a model; a repo holding only these holds no model yet.
_REPO_SCAFFOLD = {".gitattributes", CARD_FILE}


@dataclass
class PushResult:
    """What `push` sent, or would send with `dry_run=True`.

    Attributes:
        repo_id (`str`): the repo pushed to.
        branch (`str`): the branch committed to.
        files (`list[tuple[str, int]]`): every file of the commit (path in repo, bytes), the card included.
        deleted (`list[str]`): files of the repo's current version that the commit removes.
        card (`str`): the model card (`README.md`) pushed.
        commit_sha (`str`, *optional*): the new commit; `None` for a dry run.
        commit_url (`str`, *optional*): its web page; `None` for a dry run.
        dry_run (`bool`): nothing was written.
        unchanged (`bool`): the branch already held exactly these files, so no commit was made.
    """

    repo_id: str
    branch: str
    files: list[tuple[str, int]]
    card: str
    deleted: list[str] = field(default_factory=list)
    commit_sha: str | None = None
    commit_url: str | None = None
    dry_run: bool = False
    unchanged: bool = False


def resolve_token(token: str | None) -> str | None:
    """The token to push with: the one given, else `HF_TOKEN`, else the one `hf auth login` stored (or none)."""
    from huggingface_hub import get_token

    return token or get_token()


def push(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    branch: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> PushResult:
    """Push a soup output folder to a Hub model repo in one commit, with a model card that records how it was made.

    Args:
        output_dir (`str` or `os.PathLike`):
            The folder `hfsoup soup` wrote (it holds `hfsoup.json`). The card is written into it as `README.md`.
        repo_id (`str`):
            `org/name` (created if it does not exist).
        private (`bool`, *optional*, defaults to `False`):
            Create the repo as private (an existing repo keeps its visibility).
        branch (`str`, *optional*):
            Commit to this branch (created from `main` if needed) instead of `main`.
        commit_message (`str`, *optional*):
            The commit's title; by default it names the method and the number of ingredients.
        token (`str`, *optional*):
            A Hub token with write access; by default `HF_TOKEN` or the token from `hf auth login`.
        overwrite (`bool`, *optional*, defaults to `False`):
            Push even if the repo holds a model that hfsoup did not make (its files are replaced; the Hub keeps
            the history).
        dry_run (`bool`, *optional*, defaults to `False`):
            Build the card and list the files, write nothing (the repo is only read, if it exists).

    Returns:
        `PushResult`: the files, the card and the new commit.

    Example:
        ```py
        >>> push("soup/", "me/my-soup", dry_run=True).files
        [('README.md', 2816), ('config.json', 612), ('hfsoup.json', 1405), ('model.safetensors', 437951328), ...]
        ```
    """
    from huggingface_hub import HfApi

    require_valid_repo_id(repo_id)
    _refuse_links(Path(output_dir))  # before a file of the folder is read
    soup = read_soup_folder(output_dir)
    token = resolve_token(token)
    api = HfApi(token=token or False)
    with hub_errors("push", repo_id, token=token):
        head = _head(api, repo_id, branch or "main", must_exist=False)
        if head is None and branch:  # a new branch starts from main
            head = _head(api, repo_id, "main", must_exist=False)
        cards = ingredient_cards(soup, token=token or False)
        base_exists = _shared_base_exists(api, cards)
        card = str(build_card(soup, repo_id=repo_id, cards=cards, base_exists=base_exists))
    files = _files(soup, card)
    present = head.files if head else []
    deleted = sorted(set(present) - {path for path, _ in files} - _REPO_SCAFFOLD)
    _refuse_foreign(repo_id, present, overwrite=overwrite)
    result = PushResult(repo_id, branch or "main", files, card, deleted, dry_run=dry_run)
    if dry_run:
        return result

    _write_card(soup.path, card)
    prov = soup.provenance
    message = commit_message or f"Upload {prov['method']} soup of {len(prov['ingredients'])} models (hfsoup)"
    with hub_errors("push", repo_id, token=token):
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        repo_id = url.repo_id or repo_id
        head = _head(api, repo_id, "main", must_exist=True)
        created_branch = False
        if branch and branch != "main":
            branch_head = _head(api, repo_id, branch, must_exist=False)
            if branch_head is None:
                api.create_branch(repo_id, branch=branch, revision=head.sha)
                created_branch = True
            else:
                head = branch_head
        # Re-read: the repo may have changed since the dry part above (or been created just now).
        _refuse_foreign(repo_id, head.files, overwrite=overwrite)
        deleted = sorted(set(head.files) - {path for path, _ in files} - _REPO_SCAFFOLD)
        try:
            info = api.create_commit(
                repo_id,
                _operations(soup.path, files, deleted),
                commit_message=message,
                revision=branch,
                parent_commit=head.sha,
            )
        except BaseException:
            if created_branch:  # the branch exists only for this commit: leave the repo as it was
                with contextlib.suppress(Exception):
                    api.delete_branch(repo_id, branch=branch)
            raise
    result.unchanged = info.oid == head.sha  # huggingface_hub skips a commit that changes nothing
    logger.info("pushed %d files to %s (%s)", len(files), repo_id, info.oid)
    result.repo_id, result.deleted = repo_id, deleted
    result.commit_sha, result.commit_url = info.oid, info.commit_url
    return result


@dataclass
class _Head:
    sha: str
    files: list[str]


def _head(api, repo_id: str, revision: str, *, must_exist: bool) -> _Head | None:
    """The commit a branch points to and its files, or None when the repo or branch does not exist (yet)."""
    try:
        info = api.model_info(repo_id, revision=revision)
    except Exception as exc:
        how = failure(exc)
        if how == "revision" or how in ("repo", "gated") and not must_exist:
            return None
        raise
    return _Head(info.sha, sorted(s.rfilename for s in info.siblings or []))


def _shared_base_exists(api, cards: list[dict | None]) -> bool:
    """Whether the base the ingredients' cards name is a model on this Hub: the card links only what exists."""
    base = shared_base(cards)
    if base is None:
        return False
    with contextlib.suppress(Exception):
        return bool(api.repo_exists(base))
    return False


def _refuse_foreign(repo_id: str, present: list[str], *, overwrite: bool) -> None:
    model_files = set(present) - _REPO_SCAFFOLD
    if model_files and constants.PROVENANCE_FILE not in model_files and not overwrite:
        shown = ", ".join(sorted(model_files)[:5]) + (", ..." if len(model_files) > 5 else "")
        raise PushRefusedError(
            f"The repo {repo_id!r} already holds a model that hfsoup did not make ({shown}); pushing would replace "
            "its files.",
            fix=f"Push to another repo, or pass {option('overwrite')} if you mean it; the Hub keeps the "
            "history, so the old version stays reachable.",
        )


def _refuse_links(folder: Path) -> None:
    """A push uploads regular files only. A symbolic link would upload its target: a link planted in the soup folder
    (or copied there by hand) publishes whatever it points at. hfsoup never writes links into a soup, so any link
    (inside the folder or out) or special file in what would be pushed refuses the push, before anything is read."""
    from ..io.confine import target_class

    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden files are never pushed
        if path.is_symlink():
            real = Path(os.path.realpath(path))
            where = "inside the folder" if real.is_relative_to(os.path.realpath(folder)) else target_class(real)
            raise UnsafePathError(
                f"{folder} holds {rel!r}, a symbolic link (to {where}); a push uploads regular files only, so "
                "nothing was pushed.",
                fix="hfsoup writes no links into a soup: remove the link (or replace it with the file itself, if you "
                "mean to publish it), then push again.",
            )
        if not (path.is_file() or path.is_dir()):
            raise UnsafePathError(
                f"{folder} holds {rel!r}, which is not a regular file (a FIFO, socket or device); nothing was pushed.",
                fix="Remove it, then push again.",
            )


def _files(soup: SoupFolder, card: str) -> list[tuple[str, int]]:
    """Every file of the soup folder (hidden ones excepted) and the card, as (path in repo, size)."""
    files = [(CARD_FILE, len(card.encode()))]
    for path in sorted(soup.path.rglob("*")):
        rel = path.relative_to(soup.path).as_posix()
        if path.is_file() and rel != CARD_FILE and not any(part.startswith(".") for part in rel.split("/")):
            files.append((rel, path.stat().st_size))
    return sorted(files)


def _operations(folder: Path, files: list[tuple[str, int]], deleted: list[str]) -> list:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    adds = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel, _ in files]
    return [*adds, *(CommitOperationDelete(path_in_repo=rel) for rel in deleted)]


def _write_card(folder: Path, card: str) -> None:
    """Write README.md atomically: the folder never holds half a card."""
    from ..io.staging import write_file_atomic

    write_file_atomic(folder / CARD_FILE, card)


def require_valid_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise InvalidRepoIdError(
            f"{repo_id!r} is not a valid Hub repo name ({first_line(e)}).",
            fix="Name the repo 'org/name': letters, digits, '-', '_' and '.', at most 96 characters.",
        ) from None
