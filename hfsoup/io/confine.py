"""Paths from data stay inside their folder.

An ingredient names files: the shards in `model.safetensors.index.json`, and the config, tokenizer and processor
files a soup reads and copies. A hostile repo or folder can name `/home/me/.ssh/id_rsa` or
`../private/model.safetensors`, or ship `vocab.txt` as a symbolic link to a secret; hfsoup would then read, soup,
copy and publish the user's files.
So every such name must be a plain relative name (no absolute path, no `..`, no empty or `.` part, no backslash or
control character), and what it resolves to, links followed, must lie inside the folder. A Hub snapshot is a folder
of links into its repo's `blobs/` (`models--org--name/snapshots/<sha>/x -> ../../blobs/<hash>`): landing in that
repo's own blob store is allowed too, and nothing else. Only regular files are read (a FIFO or a device would hang or
stream forever).

The checks use `lstat`/`readlink` (through `os.path.realpath`) and `stat`, never `open`: a refused file is never read.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from .. import constants
from ..errors import UnsafePathError
from .headers import bounded_repr

_DRIVE = re.compile(r"^[A-Za-z]:")
_FIX = (
    "Only files inside the model's own folder are read. If you made this folder, replace the link with a copy of the "
    "file and name shards by their plain file name; if it came from someone else, do not use it."
)


def why_not_plain(name: object) -> str | None:
    """What makes `name` more than a plain relative file name, or None when it is one."""
    if not isinstance(name, str):
        return "it is not a string"
    if not name:
        return "it is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "it is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "it climbs out of the folder ('..')"
    if any(part in ("", ".") for part in parts):
        return "it has an empty or '.' part"
    return None


def plain_name(name: object, *, where: str, what: str = "file") -> str:
    """`name`, if it is a plain relative file name; else `UnsafePathError` naming `where` it came from."""
    why = why_not_plain(name)
    if why is not None:
        raise UnsafePathError(f"{where} names the {what} {bounded_repr(name)}, which hfsoup refuses: {why}.", fix=_FIX)
    return name  # type: ignore[return-value]


def allowed_roots(folder: str | os.PathLike) -> list[Path]:
    """Where the files of `folder` may resolve to: inside it, and for a Hub snapshot, its repo's blob store."""
    real = Path(os.path.realpath(folder))
    roots = [real]
    repo = real.parent.parent
    blobs = repo / "blobs"
    # Only the Hub cache's own layout (`models--org--name/{snapshots/<sha>,blobs}`), with `blobs` a real folder: a
    # folder laid out to look like a snapshot, whose `blobs` is a link to the home folder, must not make it a root.
    if (
        real.parent.name == "snapshots"
        and repo.name.startswith(("models--", "datasets--", "spaces--"))
        and blobs.is_dir()
        and not blobs.is_symlink()
    ):
        roots.append(blobs)
    return roots


def _refuse_outside(real: Path, roots: list[Path], named: str, done: str) -> None:
    """`UnsafePathError` when `real` (a resolved link) lies outside every allowed root: named, never opened."""
    if not any(real.is_relative_to(root) for root in roots):
        raise UnsafePathError(
            f"{named} is a symbolic link to {target_class(real)} ({bounded_repr(str(real))}), outside the model's "
            "folder; "
            f"{done}.",
            fix=_FIX,
        )


def confined(
    folder: str | os.PathLike, name: str, *, where: str, what: str = "file", roots: list[Path] | None = None
) -> Path:
    """The real path of `folder/name`, checked: a plain name, resolving inside `folder` (or its snapshot's blob store)
    to a regular file. A missing file is returned as is (the caller says what is missing); anything else raises
    `UnsafePathError` naming the file and what its link points at, without opening it."""
    plain_name(name, where=where, what=what)
    path = Path(folder, name)
    real = Path(os.path.realpath(path))
    roots = roots if roots is not None else allowed_roots(folder)
    _refuse_outside(real, roots, f"{where}: the {what} {name!r}", "hfsoup did not read it")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
        raise UnsafePathError(
            f"{where}: the {what} {name!r} is {kind}, not a regular file; hfsoup did not read it.", fix=_FIX
        )
    return real


def refuse_links_out(folder: str | os.PathLike, *, where: str) -> None:
    """Refuse a local ingredient with any entry at its root (hidden ones aside, which nothing reads) that is a link
    leaving the folder, or a FIFO, socket or device: hfsoup and `transformers` read files from the root by name, so
    a link there is read, and a FIFO would hang the read."""
    roots = allowed_roots(folder)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            real = Path(os.path.realpath(entry.path))
            _refuse_outside(
                real, roots, f"{where}: {entry.name!r}", "hfsoup refuses the folder rather than read or copy it"
            )
        try:
            mode = os.stat(entry.path).st_mode
        except FileNotFoundError:  # a dangling link inside the folder: nothing to read
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UnsafePathError(
                f"{where}: {entry.name!r} is a device, FIFO or socket, not a regular file; hfsoup did not read it.",
                fix=_FIX,
            )


def target_class(real: Path) -> str:
    """What a link points at, in words, from its path and `stat` alone."""
    cache = Path(os.path.realpath(constants.hub_cache()))
    if real.is_relative_to(cache):
        return "a file of another repo in the Hub cache"
    if real.parts[:2] in (("/", "dev"), ("/", "proc"), ("/", "sys")):
        return "a device or system file"
    if not os.path.lexists(real):
        return "a missing file"
    home = Path(os.path.realpath(os.path.expanduser("~")))
    return "a file in your home folder" if real.is_relative_to(home) else "a file elsewhere on this machine"
