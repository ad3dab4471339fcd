"""Resuming a soup without trusting what the interrupted run left.

The staging folder is this user's alone (`output.fresh_staging`), but its content is still only a claim: a shard's
bytes and its progress record (older ones also give the shard's sha256) can both be rewritten, and the record's
shared-initialization figures decide the compatibility verdict. So a shard from an earlier run is accepted only
after it has been recomputed from the ingredients and compared with the staged bytes, byte for byte; what resuming
saves is the write, not the arithmetic. The figures come from that same recomputation, and the record is written
again from it. A shard that differs (or is not a plain file) is written again.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from ..io.checkpoint import SafetensorsStreamWriter

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def staged_candidate(staging: Path, progress: Path, file: str, fingerprint: str) -> bool:
    """Whether an earlier run claims to have completed `file` for this very plan, as a plain file: only then is it
    worth comparing (the claim itself proves nothing)."""
    try:
        record = json.loads((progress / f"{file}.json").read_text())
        st = os.lstat(staging / file)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("fingerprint") == fingerprint and stat.S_ISREG(st.st_mode)


class _Comparison:
    """A write-only 'file' that compares what is written with an existing file's bytes, keeping only the verdict."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.same = True

    def write(self, data: bytes | memoryview) -> None:
        if not self.same:
            return
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _CHUNK):
            part = view[start : start + _CHUNK]
            if self._file.read(len(part)) != part:
                self.same = False
                return

    def close(self) -> None:
        if self.same and self._file.read(1):
            self.same = False  # the staged file is longer than the shard
        self._file.close()


class StagedShardCheck(SafetensorsStreamWriter):
    """The writer's interface (`begin`, `write`, `end`), comparing the shard with the staged file at `path` instead
    of writing it; `close` says whether every byte matched. Nothing is written or moved."""

    def _open_sink(self, nbytes: int) -> _Comparison:
        return _Comparison(self.path)

    @property
    def differs(self) -> bool:
        """Known to differ already (checked between tensors, to stop early)."""
        return not self._file.same

    def close(self) -> bool:  # type: ignore[override]
        self._stop()
        self._file.close()
        if self._error is not None:
            raise self._error
        return self._next == len(self._expected) and self._file.same

    def abort(self) -> None:
        if self._thread.is_alive():
            self._stop()
        self._file.close()
