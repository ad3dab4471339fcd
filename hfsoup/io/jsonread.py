"""Reading the small JSON files of a checkpoint (config, tokenizer, weights index) from someone else's repo.

A hostile file must fail as bad input, not exhaust the machine: too large to be real, it is refused unread; nested
thousands deep, `json`'s recursive decoder would raise RecursionError, which is turned into the ValueError that
malformed JSON raises anyway. Standard library only: the CPU soup path reads indexes through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..constants import MAX_SUPPORT_FILE_BYTES
from ..errors import InputLimitError


def parse_json(raw: bytes | str) -> Any:
    """`json.loads`, failing on hostile input with ValueError only (never RecursionError)."""
    try:
        return json.loads(raw)
    except RecursionError:  # "[[[[..." a few thousand deep: json's decoder recurses
        raise ValueError("it nests arrays or objects too deeply") from None


def read_bounded(path: Path) -> bytes:
    """The bytes of a config, tokenizer, vocabulary or index file, refused unread (`InputLimitError`) past
    `MAX_SUPPORT_FILE_BYTES`: a hostile repo's 5 GB "config.json" must not become 20 GB of parsed JSON."""
    size = path.stat().st_size
    if size > MAX_SUPPORT_FILE_BYTES:
        raise InputLimitError(
            f"{path} is {size:,} bytes, more than the {MAX_SUPPORT_FILE_BYTES:,} hfsoup reads for a config, "
            "tokenizer, vocabulary or index file (real ones are at most tens of MB); it was not read.",
            fix="Check that this is the right model; a file this large is corrupt or hostile.",
        )
    return path.read_bytes()
