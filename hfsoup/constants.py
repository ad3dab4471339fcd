"""Environment switches, read in one place."""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}

#: Directory-name marker of a soup being written; a folder carrying it is never a finished output.
TMP_MARKER = ".hfsoup-tmp-"
#: The provenance file written into every soup folder.
PROVENANCE_FILE = "hfsoup.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"
#: Output dtypes a soup can be written in (`--dtype`).
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def debug() -> bool:
    """`HFSOUP_DEBUG=1` makes the CLI print tracebacks for user errors too."""
    return os.environ.get("HFSOUP_DEBUG", "").strip().lower() in _TRUE


def hub_endpoint() -> str:
    """The Hub endpoint the clients talk to (`HF_ENDPOINT`, as `huggingface_hub` read it)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
