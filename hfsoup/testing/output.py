"""What the CLI prints, read as a test reads it: the lines of the stages that ran, then the error paragraph."""

from __future__ import annotations


def error_after_stages(err: str) -> str:
    """`err` from its `Error: ` line on, checked: what comes before it is the stages' own lines (one each, a stage
    that started before the refusal), never a traceback or another error. Without an error line, `err` itself."""
    if "Error: " not in err:
        return err
    start = err.index("Error: ")
    before = err[:start]
    assert "Traceback" not in before and "Error" not in before, err
    assert not before or before.endswith("\n"), err  # the error starts its own line
    return err[start:]
