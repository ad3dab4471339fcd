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
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .constants import TMP_MARKER
from .errors import DiskFullError, OutputExistsError

logger = logging.getLogger(__name__)

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def check_output(output_dir: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse an existing output path unless `overwrite`; return it absolute. Cheap: call before any work."""
    out = Path(output_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(
            f"The output path {out} exists and is a file, not a folder.", fix="Choose another path with -o."
        )
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"The output folder {out} already exists; hfsoup never overwrites it unless asked.",
            fix="Choose another folder with -o, or pass --overwrite (overwrite=True) to replace it.",
        )
    return out


def staging_path(output_dir: str | os.PathLike) -> Path:
    """Where `output_dir` is built: a hidden sibling with a fixed name, so an interrupted run can be resumed and all
    processes of a distributed run agree on it."""
    out = Path(output_dir).expanduser().absolute()
    return out.parent / f".{out.name}{TMP_MARKER}partial"


@contextlib.contextmanager
def staged_output(
    output_dir: str | os.PathLike, *, overwrite: bool, resume: bool = False, is_main: bool = True
) -> Iterator[Path]:
    """Yield the staging folder; on success the main process moves it to `output_dir`.

    On failure the staging folder is removed, except when it holds completed shards and the failure was not a refusal
    of the ingredients: then it is kept for `--resume` (and the user is told). Without `resume`, leftovers of an
    earlier run are discarded first.

    Example:
        ```py
        >>> with staged_output("out/", overwrite=False) as tmp:
        ...     (tmp / "hello.txt").write_text("hi")
        ```
    """
    from .errors import HfsoupError
    from .soups.engine import PROGRESS_DIR

    out = check_output(output_dir, overwrite=overwrite)
    staging = staging_path(out)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    if is_main:
        if staging.exists() and not resume:
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
        if not is_main:
            return
        check_output(out, overwrite=overwrite)  # someone may have created it meanwhile
        shutil.rmtree(staging / PROGRESS_DIR, ignore_errors=True)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.hfsoup-old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
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


def _remove_empty(created: list[Path]) -> None:
    for parent in created:  # innermost first: only the folders this call made, and only if still empty
        with contextlib.suppress(OSError):
            parent.rmdir()


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
