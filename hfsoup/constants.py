"""Environment switches, read in one place."""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}

#: Directory-name marker of a soup being written; a folder carrying it is never a finished output.
TMP_MARKER = ".hfsoup-tmp-"
#: Inside a staging folder: one record per completed shard, which --resume re-checks (never trusts).
PROGRESS_DIR = ".hfsoup-progress"
#: The model card of a repo and of a soup folder.
CARD_FILE = "README.md"
#: The provenance file written into every soup folder.
PROVENANCE_FILE = "hfsoup.json"
#: A soup's results table (held-out and report scores of every ingredient, soup and baseline), beside it.
RESULTS_FILE = "results.json"
#: The recipe that remakes a soup (pinned ingredients, method, evaluation), written beside it and pushed with it.
RECIPE_FILE = "recipe.yaml"
DEFAULT_MAX_SHARD_SIZE = "5GB"
#: Output dtypes a soup can be written in (`--dtype`).
DTYPE_NAMES = ("float32", "float16", "bfloat16")
#: The largest safetensors header hfsoup reads: safetensors' own bound (`MAX_HEADER_SIZE`). Real headers are
#: kilobytes to a few megabytes; a larger length is a corrupt or hostile file, refused before it is read.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
#: The largest config, tokenizer or vocabulary file hfsoup reads. The largest real ones (multilingual tokenizer.json)
#: are tens of MB; parsing a JSON file costs several times its size in memory, so a hostile one is refused unread.
MAX_SUPPORT_FILE_BYTES = 256 * 2**20


#: Under `hfsoup_cache()`: each ingredient's Fisher diagonal, keyed by what it is computed from (`soups.fisher_cache`).
FISHER_CACHE_DIR = "fisher"


def hfsoup_cache() -> str:
    """`HFSOUP_CACHE`: where hfsoup keeps what it can recompute (Fisher estimates, the demo's fine-tunes); by default
    `~/.cache/hfsoup`."""
    return os.environ.get("HFSOUP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hfsoup")


def debug() -> bool:
    """`HFSOUP_DEBUG=1` makes the CLI print tracebacks for user errors too."""
    return os.environ.get("HFSOUP_DEBUG", "").strip().lower() in _TRUE


def progress_delay() -> float:
    """`HFSOUP_PROGRESS_DELAY` (default 1 s): a progress bar shows once its step has run this long, so that quick
    steps print nothing but their stage's line (0 shows every bar)."""
    try:
        return max(0.0, float(os.environ.get("HFSOUP_PROGRESS_DELAY", "1")))
    except ValueError:
        return 1.0


def hub_endpoint() -> str:
    """The Hub endpoint the clients talk to (`HF_ENDPOINT`, as `huggingface_hub` read it)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_metrics() -> bool:
    """`HFSOUP_HUB_METRICS=1` scores with the Hub's `evaluate-metric/<name>` modules instead of those shipped with
    hfsoup (the default): Python scripts downloaded from `HF_ENDPOINT` and run. `--hub-metrics` says the same."""
    return os.environ.get("HFSOUP_HUB_METRICS", "").strip().lower() in _TRUE


def hub_retries() -> int:
    """`HFSOUP_HUB_RETRIES` (default 5): how many times a Hub call that failed transiently (HTTP 408, 429, 5xx, a
    timeout, a dropped connection, a download that fails its checksum) is tried again before hfsoup gives up."""
    return max(0, int(os.environ.get("HFSOUP_HUB_RETRIES", "5")))


def hub_retry_wait() -> float:
    """`HFSOUP_HUB_RETRY_WAIT` (default 1 s): the first wait between tries; it doubles each time, up to 16 s."""
    return max(0.0, float(os.environ.get("HFSOUP_HUB_RETRY_WAIT", "1")))


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE=1`, as `huggingface_hub` read it: Hub ingredients come from the Hub cache, and a miss is an
    error at once (never retried)."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache() -> str:
    """The Hugging Face Hub cache folder (`HF_HUB_CACHE`, as `huggingface_hub` read it)."""
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.environ.get("HF_HUB_CACHE", "~/.cache/huggingface/hub")


#: `hfsoup find --sort` choices (largest first) and how many candidates are checked at once by default (`--jobs`).
FIND_SORTS = ("downloads", "likes", "modified")
FIND_JOBS = 8
