"""Output folders that appear only when complete.

Everything is written into a hidden sibling folder (same filesystem, so the final `os.replace` is atomic) and moved
into place at the end. On any failure, including Ctrl-C or a full disk, the staging folder is removed and whatever
the user had at the output path is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .constants import TMP_MARKER
from .errors import OutputExistsError


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


@contextlib.contextmanager
def staged_output(output_dir: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `output_dir`, on failure it vanishes.

    Example:
        ```py
        >>> with staged_output("out/", overwrite=False) as tmp:
        ...     (tmp / "hello.txt").write_text("hi")
        ```
    """
    out = check_output(output_dir, overwrite=overwrite)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARKER}", dir=out.parent))
    try:
        yield staging
        check_output(out, overwrite=overwrite)  # someone may have created it meanwhile
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.hfsoup-old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # innermost first: only the folders this call made, and only if still empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
