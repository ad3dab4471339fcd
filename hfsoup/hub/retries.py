"""Bounded retries of Hub calls, and what counts as a transient failure worth retrying.

`huggingface_hub` resumes a file download whose connection dropped and checks its size, but it retries no API call
(repo info, headers) and no file answered with HTTP 5xx. So every Hub call hfsoup makes goes through `with_retries`,
which tries again on what a rerun would likely get past: HTTP 408, 429 and 5xx, timeouts, dropped connections, a
truncated or damaged answer; never with `HF_HUB_OFFLINE` set, where the same call fails the same way. When it
gives up it records on the exception how many tries were made, so the one Hub error translator (`hub.errors`) can
say so.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable

from .. import constants
from ..scrub import cut

logger = logging.getLogger(__name__)

#: HTTP statuses a retry may get past: timeouts, rate limits and server errors.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Set on an exception that `with_retries` gave up on: how many calls were made in all.
_TRIES_ATTRIBUTE = "hfsoup_tries"


class ChecksumMismatch(Exception):
    """A downloaded file whose content is not what the Hub lists (removed from the cache; retried)."""


def with_retries(call: Callable[[], object], *, what: str) -> object:
    """`call()`, tried again on transient failures: HTTP 408, 429 and 5xx, timeouts, dropped connections, a
    truncated download, a checksum mismatch. At most `HFSOUP_HUB_RETRIES` retries (default 5), waiting
    `HFSOUP_HUB_RETRY_WAIT` seconds (default 1), doubling each time; then the last error is raised.

    Example:
        ```py
        >>> info = with_retries(lambda: HfApi().model_info("org/name"), what="resolving org/name")
        ```
    """
    retries, wait = constants.hub_retries(), constants.hub_retry_wait()
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == retries:
                setattr(exc, _TRIES_ATTRIBUTE, attempt + 1)
                raise
            logger.warning(
                "%s failed (%s); trying again in %.1f s (retry %d of %d)",
                what,
                first_line(exc),
                wait,
                attempt + 1,
                retries,
            )
            time.sleep(wait)
            wait = min(2 * wait, 16.0)
    raise AssertionError("unreachable")  # pragma: no cover


def tries(exc: BaseException) -> int | None:
    """How many calls `with_retries` made before giving up with `exc`; None when it did not retry it."""
    return getattr(exc, _TRIES_ATTRIBUTE, None)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a Hub client error, or None (not an HTTP error, or no response)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


def is_damaged(exc: BaseException) -> bool:
    """A file, or an API answer, damaged or cut short in transit."""
    if isinstance(exc, ChecksumMismatch | json.JSONDecodeError | UnicodeDecodeError):
        return True
    # huggingface_hub's size check after its own resume attempts
    return isinstance(exc, OSError) and exc.errno is None and "Consistency check failed" in str(exc)


def is_transient(exc: BaseException) -> bool:
    """Whether trying `exc`'s call again may succeed (see `with_retries`)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    # Offline, a call that needs the network fails the same way every time (OfflineModeIsEnabled is a
    # ConnectionError): retrying would only make the user wait for the same answer.
    if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError) or constants.hub_offline():
        return False
    if isinstance(exc, HfHubHTTPError):
        return http_status(exc) in TRANSIENT_STATUS
    return is_damaged(exc) or is_connection_error(exc)


def is_connection_error(exc: BaseException) -> bool:
    """A timeout, a refused or dropped connection: the Hub was not reached, or stopped answering."""
    # huggingface_hub >= 2 talks HTTP through `httpx2` (earlier versions: `httpx`); both name their errors alike.
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if isinstance(exc, module.TransportError):
            return True
    return isinstance(exc, ConnectionError | TimeoutError)


def first_line(exc: BaseException) -> str:
    """The first line of what `exc` says (its type when it says nothing), bounded for a message."""
    text = str(exc).strip()
    return cut(text.splitlines()[0] if text else type(exc).__name__)
