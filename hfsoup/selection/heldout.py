"""Held-out and reporting parts of a task's data: where a soup is selected, and where it is reported.

A greedy or learned soup is chosen by its score on a held-out part; reporting the same rows would flatter it, so the
two parts never overlap unless forced, and each says how it was carved:

- one split for both (the default, `validation`): a seeded `fraction` of its rows is held out, the rest reported;
- two splits (`--held-out train --report validation`): all of the held-out split, or a seeded `size` of its rows.

A split may be a `datasets` spec (`--held-out 'validation[:50%]' --report 'validation[50%:]'`): two specs are two
parts, and the rows they share in their base splits (given as `keys`) are overlap, refused as above.

Example:
    ```py
    >>> held, report = carve({"validation": 408}, held_out=None, report="validation")
    >>> held.description, report.description
    ('seeded 50% of validation (seed 0, 204 rows)', 'the other 50% of validation (204 rows)')
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EvaluationError, option
from ..evaluation.splitspec import is_sliced

logger = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.5


@dataclass(frozen=True)
class Part:
    """Some rows of one dataset split.

    Attributes:
        split (`str`): the dataset split.
        positions (`tuple[int, ...] | None`): the rows used, in increasing order; `None` for every row.
        num_rows (`int`): how many rows that is.
        description (`str`): how the part was carved, for people (`seeded 50% of validation (seed 0, 204 rows)`).
    """

    split: str
    positions: tuple[int, ...] | None
    num_rows: int
    description: str

    def rows(self, split_rows: int) -> set[int]:
        return set(range(split_rows)) if self.positions is None else set(self.positions)

    def to_dict(self) -> dict:
        return {"split": self.split, "description": self.description, "num_rows": self.num_rows}


def carve(
    split_rows: dict[str, int],
    *,
    held_out: str | None,
    report: str,
    fraction: float = DEFAULT_FRACTION,
    size: int | None = None,
    seed: int = 0,
    force: bool = False,
    keys: Mapping[str, Sequence[Hashable]] | None = None,
) -> tuple[Part, Part]:
    """The held-out and reporting parts.

    Args:
        split_rows (`dict[str, int]`): the number of rows of the splits named by `held_out` and `report`.
        held_out (`str`, *optional*): the split to select on; by default (or when equal to `report`) a seeded part
            of the `report` split.
        report (`str`): the split to report on.
        fraction (`float`, *optional*, defaults to 0.5): the share of a shared split that is held out; 1 holds out
            every row, which then are also the reported rows: refused unless `force`.
        size (`int`, *optional*): hold out a seeded sample of this many rows instead (of the shared split, or of
            the held-out split).
        seed (`int`, *optional*, defaults to 0): seeds the sample.
        force (`bool`, *optional*, defaults to `False`): accept held-out rows that are also reported.
        keys (`Mapping[str, Sequence]`, *optional*): per split, each row's identity (`(base split, row)`); with it,
            two different splits (specs such as `validation[:60%]` and `validation[50%:]`) are checked for shared
            rows. Without it, different split names are taken to be different rows.

    Raises:
        `EvaluationError`: a fraction or size out of range, a part with no rows, or overlapping parts without
        `force`.
    """
    import numpy as np

    if not 0 < fraction <= 1:
        raise EvaluationError(
            f"The held-out fraction must be in (0, 1]; got {fraction}.", fix=f"Pass {_fraction(0.5)}, say."
        )
    if size is not None and size < 1:
        raise EvaluationError(f"The held-out size must be at least 1; got {size}.", fix=f"Pass {_size(metavar='N')}.")
    rng = np.random.default_rng(seed)
    if held_out is None or held_out == report:
        n = split_rows[report]
        k = size if size is not None else round(n * fraction)
        if k > n:
            raise EvaluationError(f"Cannot hold out {k} of the {n} rows of {report}.", fix=f"Pass {_size(n)} or less.")
        if k == n:
            every = Part(report, None, n, f"all of {report} ({n} rows)")
            _refuse_overlap(every, every, n, force=force)  # every row is shared
            return every, Part(report, None, n, f"all of {report} ({n} rows), the same rows as the held-out part")
        order = rng.permutation(n)
        held_rows, report_rows = sorted(order[:k].tolist()), sorted(order[k:].tolist())
        if not held_rows:
            raise EvaluationError(
                f"Holding out {fraction:.0%} of the {n} rows of {report} leaves no held-out rows.",
                fix=f"Raise {_fraction(metavar='F')}, or hold out another split with {_held_out('train')}.",
            )
        share = f"{fraction:.0%}" if size is None else f"{k} of the {n} rows"
        rest = f"{1 - fraction:.0%}" if size is None else "rows"
        held = Part(report, tuple(held_rows), k, f"seeded {share} of {report} (seed {seed}, {k} rows)")
        report_part = Part(report, tuple(report_rows), n - k, f"the other {rest} of {report} ({n - k} rows)")
        if keys is not None:  # a spec may read a row twice (validation[:10]+validation[5:15]): both halves may hold it
            _refuse_overlap(held, report_part, _shared(keys[report], held, keys[report], report_part), force=force)
        return held, report_part
    n_held, n_report = split_rows[held_out], split_rows[report]
    report_part = Part(report, None, n_report, _whole(report, n_report))
    if size is not None and size < n_held:
        rows = tuple(sorted(rng.choice(n_held, size=size, replace=False).tolist()))
        held = Part(held_out, rows, size, f"seeded {size} of the {n_held} rows of {held_out} (seed {seed})")
    else:
        held = Part(held_out, None, n_held, _whole(held_out, n_held))
    if keys is not None:
        _refuse_overlap(held, report_part, _shared(keys[held_out], held, keys[report], report_part), force=force)
    return held, report_part


def whole(label: str, split: str, n: int) -> Part:
    """Every row of a further reported set (`carve` makes the first): `all of train (8 rows)`."""
    return Part(split, None, n, _whole(label, n))


def refuse_shared(
    held: Part,
    held_keys: Sequence[Hashable],
    report: Part,
    report_keys: Sequence[Hashable],
    *,
    force: bool = False,
) -> int:
    """How many rows of `report` (a further reported set of the same data) are held-out rows, by identity; refused
    unless `force`, as `carve` refuses its own overlap.

    Raises:
        `EvaluationError`: shared rows without `force`.
    """
    shared = _shared(held_keys, held, report_keys, report)
    _refuse_overlap(held, report, shared, force=force)
    return shared


def _shared(held_keys: Sequence[Hashable], held: Part, report_keys: Sequence[Hashable], report: Part) -> int:
    """How many reported rows are, by identity, also held-out rows."""
    selected = {held_keys[i] for i in held.rows(len(held_keys))}
    return sum(1 for i in report.rows(len(report_keys)) if report_keys[i] in selected)


def _whole(split: str, n: int) -> str:
    # A slice names its rows itself: "validation[:50%] (204 rows)"; a split name is all of it.
    return f"{split} ({n} rows)" if is_sliced(split) else f"all of {split} ({n} rows)"


def _refuse_overlap(held: Part, report: Part, shared: int, *, force: bool) -> None:
    """Refuse (or, forced, warn about) `shared` held-out rows that are also reported."""
    if not shared:
        return
    same = held.split == report.split and held.positions is None  # every row of one split held out
    if force:
        logger.warning(
            "selecting on %d rows that are also reported (--force): the reported scores of greedy and learned soups "
            "are then optimistic",
            shared,
        )
        return
    raise EvaluationError(
        f"The held-out part ({held.description}) and the reported part ({report.description}) share {shared} rows: "
        "a soup selected on the rows it is reported on looks better than it is.",
        fix=(
            f"Hold out part of the split ({_fraction(metavar='F')} below 1) or another split ({_held_out('train')})"
            if same
            else "Give parts without shared rows, e.g. "
            f"{_held_out('validation[:50%]')} {option('report', 'validation[50%:]', within='Selection')}"
        )
        + f", or pass {option('force', within='Selection')} to report on the selection rows anyway (recorded).",
    )


def duplicate_inputs(held_rows: list[tuple], report_rows: list[tuple]) -> int:
    """How many reported examples have the same inputs as a held-out one (datasets may repeat texts across splits;
    an image is the same when its pixels are)."""
    held = {tuple(map(_identity, row)) for row in held_rows}
    return sum(1 for row in report_rows if tuple(map(_identity, row)) in held)


def _identity(value: Any) -> Hashable:
    """A field's value as something to compare: itself when hashable; an image (PIL, or `datasets`' undecoded
    `{"bytes", "path"}`) by a digest of its pixels or bytes; lists and mappings element by element."""
    import hashlib

    if hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        return ("image", value.mode, tuple(value.size), hashlib.sha256(value.tobytes()).hexdigest())
    if isinstance(value, dict):
        return tuple(sorted((str(k), _identity(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_identity(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return hashlib.sha256(value).hexdigest()
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


# The held-out options as fixes name them; Selection calls two of them by shorter names than their flags.
def _fraction(value: object = True, *, metavar: str | None = None) -> str:
    return option("fraction", value, flag="--held-out-fraction", metavar=metavar, within="Selection")


def _size(value: object = True, *, metavar: str | None = None) -> str:
    return option("size", value, flag="--held-out-size", metavar=metavar, within="Selection")


def _held_out(split: str) -> str:
    return option("held_out", split, flag="--held-out", within="Selection")
