"""The one place errors are formatted for people: one paragraph, the fix, the problems listed."""

from __future__ import annotations

import errno

from .. import scrub
from ..errors import HfsoupError


def format_error(exc: BaseException) -> str:
    """One paragraph for a person: what went wrong and, when known, the fix."""
    if not isinstance(exc, HfsoupError):
        exc = _as_hfsoup_error(exc) or exc
    if isinstance(exc, HfsoupError):
        text = exc.message if exc.fix is None else f"{exc.message} {exc.fix}"
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        text = (
            f"No space left on the device while writing {exc.filename or 'the output'}. Nothing was moved into "
            "place. Free some space or choose an output folder on another disk with -o."
        )
    else:
        said = scrub.cut(str(exc), 1000)  # it may quote input of any size, and a token
        text = f"Unexpected {type(exc).__name__}: {said}. This is probably a bug in hfsoup; please report it."
    # One line, unwrapped: terminals wrap it, and logs and greps keep it whole. Itemized problems (a recipe's) follow,
    # one per line, each with its location, unless the paragraph already names each (a compatibility refusal).
    listed = isinstance(exc, HfsoupError) and not exc.problems_in_message
    items = "".join(f"\n  - {p}" for p in exc.problems) if listed else ""
    return scrub.scrub(f"Error: {' '.join(text.split())}{items}\n(Set HFSOUP_DEBUG=1 to see the traceback.)")


def _as_hfsoup_error(exc: BaseException) -> HfsoupError | None:
    """Hub client errors that escaped a stage (the stages convert the ones they expect)."""
    from ..hub.errors import translate

    return translate(exc)
