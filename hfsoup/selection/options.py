"""`Selection`: where and how soups are scored and selected, declared once for the API, the CLI and recipes.

A recipe's `evaluation:` section holds these fields (all but `hub_metrics`, a run-time switch); `hfsoup soup` has a
flag for each (`--held-out-size` for `size`, ...); `hfsoup.Selection(task="sst2", ...)` is the Python form. The
methods' own options are not here: each method declares them (`GreedySoup.Options`), and a baseline with other
options than its defaults is given as a method object in `compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import schema
from ..errors import quote
from ..evaluation.harness import is_harness_task, task_problem
from ..evaluation.splitspec import base_split, parse_split, split_problem
from ..options import build, option
from .heldout import DEFAULT_FRACTION

#: Compared besides every method in `SOUPS`: the output ensemble (the ingredients' log-probabilities averaged).
ENSEMBLE = "ensemble"
DEFAULT_BATCH_SIZE = 32


def baselines() -> tuple[str, ...]:
    """What the results table can compare, besides every ingredient: each soup method, and the ensemble."""
    from ..soups import SOUPS

    return (*SOUPS, ENSEMBLE)


def default_baselines() -> tuple[str, ...]:
    """What the table compares unless told: the methods that cost one scoring each (`default_baseline`: the uniform
    soup) and the ensemble. The searches (greedy, learned) score many soups, and the merges need `--base` and
    options: they are compared when named."""
    from ..soups import SOUPS

    return (*(name for name, cls in SOUPS.items() if cls.default_baseline), ENSEMBLE)


def _task(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return task_problem(value) if is_harness_task(value) else None
    if hasattr(value, "primary_metric") and hasattr(value, "name"):  # a `Task` object (Python only)
        return None
    return f"expected a task name, got {schema.type_name(value)}"


def _compare(value: Any) -> str | None:
    if value is None:
        return None
    from ..soups import SoupMethod

    if isinstance(value, str) or not isinstance(value, list | tuple):
        return f"expected a list of baselines, got {schema.type_name(value)}"
    known = baselines()
    for item in value:
        if isinstance(item, SoupMethod):
            continue
        if not isinstance(item, str):
            return f"expected a list of baselines, got {quote(item)}"
        if item not in known:
            return f"unknown baseline {item!r} (expected some of: {', '.join(known)})"
    return None


def _split(*, optional: bool) -> schema.Kind:
    """A split name or a `datasets` spec, checked where recipes are validated too (`hfsoup validate`)."""

    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            return f"expected a split name, got {schema.type_name(value)}"
        return split_problem(value)

    return schema.custom(check, metavar="SPLIT")


def _kinds() -> tuple[str, ...]:
    from ..evaluation.predictors.registry import PREDICTORS  # the one table of model kinds

    return tuple(PREDICTORS)


def _kind(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value in _kinds()):
        return None
    return f"expected a model kind ({', '.join(_kinds())}), got {quote(value)}"


#: What one reported set is, as every refusal says.
REPORT_FORM = (
    "SPLIT (a split of the task's dataset, or a datasets slice such as validation[50%:]) or DATASET:SPLIT (a split "
    "of another dataset repo or folder with the task's config, such as org/name@v1:validation)"
)


@dataclass(frozen=True)
class ReportSet:
    """One set the results are reported on: a split (or spec) of the selection's dataset, or of another dataset.

    Attributes:
        label (`str`): the set as given (`validation[50%:]`, `org/shifted@v1:validation`): its name in every output.
        split (`str`): the split or `datasets` spec.
        dataset (`str`, *optional*): another dataset repo (`org/name[@revision]`) or folder; `None` for the
            selection's own dataset (`Selection.dataset`, `data_files`, or the task's).
    """

    label: str
    split: str
    dataset: str | None = None


def parse_report_set(text: str) -> ReportSet:
    """`SPLIT` or `DATASET:SPLIT`: the text before the first `[` (a slice may hold `:`), cut at its last `:`.

    Example:
        ```py
        >>> parse_report_set("org/x@v1:validation[:50%]")
        ReportSet(label='org/x@v1:validation[:50%]', split='validation[:50%]', dataset='org/x@v1')
        ```
    """
    head, bracket, rest = text.partition("[")
    dataset, colon, split = head.rpartition(":")
    if not colon:
        return ReportSet(text, text)
    return ReportSet(text, split + bracket + rest, dataset)


def report_set_problem(value: Any) -> str | None:
    """Why `value` is not one reported set (`REPORT_FORM`), or None."""
    if not isinstance(value, str):
        return f"expected {REPORT_FORM}, got {schema.type_name(value)}"
    found = parse_report_set(value)
    if found.dataset is not None and (not found.dataset.strip() or not found.split.strip()):
        return f"expected {REPORT_FORM}, got {quote(value)}"
    return split_problem(found.split)


def _report(value: Any) -> str | None:
    """One reported set, or a non-empty list of them whose first is a split of the selection's own dataset."""
    values = value if isinstance(value, list | tuple) else [value]
    if not values:
        return f"expected one or more reported sets, each {REPORT_FORM}, got an empty list"
    for i, item in enumerate(values):
        if (problem := report_set_problem(item)) is not None:
            return problem if len(values) == 1 else f"set {i + 1} ({quote(item)}): {problem}"
    first = parse_report_set(values[0])
    if first.dataset is not None:
        return (
            "the first reported set is the in-distribution one, where the held-out part comes from: a split of the "
            f"selection's own dataset, got {quote(values[0])} (make {quote(first.dataset)} the selection's dataset, "
            f"--dataset or the dataset key, and report on {quote(first.split)} first)"
        )
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        return f"{quote(repeated[0])} is reported twice"
    return None


def _data_files(value: Any) -> str | None:
    from ..evaluation.data import data_files_problem  # the shape every split-to-files mapping must have

    return data_files_problem(value)


@dataclass
class Selection:
    """Where and how soups are scored and selected: the task, its held-out and reported parts, the table.

    Args:
        task (`str` or `Task`):
            A GLUE task name (`sst2`, ...), `text-classification` (class names from the first ingredient, data from
            `dataset` or `data_files` with `text` and `label` columns), `perplexity` (causal LMs, ranked by
            `neg_perplexity`: minus the token-level perplexity of the `text_field` column), `lm-eval:TASK[,TASK...]`
            (causal LMs scored by EleutherAI's lm-eval harness, `pip install "hfsoup[lm-eval]"`, on the documents
            each task evaluates; ranked by `lm_eval_score`, each task's first metric averaged over the tasks, negated
            where lower is better), or a `Task`.
        report (`str` or `list[str]`, *optional*, defaults to `"validation"`): the set the results are reported on,
            or several (`["validation", "org/shifted:validation"]`, the paper's distribution shift). Each is a split
            or `datasets` spec of the task's data (`validation[50%:]`, `train[:2000]`, `train+validation`), or
            `DATASET:SPLIT` of another dataset repo or folder with the task's config. The first is the
            in-distribution set, of the task's own data: the held-out part is carved from it by default.
        held_out (`str`, *optional*): the split (or spec) to select on; by default a seeded part of the first
            reported set. Rows that it shares with any reported set are overlap, refused unless `force`.
        fraction (`float`, *optional*, defaults to 0.5), size (`int`, *optional*), seed (`int`, *optional*):
            How the held-out part is carved (`hfsoup.selection.heldout.carve`).
        dataset (`str`, *optional*), data_files (`dict[str, list[str]]`, *optional*):
            Another dataset repo or folder, or local csv/json/parquet files by split (`["FILE", "SPLIT=FILE"]` is
            read as on the command line: a FILE alone is the first `report` split).
        text_field (`str`, *optional*): for `perplexity`, the column holding the text (`"text"` when None).
        lm_eval_include (`str`, *optional*): for `lm-eval:` tasks, a folder of task YAML files (or one file) whose
            tasks may be named besides lm-eval's own (`TaskManager(include_path=...)`).
        kind (`str`, *optional*): how the candidates are scored, a key of `PREDICTORS` (`t5-text`,
            `clip-zero-shot`, ...); by default chosen from the first ingredient's architecture, as `hfsoup eval` does.
        batch_size (`int`, *optional*, defaults to 32), max_length (`int`, *optional*): scoring batches, truncation.
        compare (`Sequence[str | SoupMethod]`, *optional*):
            The baselines in the table: names from `SOUPS` and `"ensemble"` (`default_baselines()` by default: the
            uniform soup and the ensemble; none with `[]`), or
            method objects with their own options (`GreedySoup(accept="gt")`). The chosen method is always scored.
        plot (`bool`, *optional*, defaults to `True`): draw `results.png` (needs matplotlib).
        force (`bool`, *optional*, defaults to `False`): accept held-out rows that are also reported.
        hub_metrics (`bool`, *optional*): score with the Hub's metric module instead of hfsoup's (see `Evaluator`);
            defaults to `HFSOUP_HUB_METRICS`.
    """

    task: Any = option(
        kind=schema.custom(_task, metavar="TASK"),
        help="a GLUE task (sst2, mrpc, ...), text-classification (labels from the first ingredient; data from "
        "--dataset or --data-files with text and label columns), perplexity (causal LMs; text from --dataset or "
        "--data-files) or lm-eval:TASK[,TASK...] (causal LMs scored by EleutherAI's lm-eval harness, pip install "
        "'hfsoup[lm-eval]'; ranked by lm_eval_score, each task's first metric such as acc averaged over the tasks, "
        "negated where lower is better as bits_per_byte, so higher is better; held-out and reported parts carved "
        "from the documents each task evaluates); needed by the methods that select on held-out scores",
    )
    report: str | list[str] = option(
        "validation",
        kind=schema.custom(_report, metavar="[DATASET:]SPLIT", append=True),
        help="split to report on, or a datasets slice such as 'validation[200:]' or 'train+validation'; repeat it to "
        "report on several sets, the first in-distribution, the others of the task's data or DATASET:SPLIT of "
        "another dataset (org/shifted:validation)",
    )
    held_out: str | None = option(
        None,
        kind=_split(optional=True),
        metavar="SPLIT",
        help="split to select on, or a slice such as 'validation[:200]' (default: a seeded part of the first "
        "--report split, the rest being reported)",
    )
    fraction: float = option(
        DEFAULT_FRACTION, kind=schema.fraction(), flag="--held-out-fraction", help="share of a shared split held out"
    )
    size: int | None = option(
        None,
        kind=schema.positive_int(optional=True),
        flag="--held-out-size",
        help="hold out a seeded sample of N rows",
    )
    seed: int = option(0, kind=schema.integer(), help="seed of the held-out sample")
    dataset: str | None = option(
        None,
        kind=schema.string(optional=True),
        metavar="ID[@REV]",
        help="another dataset repo or folder with the task's config",
    )
    data_files: Any = option(
        None,
        kind=schema.custom(_data_files, metavar="[SPLIT=]FILE", nargs="+"),
        help="local csv/json/parquet files instead of a dataset repo (FILE alone is the first --report split)",
    )
    # None (absent from records written before it existed) stands for "text".
    text_field: str | None = option(
        None,
        kind=schema.string(optional=True),
        metavar="NAME",
        help="the column holding the text, for --task perplexity (default: text)",
    )
    kind: str | None = option(
        None,
        kind=schema.custom(_kind, metavar="KIND"),
        help="how to run the model, when its architecture allows several: "
        f"{', '.join(_kinds())} (default: chosen from the architecture)",
    )
    lm_eval_include: str | None = option(
        None,
        kind=schema.string(optional=True),
        metavar="PATH",
        help="a folder of lm-eval task YAML files (or one file) whose tasks --task lm-eval:NAME may name, besides "
        "lm-eval's own (its TaskManager's include_path); a task's data must be local or on HF_ENDPOINT",
    )
    batch_size: int = option(DEFAULT_BATCH_SIZE, kind=schema.positive_int(), help="examples per batch")
    max_length: int | None = option(
        None, kind=schema.positive_int(optional=True), help="truncate to N tokens (default: model max, <=512)"
    )
    compare: Sequence[Any] | None = option(
        None,
        kind=schema.custom(_compare, parse=schema.strings().parse, metavar="LIST"),
        help="baselines in the table besides every ingredient: soup methods and ensemble, comma-separated, or none "
        "(default: uniform,ensemble; the searches, greedy and learned, and the merges when named)",
    )
    plot: bool = option(True, kind=schema.boolean(), help="do not draw results.png (no matplotlib needed)")
    force: bool = option(
        False, kind=schema.boolean(), cli=False, help="select on rows that are also reported (recorded)"
    )
    hub_metrics: bool | None = option(
        None,
        kind=schema.custom(
            lambda v: None if v is None or isinstance(v, bool) else "expected true or false", parse=None
        ),
        recipe=False,
        help="score with the Hub's evaluate-metric/<name> module, Python code downloaded from HF_ENDPOINT and run "
        "(default: the module shipped with hfsoup; also HFSOUP_HUB_METRICS=1)",
    )

    def __post_init__(self) -> None:
        files = self.data_files
        if isinstance(files, list | tuple) and all(isinstance(f, str) for f in files):  # the CLI's [SPLIT=]FILE ...
            first = self.report[0] if isinstance(self.report, list | tuple) and self.report else self.report
            split = base_split(parse_report_set(first).split) if isinstance(first, str) else first
            self.data_files = split_files(self.data_files, split)

    @property
    def report_sets(self) -> list[ReportSet]:
        """`report` as sets, the in-distribution one first."""
        values = self.report if isinstance(self.report, list | tuple) else [self.report]
        return [parse_report_set(v) for v in values]

    @property
    def compared(self) -> list[Any]:
        """`compare`, with the default (`default_baselines`) filled in."""
        return list(default_baselines()) if self.compare is None else list(self.compare)

    def check_fields(self) -> None:
        """Refuse an option whose value is not of its kind (`InvalidSoupArgumentsError`, naming flag and keyword)."""
        build(Selection, self, within="Selection")

    def check(self, method: Any = None) -> None:
        """Refuse contradictory options before anything is downloaded (with `method`, the chosen `SoupMethod`: the
        methods this task cannot serve)."""
        from .results import require_matplotlib

        reported = self.report if isinstance(self.report, list | tuple) else [self.report]
        specs = [parse_report_set(r).split if isinstance(r, str) else r for r in reported]
        for spec in (*specs, self.held_out):  # the split syntax, as the EvaluationError that names the fix
            if isinstance(spec, str):
                parse_split(spec)
        self.check_fields()
        if is_harness_task(self.task):
            self._check_harness(method)
        elif self.lm_eval_include is not None:
            from ..errors import InvalidSoupArgumentsError
            from ..errors import option as named

            raise InvalidSoupArgumentsError(
                f"{named('lm_eval_include', metavar='PATH', within='Selection')} names lm-eval task files, and the "
                f"task is {getattr(self.task, 'name', self.task)!r}, not an lm-eval one.",
                fix=f"Name the tasks with {named('task', 'lm-eval:NAME', within='Selection')}, or drop the include.",
            )
        if self.plot:
            require_matplotlib()

    def _check_harness(self, method: Any) -> None:
        """lm-eval tasks: the harness installed, the names known, their own data, no method that needs a loss."""
        from ..errors import EvaluationError, InvalidSoupArgumentsError
        from ..errors import option as named
        from ..evaluation import harness
        from ..soups import SOUPS, SoupMethod

        needing = []
        for item in [method, *self.compared]:
            cls = type(item) if isinstance(item, SoupMethod) else SOUPS.get(item) if isinstance(item, str) else None
            if cls is not None and cls.needs_objective and cls.name not in needing:
                needing.append(cls.name)
        if needing:
            raise InvalidSoupArgumentsError(
                f"The {', '.join(needing)} soup{'s need' if len(needing) > 1 else ' needs'} a differentiable "
                f"held-out loss, and lm-eval tasks ({self.task}) give only metrics such as accuracy.",
                fix=f"Select with {named('method', 'greedy')} (or leave {', '.join(needing)} out of "
                f"{named('compare', metavar='LIST', within='Selection')}), or score on "
                f"{named('task', 'perplexity', within='Selection')}, whose loss the learned soup minimizes.",
            )
        names = harness.parse_tasks(self.task)
        if self.dataset is not None or self.data_files is not None:
            raise EvaluationError(
                f"lm-eval tasks ({self.task}) read the data their YAML names (dataset_path), not "
                f"{named('dataset', ..., within='Selection')} or --data-files.",
                fix="Drop them, and point a task of your own at local files in its YAML (dataset_path: json, "
                "dataset_kwargs: data_files), in a folder named with "
                f"{named('lm_eval_include', metavar='PATH', within='Selection')}.",
            )
        if len(self.report_sets) > 1 or self.report_sets[0].dataset is not None:
            raise EvaluationError(
                f"lm-eval tasks are reported on one part of the documents each task evaluates; got {self.report!r}.",
                fix=f"Give one split or slice: {named('report', 'validation[50%:]', within='Selection')}.",
            )
        harness.check_tasks(names, self.lm_eval_include)


def split_files(values: Sequence[str], split: str) -> dict[str, list[str]]:
    """`["train=a.csv", "b.csv"]` -> `{"train": ["a.csv"], split: ["b.csv"]}`: a FILE alone belongs to `split`."""
    files: dict[str, list[str]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        files.setdefault(name if sep else split, []).append(path if sep else value)
    return files
