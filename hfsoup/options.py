"""Options declared once, as dataclass fields: the Python API, the command-line flags and the recipe keys.

    @dataclass
    class Options:
        steps: int = option(20, kind=schema.positive_int(), help="passes", flag="--learned-steps")

The field is the Python keyword (`LearnedSoup(steps=5)`) and the recipe key (`method: {name: learned, steps: 5}`);
`add_flags` makes the flag (`--learned-steps N`, help text and default from the same declaration), `given` reads
back only the flags a user typed, and `build` makes and checks an instance, raising one error that lists every
problem and names both spellings of each option in its fix. Light on purpose: `hfsoup --help` builds every flag.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from . import schema
from .errors import InvalidSoupArgumentsError
from .errors import option as spelled

_KEY = schema.SPEC_KEY


@dataclass(frozen=True)
class Spec:
    """How one option is checked and shown.

    Attributes:
        kind (`schema.Kind`): what its value must be (the check, and how a flag's text is parsed).
        help (`str`): one line for `--help`; the default is appended.
        flag (`str`, *optional*): the command-line flag; by default `--name-with-dashes` (`--no-name` for a switch
            that defaults to on).
        metavar (`str`, *optional*): how `--help` shows the value (by default the kind's).
        recipe (`bool`): whether a recipe may set it (run-time switches such as `hub_metrics` may not).
        cli (`bool`): whether the command line has a flag for it.
    """

    kind: schema.Kind
    help: str
    flag: str | None = None
    metavar: str | None = None
    recipe: bool = True
    cli: bool = True


def option(
    default: Any = MISSING,
    *,
    kind: schema.Kind,
    help: str,
    flag: str | None = None,
    metavar: str | None = None,
    recipe: bool = True,
    cli: bool = True,
) -> Any:
    """A dataclass field declaring one option (see the module docstring). Mutable defaults are copied per instance."""
    spec = Spec(kind, help, flag, metavar, recipe, cli)
    if isinstance(default, list | dict | set):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={_KEY: spec})
    return dataclasses.field(default=default, metadata={_KEY: spec})


def spec_of(f: dataclasses.Field) -> Spec:
    spec = f.metadata.get(_KEY)
    if spec is None:  # a plain field: no check, no flag, not in recipes
        return Spec(schema.custom(lambda v: None), "", recipe=False, cli=False)
    return spec


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def flags_of(f: dataclasses.Field) -> list[str]:
    """Every spelling of the option's flag (`-o`, `--output`); the first is the one fixes name."""
    spec = spec_of(f)
    return spec.flag.split("/") if spec.flag else [flag_of(f)]


def flag_of(f: dataclasses.Field) -> str:
    spec = spec_of(f)
    if spec.flag:
        return spec.flag.split("/")[0]
    switch_on = spec.kind.parse is None and default_of(f) is True
    return "--" + ("no-" if switch_on else "") + f.name.replace("_", "-")


def fix_for(f: dataclasses.Field, *, within: str | None = None) -> str:
    """How a fix names this option: `--learned-steps N (LearnedSoup(steps=N))`."""
    spec = spec_of(f)
    default = default_of(f)
    if spec.kind.parse is None:
        return spelled(f.name, not default, flag=flag_of(f), within=within)
    if default is not None and default is not MISSING:  # the default is always a valid value to show
        return spelled(f.name, default, flag=flag_of(f), within=within)
    return spelled(f.name, metavar=spec.metavar or spec.kind.metavar, flag=flag_of(f), within=within)


def _default_text(value: Any) -> str:
    if value is None or value is MISSING:
        return ""
    if isinstance(value, list | tuple):
        return f" (default: {','.join(map(str, value)) or 'none'})"
    return f" (default: {value})"


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    dest: str,
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
    prefix: str = "",
    required: bool | None = None,
    help: Mapping[str, str] | None = None,
) -> None:
    """One flag per field of `cls` (those with `cli=True`, not in `skip`, in `only` when given). Absent flags leave
    no attribute, so `given` tells what was typed from what was defaulted; the dataclass keeps the defaults. A field
    without a default is a required flag unless `required=False`; `help` replaces a field's help text for one verb."""
    skipped, wanted = set(skip), None if only is None else set(only)
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if not spec.cli or f.name in skipped or (wanted is not None and f.name not in wanted):
            continue
        default = default_of(f)
        text = f"{prefix}{(help or {}).get(f.name, spec.help)}"
        if spec.kind.parse is None:  # a switch: its flag sets the opposite of the default
            parser.add_argument(
                *flags_of(f),
                dest=f"{dest}.{f.name}",
                action="store_false" if default is True else "store_true",
                default=argparse.SUPPRESS,
                help=text,
            )
            continue
        extra: dict[str, Any] = {"nargs": spec.kind.nargs} if spec.kind.nargs else {}
        if spec.kind.append:  # `--report a --report b` -> ["a", "b"]; absent, no attribute (argparse.SUPPRESS)
            extra["action"] = "append"
        if default is MISSING and required is not False:
            extra["required"] = True
        parser.add_argument(
            *flags_of(f),
            dest=f"{dest}.{f.name}",
            type=_argument_type(spec.kind),
            metavar=spec.metavar or spec.kind.metavar,
            default=argparse.SUPPRESS,
            help=text + _default_text(default) + (_CANDIDATES_HELP if spec.kind.candidates else ""),
            **extra,
        )


#: What a flag that takes candidates (`schema.candidates`) adds to its help.
_CANDIDATES_HELP = "; candidates A,B,... or START:STOP:COUNT are each scored with --task, the best kept"


def _argument_type(kind: schema.Kind):  # noqa: ANN202 - an argparse `type`
    def parse(text: str) -> Any:
        try:
            return kind.parse(text)  # type: ignore[misc]
        except ValueError as e:  # argparse's usage error (exit 2) names the flag and quotes the value
            raise argparse.ArgumentTypeError(str(e) if "expected" in str(e) else f"invalid value {text!r}") from e

    parse.__name__ = kind.metavar  # what argparse's message calls the expected type
    return parse


def given(args: argparse.Namespace, cls: type, *, dest: str) -> dict[str, Any]:
    """The options of `cls` that were typed on the command line (see `add_flags`)."""
    keys = {f.name: f"{dest}.{f.name}" for f in dataclasses.fields(cls)}
    return {name: getattr(args, key) for name, key in keys.items() if hasattr(args, key)}


def flags_given(args: argparse.Namespace, cls: type, *, dest: str) -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return [flag_of(fields[name]) for name in given(args, cls, dest=dest)]


def build(cls: type, values: Any = None, *, within: str) -> Any:
    """An instance of the options dataclass `cls` from an instance, a mapping or None (the defaults), checked.

    Raises `InvalidSoupArgumentsError` listing every problem; its fix names the flag and the keyword of the first.
    """
    if isinstance(values, cls):
        options = values
    else:
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in fields]
        if unknown:
            known = ", ".join(fields) or "none"
            raise InvalidSoupArgumentsError(
                f"{within} has no option {', '.join(map(repr, unknown))} (its options: {known}).",
                fix=f"Use only {within}'s options.",
            )
        options = cls(**values)
    problems = schema.check_instance(options, where="")
    if problems:
        first = {f.name: f for f in dataclasses.fields(cls)}[problems[0][0]]
        lines = [f"{where}: {message}" for where, message in problems]
        several = len(lines) > 1
        raise InvalidSoupArgumentsError(
            f"{len(lines)} invalid {within} options, each listed below."
            if several
            else f"Invalid {within} option: {lines[0]}.",
            fix=f"Pass a valid value, such as the default: {fix_for(first, within=within)}.",
            problems=lines if several else None,
        )
    return options


def candidate_lists(options: Any) -> dict[str, list[Any]]:
    """The options given as lists of candidates (those whose kind allows it, `schema.candidates`), by name."""
    found = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if spec_of(f).kind.candidates and schema.is_candidate_list(value):
            found[f.name] = list(value)
    return found


def expand(options: Any, *, within: str) -> list[tuple[dict[str, Any], Any]]:
    """Every candidate of `options`: the product of its candidate lists in declaration order (the first option
    varying slowest), each as (the values it sets, the options with them). One candidate, `({}, options)`, when no
    option is a list; a one-item list is that value.

    Raises `InvalidSoupArgumentsError` when there are more than `schema.MAX_CANDIDATES`.
    """
    import itertools

    lists = candidate_lists(options)
    if not lists:
        return [({}, options)]
    total = 1
    for values in lists.values():
        total *= len(values)
    if total > schema.MAX_CANDIDATES:
        fields = {f.name: f for f in dataclasses.fields(options)}
        sizes = " x ".join(f"{len(v)} ({flag_of(fields[k])})" for k, v in lists.items())
        raise InvalidSoupArgumentsError(
            f"{within} has {total} candidates ({sizes}), more than the {schema.MAX_CANDIDATES} one soup may score: "
            "each candidate is a soup built and scored on the held-out part.",
            fix=f"Give fewer values (at most {schema.MAX_CANDIDATES} candidates in all), e.g. a coarser range "
            "start:stop:count.",
        )
    several = {k: v for k, v in lists.items() if len(v) > 1}
    out = []
    for combo in itertools.product(*lists.values()):
        values = dict(zip(lists, combo, strict=True))
        out.append(({k: values[k] for k in several}, dataclasses.replace(options, **values)))
    return out


def as_dict(options: Any, *, recipe_only: bool = False) -> dict[str, Any]:
    """The options as data (`dataclasses.asdict`), optionally only those a recipe may set."""
    data = dataclasses.asdict(options)
    if recipe_only:
        keep = {f.name for f in schema.declared(type(options))}
        data = {k: v for k, v in data.items() if k in keep}
    return data


def command_line(cls: type, values: Mapping[str, Any]) -> list[str]:
    """The flags that set `values` (recipe keys of the options dataclass `cls`) on the command line, each as one
    shell-quoted argument string (`--held-out 'validation[:50%]'`, `--report a --report b`); options at their
    default, without a flag (`cli=False`) or absent are left out. The inverse of `add_flags` + `given`."""
    import shlex

    args = []
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if not spec.cli or f.name not in values:
            continue
        value, flag = values[f.name], flag_of(f)
        if value is None or value == default_of(f):
            continue
        if spec.kind.parse is None:  # a switch: its flag sets the opposite of the default
            args.append(flag)
        elif spec.kind.append and isinstance(value, list | tuple):
            args += [f"{flag} {shlex.quote(_text(v))}" for v in value]
        elif spec.kind.nargs and isinstance(value, Mapping):  # `--data-files SPLIT=FILE ...`
            items = [f"{split}={path}" for split, paths in value.items() for path in _listed(paths)]
            args.append(" ".join([flag, *map(shlex.quote, items)]))
        elif spec.kind.nargs and isinstance(value, list | tuple):
            args.append(" ".join([flag, *(shlex.quote(_text(v)) for v in value)]))
        elif isinstance(value, list | tuple):  # a comma-separated list (`--weights 0.6,0.4`)
            args.append(f"{flag} {shlex.quote(','.join(map(_text, value)))}")
        else:
            args.append(f"{flag} {shlex.quote(_text(value))}")
    return args


def _text(value: Any) -> str:
    if isinstance(value, float):  # short (1, 0.5), but always exact: a weight on the command line is the same float
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(getattr(value, "name", value))


def _listed(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]
