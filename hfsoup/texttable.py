"""Tables as text: aligned columns for the terminal (`hfsoup check`, `eval`, a soup's results) and Markdown for cards.

Cells are strings, formatted by the caller; the first row is the header.
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]], *, indent: str = "") -> list[str]:
    """The rows as lines of left-aligned columns two spaces apart, each after `indent`, without trailing spaces.

    Example:
        ```py
        >>> text_table([["split", "accuracy"], ["validation", "0.8125"]], indent="  ")
        ['  split       accuracy', '  validation  0.8125']
        ```
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """The rows as a Markdown table (GitHub's), the first one its header.

    Example:
        ```py
        >>> print(markdown_table([["model", "weight"], ["org/a", "0.5"]]))
        | model | weight |
        |---|---|
        | org/a | 0.5 |
        ```
    """
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows[1:])])
