"""Tokens never reach a screen or a log: one scrubber for every message and traceback hfsoup prints.

A Hub server may echo the request's `Authorization` header in an error text, a user may paste a token into a recipe,
and a traceback carries every chained exception's message. `scrub` replaces, wherever they occur:

- the tokens in use: those given explicitly (`--token`, registered with `remember`), `HF_TOKEN` (and the older
  `HUGGING_FACE_HUB_TOKEN`), and the token stored by `hf auth login` (`huggingface_hub.get_token`, read lazily, so
  a login during the session is seen);
- anything shaped like a Hugging Face token (`hf_` or `api_org_` followed by 20 or more letters and digits), since
  a token of another account is as secret as the user's own.

The CLI runs its error paragraph, its `HFSOUP_DEBUG=1` traceback and its log lines through it (`ScrubbingFormatter`);
`HfsoupError` scrubs its own message, for callers of the Python API.
"""

from __future__ import annotations

import logging
import os
import re
import sys

REPLACEMENT = "<token>"
TOKEN_SHAPED = re.compile(r"(?:hf_|api_org_)[A-Za-z0-9]{20,}")
# Literal replacement of a shorter "token" would garble ordinary words more than it protects.
_MIN_LITERAL = 6
_remembered: set[str] = set()


def remember(token: object) -> None:
    """Scrub `token` from everything printed from now on (the CLI's `--token`; a `bool` or None is ignored)."""
    if isinstance(token, str) and len(token) >= _MIN_LITERAL:
        _remembered.add(token)


def _tokens_in_use(extra: tuple[object, ...]) -> set[str]:
    found = set(_remembered)
    found.update(t for t in extra if isinstance(t, str))
    found.update(os.environ.get(name, "") for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))
    # The stored login token, only where huggingface_hub is already loaded: importing it (and reading a file) for
    # every message of a session that never touches the Hub would cost time and could itself fail.
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub import get_token

            found.add(get_token() or "")
        except Exception:  # noqa: BLE001 - scrubbing must never be the thing that fails
            pass
    return {t.strip() for t in found if len(t.strip()) >= _MIN_LITERAL}


def scrub(text: str, *tokens: object) -> str:
    """`text` with the tokens in use, the given `tokens` and anything token-shaped replaced by `<token>`.

    Example:
        ```py
        >>> scrub("401 for Bearer hf_abcdefghijklmnopqrstuvwxyz0123")
        '401 for Bearer <token>'
        ```
    """
    if not text:
        return text
    for token in sorted(_tokens_in_use(tokens), key=len, reverse=True):  # longest first: one may contain another
        if token in text:
            text = text.replace(token, REPLACEMENT)
    return TOKEN_SHAPED.sub(REPLACEMENT, text)


def cut(text: str, limit: int = 500) -> str:
    """`text` scrubbed, then cut to `limit` characters for a message. Always in that order: a token cut in two no
    longer looks like one, and its first half would be printed.

    Example:
        ```py
        >>> cut("x" * 490 + "hf_abcdefghijklmnopqrstuvwxyz0123")
        'xxx...x<token>'
        ```
    """
    text = scrub(text)
    return text if len(text) <= limit else text[:limit] + "..."


class ScrubbingFormatter(logging.Formatter):
    """A `logging.Formatter` whose every line (message, arguments, exception traceback) is scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
