"""Output folders that appear only when complete.

Everything is written into a hidden sibling folder (same filesystem, so the final `os.replace` is atomic) and moved
into place at the end. On any failure, including Ctrl-C or a full disk, whatever the user had at the output path is
untouched, and the staging folder is removed unless it holds completed work that `--resume` can reuse.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..constants import PROGRESS_DIR, TMP_MARKER
from ..errors import DiskFullError, OutputExistsError, UnsafeStagingError, option
from . import guard

logger = logging.getLogger(__name__)

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def check_output(output_dir: str | os.PathLike, *, overwrite: bool, protected: Iterable[guard.Protected] = ()) -> Path:
    """Refuse an output that would destroy an input (`guard`: the ingredients and folders in `protected`, the
    current and home folders, the Hub cache, a root), an existing file, and an existing folder unless `overwrite`
    and hfsoup wrote it; return it absolute. Cheap: call before any work."""
    out = Path(output_dir).expanduser().absolute()
    guard.refuse_collisions(out, protected)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(
            f"The output path {out} exists and is a file, not a folder.", fix="Choose another path with -o."
        )
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"The output folder {out} already exists; hfsoup never overwrites it unless asked.",
            fix=f"Choose another folder with {option('output_dir', metavar='DIR', flag='-o')}, or pass "
            f"{option('overwrite')} to replace it.",
        )
    if out.exists():
        guard.check_replaceable(out)
    return out


def staging_path(output_dir: str | os.PathLike) -> Path:
    """Where `output_dir` is built: a hidden sibling with a fixed name, so an interrupted run can be resumed and all
    processes of a distributed run agree on it."""
    out = Path(output_dir).expanduser().absolute()
    return out.parent / f".{out.name}{TMP_MARKER}partial"


def fresh_staging(staging: Path, *, resume: bool) -> None:
    """Make `staging` a folder only this user can enter, never following a link planted at its name.

    Without `resume` whatever is at the name is discarded first (a link or a file is unlinked, never followed; a
    folder is removed only if it is this user's). With `resume` an existing entry is kept only if it is a real
    folder of this user's that nobody else can write; anything else is refused and left untouched, since its
    content could have been put there by someone else (and `cook` always resumes).
    """
    try:
        st = os.lstat(staging)
    except FileNotFoundError:
        st = None
    if st is not None and not resume:
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(staging)
        elif not stat.S_ISDIR(st.st_mode):
            staging.unlink()  # a link or a file: the entry goes, its target is never touched
        else:
            _refuse_staging(staging, "is another user's folder")
        st = None
    if st is None:
        os.mkdir(staging, 0o700)  # fails if anything appeared at the name meanwhile: never follows a link
        os.chmod(staging, 0o700)  # whatever the umask
        return
    if stat.S_ISLNK(st.st_mode):
        _refuse_staging(staging, f"is a symbolic link (to {os.readlink(staging)})")
    if not stat.S_ISDIR(st.st_mode):
        _refuse_staging(staging, "is not a folder")
    if st.st_uid != os.getuid():
        _refuse_staging(staging, f"belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        _refuse_staging(staging, f"can be written by other users (mode {stat.filemode(st.st_mode)})")


def _refuse_staging(staging: Path, why: str) -> None:
    raise UnsafeStagingError(
        f"The staging folder {staging} left by an earlier run {why}; hfsoup never reuses nor follows it, since "
        "someone else could have put its content there.",
        fix=f"Look at it, remove it yourself (rm -r {staging}), then run the command again (or run without "
        f"{option('resume', False, flag='--resume')} to have hfsoup replace a link or file there).",
        path=staging,
    )


@contextlib.contextmanager
def staged_output(
    output_dir: str | os.PathLike,
    *,
    overwrite: bool,
    resume: bool = False,
    is_main: bool = True,
    protected: Iterable[guard.Protected] = (),
) -> Iterator[Path]:
    """Yield the staging folder; on success the main process moves it to `output_dir`.

    On failure the staging folder is removed, except when it holds completed shards and the failure was not a refusal
    of the ingredients: then it is kept for `--resume` (and the user is told). Without `resume`, leftovers of an
    earlier run are discarded first. The staging folder is made by `fresh_staging` (mode 0o700, never through a
    link), and `protected` is checked by `check_output` again at the end.

    Example:
        ```py
        >>> with staged_output("out/", overwrite=False) as tmp:
        ...     (tmp / "hello.txt").write_text("hi")
        ```
    """
    from ..errors import HfsoupError

    protected = list(protected)
    out = check_output(output_dir, overwrite=overwrite, protected=protected)
    staging = staging_path(out)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    if is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh_staging(staging, resume=resume)
    try:
        yield staging
        if not is_main:
            return
        check_output(out, overwrite=overwrite, protected=protected)  # someone may have created it meanwhile
        shutil.rmtree(staging / PROGRESS_DIR, ignore_errors=True)
        move_into_place(staging, out)
    except BaseException as e:
        if not is_main:
            raise
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            # Nothing partial stays behind, not even completed shards: the user must free space first anyway.
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty(created)
            raise DiskFullError(
                f"No space left on the device while writing {out} (in its staging folder {staging}); the staging "
                "folder was removed and nothing was moved into place.",
                fix="Free some space, or write to a folder on another disk with -o, then run the command again.",
            ) from e
        resumable = not isinstance(e, HfsoupError) and any((staging / PROGRESS_DIR).glob("*.json"))
        if resumable:
            logger.warning("interrupted; completed shards are kept in %s: rerun with --resume to reuse them", staging)
        else:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty(created)
        raise


def move_into_place(staging: Path, out: Path) -> None:
    """Open up the finished `staging` folder and put it at `out`: a folder already there is first moved aside into a
    hidden sibling and deleted only once the new one is in place, so a failure in between loses neither."""
    open_up(staging)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.hfsoup-old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def open_up(folder: Path) -> None:
    """Give a finished staging folder (made 0o700) the permissions of any folder the user makes (the umask's)."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)


def _remove_empty(created: list[Path]) -> None:
    for parent in created:  # innermost first: only the folders this call made, and only if still empty
        with contextlib.suppress(OSError):
            parent.rmdir()


def check_report_file(
    path: str | os.PathLike | None, *, overwrite: bool, protected: Iterable[guard.Protected] = ()
) -> None:
    """Refuse, before any work, a report file (`--json FILE`, `--predictions FILE`) that would replace what is there:
    an existing folder always, an existing file unless `overwrite`, and even with it an input or the user's own
    places (`protected`, and `guard`'s: the Hub cache, the home folder itself, a root). A new file is fine anywhere
    it can be written. `None` and `-` (standard output) are no file."""
    if path is None or os.fspath(path) == "-":
        return
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise OutputExistsError(f"The report path {target} is a folder.", fix="Name a file, e.g. report.json.")
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise OutputExistsError(
            f"The report file {target} already exists; hfsoup never overwrites a file unless asked.",
            fix="Name another file, or pass --overwrite to replace it.",
        )
    found = guard.collisions(target, [*guard.always_protected(), *protected])
    if found:
        relation, item = found[0]
        raise OutputExistsError(
            f"The report file {guard.describe(target, relation, item)}: --overwrite never replaces an input or "
            "what lies in one.",
            fix="Name a file of its own for the report, outside every input.",
        )


def write_file_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, renamed into place when complete: a
    reader (or a rerun after a crash or a full disk) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in _DISK_FULL:
            raise DiskFullError(
                f"No space left on the device while writing {path}; it was not written (an older copy is kept).",
                fix="Free some space, or write the file to another disk, then run the command again.",
            ) from e
        raise
