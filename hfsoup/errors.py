"""User-facing errors.

Every error a user can cause derives from `HfsoupError`. The message says what was expected, what was found and how
to fix it; the CLI prints it once, as one paragraph, and exits with `exit_code`.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .compat.report import CompatReport, Finding

#: How many characters of a value read from input an error message quotes.
QUOTE_LIMIT = 200
# An error's problems (a recipe's) are listed one per line: each line and their number are bounded too.
_PROBLEM_LIMIT = 500
_MAX_PROBLEMS = 30
# The last bound, for a message that quotes something nobody thought to quote short (a server's answer, say).
_MESSAGE_LIMIT = 8000


def _bounded(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else f"{text[:_MESSAGE_LIMIT]}... ({len(text):,} characters in all)"


class _ScrubbingRepr(reprlib.Repr):
    """`reprlib`'s abbreviations, with each string scrubbed before it keeps only its head and tail."""

    def repr_str(self, x: str, level: int) -> str:
        from .scrub import scrub

        return super().repr_str(scrub(x), level)


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` for a message, at most about `limit` characters: a long string is cut and its length given, a
    container is abbreviated level by level (`reprlib`) without ever building its whole repr, so a value expanded
    from a few aliases, or a 1 MB label, prints as a line.

    Example:
        ```py
        >>> quote("x" * 1000, limit=5)
        "'xxxxx'... (1,000 characters)"
        ```
    """
    from .scrub import scrub  # before any cut: half a token no longer looks like one, and would be printed

    if isinstance(value, str):
        value = scrub(value)
        if len(value) <= limit:
            return repr(value)
        return f"{repr(value[:limit])}... ({len(value):,} characters)"
    short = _ScrubbingRepr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, max(limit // 4, 12), limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 8
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def option(
    keyword: str,
    value: Any = True,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    within: str | None = None,
) -> str:
    """An option as a fix names it, both ways it is given: the CLI flag and the Python keyword, from one name. The
    same errors reach `hfsoup soup` users and `hfsoup.soup()` callers, and each must read the spelling they type.

    Args:
        keyword (`str`): the Python keyword; the flag is derived from it (`align_labels` -> `--align-labels`, or
            `--no-align-labels` for `False`) unless `flag` is given (`-o`, `--held-out-size` for `size`).
        value (`Any`, *optional*, defaults to `True`): the value to pass; `True`/`False` for a switch, a list is
            comma-separated on the command line, `...` names the option without a value (`--dataset (dataset=...)`).
        metavar (`str`, *optional*): a placeholder instead of a value (`N`, `MODEL`), written as is on both sides.
        within (`str`, *optional*): the object holding the keyword (`Selection`).

    Example:
        ```py
        >>> option("overwrite"), option("align_labels", False), option("dtype", "bf16")
        ('--overwrite (overwrite=True)', '--no-align-labels (align_labels=False)', "--dtype bf16 (dtype='bf16')")
        >>> option("size", metavar="N", flag="--held-out-size", within="Selection")
        '--held-out-size N (Selection(size=N))'
        ```
    """
    if flag is None:
        flag = "--" + ("no-" if value is False else "") + keyword.replace("_", "-")
    if metavar is not None:
        cli, python = f"{flag} {metavar}", f"{keyword}={metavar}"
    elif value is Ellipsis:  # the option itself, to check or to add, without a value to suggest
        cli, python = flag, f"{keyword}=..."
    elif isinstance(value, bool):
        cli, python = flag, f"{keyword}={value}"
    elif isinstance(value, list | tuple):
        cli, python = f"{flag} {','.join(map(str, value))}", f"{keyword}={list(value)!r}"
    else:
        cli, python = f"{flag} {value}", f"{keyword}={value!r}"
    return f"{cli} ({within}({python}))" if within else f"{cli} ({python})"


class HfsoupError(Exception):
    """Base class for every error caused by user input or by the user's environment.

    `message` says what was expected and what was found, `fix` what to do; `problems` lists each problem when there
    are several (a recipe's, every mismatch of a compatibility check), scrubbed of tokens and bounded like the
    message. The CLI lists them one per line under the message, unless the class says the message already names
    each (`problems_in_message`).
    """

    exit_code: int = 1
    problems_in_message: ClassVar[bool] = False

    def __init__(self, message: str, *, fix: str | None = None, problems: Sequence[str] | None = None) -> None:
        from .scrub import scrub  # an error may quote a server's answer, and servers echo tokens

        self.message = _bounded(scrub(message))
        self.fix = None if fix is None else _bounded(scrub(fix))
        self.problems = _problem_lines(problems or [])
        message, fix = self.message, self.fix
        super().__init__(message if fix is None else f"{message} {fix}")
        if self.problems and not self.problems_in_message:
            self.args = (f"{self}\n" + "\n".join(f"  - {p}" for p in self.problems),)


def _problem_lines(problems: Sequence[str]) -> list[str]:
    """Each problem scrubbed and bounded, and their number: a problem quotes input that may be huge or hold a pasted
    token."""
    from .scrub import scrub

    items = [scrub(p) for p in problems]
    items = [p if len(p) <= _PROBLEM_LIMIT else p[:_PROBLEM_LIMIT] + "..." for p in items]
    if len(items) > _MAX_PROBLEMS:
        items = [*items[:_MAX_PROBLEMS], f"... and {len(items) - _MAX_PROBLEMS} more problems"]
    return items


class IngredientNotFoundError(HfsoupError):
    """A Hub repo, revision, file or local folder named as an ingredient does not exist."""


class MissingWeightsError(HfsoupError):
    """An ingredient holds no weights hfsoup can read safely."""


class IncompatibleIngredientsError(HfsoupError):
    """The ingredients cannot be averaged tensor by tensor (names, shapes, dtypes), or must not be (labels,
    tokenizer, shared initialization).

    `report` is the `CompatReport` that refused them: every finding, the verdict and, once the weights were read,
    the shared-initialization figures (`report.format_table()` is what `hfsoup check` prints). `problems` lists each
    mismatch, one line per error finding (`labels: [org/ft-b] ...`; bounded like any error's problems, the report
    keeps them all); the message already names every one, so the CLI prints it as one paragraph.
    """

    problems_in_message: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        fix: str | None = None,
        report: CompatReport | None = None,
        problems: Sequence[str] | None = None,
    ) -> None:
        if problems is None and report is not None:
            problems = [_finding_line(f) for f in report.errors]
        super().__init__(message, fix=fix, problems=problems)
        self.report = report

    @classmethod
    def from_report(cls, report: CompatReport, *, fix: str | None = None) -> IncompatibleIngredientsError:
        """The refusal of `report`: its one-paragraph summary as the message, its error findings as `problems`."""
        return cls(report.summary(), fix=fix, report=report)


def _finding_line(finding: Finding) -> str:
    where = f"[{finding.ingredient}] " if finding.ingredient else ""
    return f"{finding.check}: {where}{finding.message}"


class InvalidSoupArgumentsError(HfsoupError):
    """Soup options that contradict each other or the ingredients (weights, counts, dtypes)."""


class MemoryLimitError(HfsoupError):
    """A soup would need more memory than `--max-memory` allows (estimated from the headers, before any download)."""


class SoupWorkerError(HfsoupError):
    """A process that computed part of a large output shard stopped without finishing it (killed, or out of memory);
    nothing partial was left behind."""


class OutputExistsError(HfsoupError):
    """The output folder exists and `--overwrite` was not given."""


class OutputCollisionError(HfsoupError):
    """An output folder that would destroy an input or the user's files: it is, contains or lies inside an
    ingredient, the Hugging Face cache, the recipe's folder, the current folder, the home folder or a filesystem
    root. Refused with or without `--overwrite`.

    `output` is the output folder, `collides_with` what it would destroy, `relation` one of `is`, `contains`,
    `lies inside` (all resolved, absolute).
    """

    def __init__(
        self,
        message: str,
        *,
        fix: str | None = None,
        output: Path | None = None,
        collides_with: Path | None = None,
        relation: str | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
        self.output, self.collides_with, self.relation = output, collides_with, relation


class UnsafeStagingError(HfsoupError):
    """The staging folder an interrupted run left (`.<output>.hfsoup-tmp-partial`) is not a plain folder of the
    current user's that only they can write: a symlink, a file, another user's folder or a group/world-writable
    one. It is never followed nor reused; `path` names it."""

    def __init__(self, message: str, *, fix: str | None = None, path: Path | None = None) -> None:
        super().__init__(message, fix=fix)
        self.path = path


class HubError(HfsoupError):
    """The Hub (or the local Hub server) answered with an error hfsoup cannot recover from."""


class CorruptCheckpointError(HfsoupError):
    """A weights file is malformed: a bad safetensors header, a missing shard, an index naming absent tensors."""


class EvaluationError(HfsoupError):
    """An evaluation cannot run as asked: an unknown task or split, a model whose labels do not fit, no examples."""


class NotASoupError(HfsoupError):
    """A folder given to `push` or the card builder is not a finished hfsoup output (no valid `hfsoup.json`);
    `problems` lists what is wrong with it, as the message does."""

    problems_in_message: ClassVar[bool] = True


class PushRefusedError(HfsoupError):
    """A push that would replace something the user may not mean to: a model on the Hub not made by hfsoup."""


class InvalidRepoIdError(HfsoupError):
    """A Hub repo name that the Hub would refuse (`org/name`, letters, digits, `-_.`, at most 96 characters)."""


class MissingDependencyError(HfsoupError):
    """An optional package a feature needs is not installed (matplotlib for the results plot)."""


class InputLimitError(HfsoupError):
    """An input beyond what hfsoup reads: a YAML file expanding through its aliases ("billion laughs"), nested too
    deep, or larger than any recipe or model card metadata is."""


class IngredientConfigError(HfsoupError):
    """An ingredient's config.json, tokenizer or processor file that parses but has the wrong shape (a list where an
    object belongs, label ids that are not integers, ...); the message names the file and the field."""


class RecipeError(HfsoupError):
    """A recipe file that cannot be read or does not validate.

    `problems` holds every problem found, each with its location (`method.accept: ...`); the CLI lists them one per
    line under the message.
    """


class CorruptDownloadError(HubError):
    """A downloaded file does not match the checksum the Hub lists for it, even after downloading it again."""


class DiskFullError(HfsoupError):
    """The disk filled up while hfsoup was writing; nothing partial was left behind."""


class SweepError(RecipeError):
    """A fine-tune sweep that does not validate (an unknown hyperparameter, a bad value or range), or whose runs do
    not share their start; `problems` lists every problem with its location, as for a recipe."""


class UnsafePathError(HfsoupError):
    """A file an ingredient or a soup folder names lies outside its folder: an absolute or `..` name, a symbolic
    link leaving the folder, a non-regular file, or (on the Hub) a file the repo does not list with a checksum."""
