"""The one validator of data that users write: recipes, sweeps, and the options of the Python API.

A recipe is checked in one pass that reports every problem with its location (`method.steps: expected a positive
integer, got 0`), not just the first. The checks of an option live with its declaration (`hfsoup.options.option`'s
`kind`); this module holds the kinds, the `Problems` collector and `section`, which builds an options dataclass from
a mapping and records unknown keys, missing keys and failed checks. Nothing here imports beyond the standard library
and hfsoup's errors, so the CLI's start-up can use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import quote

#: The dataclass-field metadata key under which `hfsoup.options.option` stores an option's declaration.
SPEC_KEY = "hfsoup"
#: Why a value is wrong (None when it is right).
Check = Callable[[Any], "str | None"]


@dataclass
class Problems:
    """Every problem found, each as (location, message), in the order found."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.items.append((where, message))

    def extend(self, found: list[tuple[str, str]]) -> None:
        self.items.extend(found)

    def lines(self) -> list[str]:
        return [f"{where}: {message}" for where, message in self.items]


def at(where: str, key: Any) -> str:
    """The location of `key` under `where`, for a problem: an odd or huge key is quoted, and cut."""
    if isinstance(key, str) and 0 < len(key) <= 64 and key.isprintable():
        return f"{where}.{key}" if where else key
    return f"{where}[{quote(key, limit=64)}]"


def type_name(value: Any) -> str:
    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false", "list": "a list"}
    names["dict"] = "a mapping"
    return "null" if value is None else names.get(type(value).__name__, type(value).__name__)


# ---- kinds: what a value must be, with the message when it is not ----


@dataclass(frozen=True)
class Kind:
    """What an option's value must be.

    Attributes:
        check (`Check`): why a value (from YAML or Python) is not of this kind, or None.
        parse (`Callable[[str], Any]`, *optional*): a command-line text to a value; None for a switch (bool).
        metavar (`str`): how `--help` shows the value.
    """

    check: Check
    parse: Callable[[str], Any] | None = None
    metavar: str = "VALUE"
    nargs: str | None = None  # "+": the flag takes several values (a list)
    append: bool = False  # the flag may be repeated, each time adding one value to a list (argparse's "append")
    #: Whether the value may also be a list of candidates, each checked as one value (`candidates`), chosen between
    #: on held-out data.
    candidates: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional(check: Check, optional: bool) -> Check:
    return (lambda v: None if v is None else check(v)) if optional else check


def boolean() -> Kind:
    return Kind(lambda v: None if isinstance(v, bool) else f"expected true or false, got {type_name(v)}")


def string(*, optional: bool = False, label: str = "a string") -> Kind:
    def check(v: Any) -> str | None:
        return None if isinstance(v, str) else f"expected {label}, got {type_name(v)}"

    return Kind(_optional(check, optional), str, "TEXT")


def one_of(choices: tuple[str, ...], *, what: str = "") -> Kind:
    """One of `choices`; `what` names the choice in the message (`expected an acceptance rule, one of ge, gt`)."""

    def check(v: Any) -> str | None:
        named = f"{what}, " if what else ""
        return None if v in choices else f"expected {named}one of {', '.join(choices)}, got {quote(v)}"

    return Kind(check, str, "{" + ",".join(choices) + "}")


def integer(*, optional: bool = False, minimum: int | None = None, what: str = "") -> Kind:
    """An integer (at least `minimum`); `what` says what it counts (`at least one step`)."""

    def check(v: Any) -> str | None:
        if not _is_int(v) or (minimum is not None and v < minimum):
            wanted = {None: "an integer", 1: "a positive integer"}.get(minimum, f"an integer of at least {minimum}")
            wanted = f"{wanted} ({what})" if what else wanted
            return f"expected {wanted}, got {quote(v)}"
        return None

    return Kind(_optional(check, optional), int, "N")


def positive_int(*, optional: bool = False, what: str = "") -> Kind:
    return integer(optional=optional, minimum=1, what=what)


def number(*, optional: bool = False, positive: bool = False, what: str = "") -> Kind:
    def check(v: Any) -> str | None:
        if not _is_number(v) or (positive and v <= 0):
            wanted = "a positive number" if positive else "a number"
            return f"expected {f'{wanted} ({what})' if what else wanted}, got {quote(v)}"
        return None

    return Kind(_optional(check, optional), float, "X")


def fraction() -> Kind:
    """A share above 0 and at most 1 (what 1 means is for the option's stage to say: all held out, say)."""

    def check(v: Any) -> str | None:
        if not _is_number(v) or not 0 < v <= 1:
            return f"expected a number above 0 and at most 1, got {quote(v)}"
        return None

    return Kind(check, float, "F")


def unit() -> Kind:
    """A number from 0 to 1, both included (an interpolation factor)."""

    def check(v: Any) -> str | None:
        if not _is_number(v) or not 0 <= v <= 1:
            return f"expected a number from 0 to 1, got {quote(v)}"
        return None

    return Kind(check, float, "T")


def _comma_numbers(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError as e:
        raise ValueError(f"expected comma-separated numbers such as 0.5,0.3,0.2, got {text!r}") from e


def weights() -> Kind:
    """A list of non-negative numbers (`0.5,0.3,0.2` on the command line); None allowed."""

    def check(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, list | tuple) or not v:
            return f"expected a list of numbers, got {type_name(v)}"
        if any(not _is_number(w) or w < 0 for w in v):
            return f"expected non-negative numbers, got {quote(v)}"
        return None

    return Kind(check, _comma_numbers, "W1,W2,...")


def numbers(*, check_each: Check | None = None, what: str = "numbers") -> Kind:
    """A list of finite numbers (`1,0.5,-1` on the command line), each passing `check_each`; None allowed."""

    def check(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, list | tuple) or not v:
            return f"expected a list of {what}, got {type_name(v)}"
        if any(not _is_number(w) or (check_each is not None and check_each(w)) for w in v):
            return f"expected {what}, got {quote(v)}"
        return None

    return Kind(check, _comma_numbers, "X1,X2,...")


def strings(*, optional: bool = True) -> Kind:
    """A list of strings (`a,b,c` on the command line; `none` is the empty list)."""

    def check(v: Any) -> str | None:
        if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
            return f"expected a list of strings, got {quote(v)}"
        return None

    def parse(text: str) -> list[str]:
        return [] if text.strip() == "none" else [s.strip() for s in text.split(",") if s.strip()]

    return Kind(_optional(check, optional), parse, "A,B,...")


def size() -> Kind:
    """A byte size: `5GB`, `500MB`, or a number of bytes."""

    def check(v: Any) -> str | None:
        from .io.checkpoint import parse_size  # numpy-free part of the reader module, imported when checked

        if isinstance(v, bool) or not isinstance(v, str | int):
            return f"expected a size such as 5GB or 500MB, got {type_name(v)}"
        try:
            parse_size(v)
        except ValueError as e:
            return str(e)
        return None

    return Kind(check, str, "SIZE")


def custom(
    check: Check,
    *,
    parse: Callable[[str], Any] | None = str,
    metavar: str = "VALUE",
    nargs: str | None = None,
    append: bool = False,
) -> Kind:
    return Kind(check, parse, metavar, nargs, append)


#: The most candidates one soup may score (the product of every option given as a list): each is a soup built and
#: scored, so a typo such as `0:1:1000` is refused rather than run for hours.
MAX_CANDIDATES = 64


def is_candidate_list(value: Any) -> bool:
    """Whether an option's value is a list of candidates (a list, a tuple or a `range`) rather than one value."""
    return isinstance(value, list | tuple | range)


def _candidate_text(text: str, parse: Callable[[str], Any]) -> Any:
    """`0.5` (one value), `0.2,0.5,0.8` (a list) or `0.1:0.9:5` (start:stop:count, evenly spaced, both ends in)."""
    if ":" in text:
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError as e:
            raise ValueError(f"expected a range start:stop:count such as 0.1:0.9:5, got {text!r}") from e
        if count < 1 or count > MAX_CANDIDATES:
            raise ValueError(f"expected a range's count from 1 to {MAX_CANDIDATES}, got {text!r}")
        if count == 1:
            return [start]
        step = (stop - start) / (count - 1)
        # 12 significant digits: 0.1:0.9:5 is 0.3, not 0.30000000000000004 (the table and the card show them).
        values = [float(f"{start + i * step:.12g}") for i in range(count)]
        if parse is int:  # an integer option (steps): the range must fall on integers
            if any(v != int(v) for v in values):
                raise ValueError(f"expected a range of whole numbers such as 10:30:3, got {text!r}")
            return [int(v) for v in values]
        return values
    if "," in text:
        return [parse(w.strip()) for w in text.split(",") if w.strip()]
    return parse(text)


def candidates(kind: Kind) -> Kind:
    """`kind`, or a non-empty list of candidates each of `kind` (`0.2,0.5,0.8` or `0.1:0.9:5` on the command line,
    a YAML list in a recipe, a list or `range` in Python). With a task each candidate is scored on the held-out part
    and the best kept; without one, a list is refused where the soup is made."""
    one, parse = kind.check, kind.parse
    assert parse is not None, "a switch has no candidates"

    def check(v: Any) -> str | None:
        if not is_candidate_list(v):
            return one(v)
        if not v:
            return "expected a value or a non-empty list of candidates, got an empty list"
        for i, item in enumerate(v):
            if (message := one(item)) is not None:
                return f"candidate {i + 1} of {len(v)}: {message}"
        return None

    return Kind(check, lambda text: _candidate_text(text, parse), f"{kind.metavar}[,...]", candidates=True)


# ---- building an options dataclass from data ----


def declared(cls: type) -> list[dataclasses.Field]:
    """The fields of an options dataclass that a recipe may set (declared with `hfsoup.options.option`, whose
    metadata says `kind` and `recipe`)."""
    return [f for f in dataclasses.fields(cls) if getattr(f.metadata.get(SPEC_KEY), "recipe", False)]


def field_problems(cls: type, data: Mapping[str, Any], where: str, *, every: bool = False) -> list[tuple[str, str]]:
    """The failed checks of the keys of `data` that are declared fields of `cls` (recipe fields, or `every` one)."""
    found = []
    fields = [f for f in dataclasses.fields(cls) if SPEC_KEY in f.metadata] if every else declared(cls)
    for f in fields:
        if f.name in data and (message := f.metadata[SPEC_KEY].kind.check(data[f.name])):
            found.append((at(where, f.name), message))
    return found


def section(
    data: Any,
    where: str,
    cls: type,
    problems: Problems,
    *,
    required: tuple[str, ...] = (),
    extra: Mapping[str, Check] | None = None,
    build: bool = True,
) -> Any:
    """Build `cls` from the mapping `data`: unknown keys, missing keys and failed checks are all recorded.

    `extra` checks keys that are not fields of `cls` (a method's `name`); they are left out of the build.
    """
    if not isinstance(data, dict):
        problems.add(where, f"expected a mapping, got {type_name(data)}")
        return None
    extra = dict(extra or {})
    known = [f.name for f in declared(cls)]
    before = len(problems.items)
    for key in data:
        if key not in known and key not in extra:
            problems.add(at(where, key), f"unknown key (expected one of: {', '.join([*extra, *known])})")
    for key in required:
        if key not in data:
            problems.add(f"{where}.{key}" if where else key, "missing (required)")
    for key, check in extra.items():
        if key in data and (message := check(data[key])):
            problems.add(at(where, key), message)
    problems.extend(field_problems(cls, data, where))
    if len(problems.items) > before or not build:
        return None
    return cls(**{k: v for k, v in data.items() if k not in extra})


def check_instance(options: Any, *, where: str) -> list[tuple[str, str]]:
    """The failed checks of an options dataclass built in Python (every declared field)."""
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return field_problems(type(options), values, where, every=True)
