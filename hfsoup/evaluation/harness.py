"""Tasks of EleutherAI's lm-eval harness (`--task lm-eval:hellaswag,arc_easy`): the names, the harness's own task
objects and their documents, and one evaluation of a loaded causal LM on chosen documents of each.

lm-eval is an optional extra (`pip install "hfsoup[lm-eval]"`): nothing here imports it until a task is loaded, and
`require_lm_eval` says how to install it. A task is a name the harness knows (its own tasks, or those of the YAML
files under `include`, read by `TaskManager(include_path=...)`); a group (`mmlu`) stands for its tasks. Each task is
scored on the documents lm-eval evaluates (its YAML's `test_split`, else `validation_split`), restricted to given
rows with lm-eval's `samples`. Its primary metric is the first of its `metric_list` (what lm-eval reports first,
`acc` for most multiple-choice tasks); the figure a soup is ranked by, `LM_EVAL_SCORE`, is that metric averaged over
the tasks (negated where lm-eval says lower is better), so higher is better as for every hfsoup task.

Never run: remote code (the harness's `trust_remote_code` and `confirm_run_unsafe_code` stay off, and a dataset load
that asks for remote code is refused, `no_remote_code`), nor anything fetched from the internet: a YAML names a
local file (`dataset_path: json` with `data_files`) or a dataset of `HF_ENDPOINT`.

Example:
    ```py
    >>> parse_tasks("lm-eval:hellaswag, arc_easy")
    ('hellaswag', 'arc_easy')
    >>> is_harness_task("sst2")
    False
    ```
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..distributed import EVERY_PROCESS, Processes
from ..errors import EvaluationError, MissingDependencyError, option
from ..scrub import cut

logger = logging.getLogger(__name__)

PREFIX = "lm-eval:"
#: The figure soups are ranked by: each task's primary metric, averaged over the tasks.
LM_EVAL_SCORE = "lm_eval_score"
INSTALL = 'pip install "hfsoup[lm-eval]"'
#: Bounds on what `--task lm-eval:...` may name: a few task names, each a short identifier.
MAX_TASKS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_LIST_TASKS = "list them with: lm-eval ls tasks"


def is_harness_task(task: Any) -> bool:
    """Whether `task` (a `--task` value) names lm-eval tasks."""
    return isinstance(task, str) and task.strip().lower().startswith(PREFIX)


def task_problem(value: str) -> str | None:
    """Why `value` is not `lm-eval:TASK[,TASK...]`, or None (imports nothing: recipes are validated with it)."""
    names = [n.strip() for n in value.strip()[len(PREFIX) :].split(",")]
    if not any(names):
        return f"expected lm-eval:TASK[,TASK...] (such as lm-eval:hellaswag,arc_easy), got {cut(repr(value), 80)}"
    if len(names) > MAX_TASKS:
        return f"expected at most {MAX_TASKS} lm-eval tasks, got {len(names)}"
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        return f"expected lm-eval task names (letters, digits, _ . -), got {cut(repr(bad[0]), 80)}"
    return None


def parse_tasks(value: str) -> tuple[str, ...]:
    """The task names of `lm-eval:TASK[,TASK...]`, in order, each once."""
    problem = task_problem(value)
    if problem is not None:
        raise EvaluationError(f"Task {cut(repr(value), 80)}: {problem}.", fix=_fix_names())
    return tuple(dict.fromkeys(n.strip() for n in value.strip()[len(PREFIX) :].split(",")))


def require_lm_eval() -> None:
    """Refuse, before any download, when the lm-eval harness is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"Scoring on lm-eval tasks needs EleutherAI's lm-eval harness, which is not installed ({exc}).",
            fix=f"Install it with: {INSTALL} (or pip install 'lm_eval>=0.4.5,<0.5'), or pick another task with "
            f"{option('task', 'perplexity', within='Selection')}.",
        ) from None


@functools.lru_cache(maxsize=4)
def task_manager(include: str | None) -> Any:
    """lm-eval's index of its tasks and of the YAML files under `include` (built once per folder: it reads
    thousands of YAML files)."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include)


#: At most this many task files are checked under an include path (lm-eval's own tasks are some 10,000 files).
MAX_INCLUDE_FILES = 2000


def check_include(include: str | os.PathLike) -> None:
    """Refuse task files that would run code, or reach outside the include path, before lm-eval reads any of them.

    lm-eval imports and runs the Python a task file names (`!function utils.process_docs`, a `.py` beside it, or any
    importable function), and follows `include:` to any path: an include path is data, possibly written by someone
    else (a recipe's), so hfsoup runs no code from it. Every YAML file under it (and every file one includes) must
    lie inside it (no absolute paths, `..` or links leading out) and name no `!function`. Its templates are
    rendered in a sandbox (`sandboxed_templates`)."""
    from pathlib import Path

    from ..errors import InputLimitError, UnsafePathError
    from ..io import safeyaml

    given = Path(include)
    if not given.exists():
        raise EvaluationError(
            f"The lm-eval include path {cut(repr(os.fspath(include)), 200)} does not exist.",
            fix=f"Name a folder of task YAML files (or one YAML file) with {_include()}.",
        )
    root = given.resolve()
    base = root if root.is_dir() else root.parent
    files = sorted(given.rglob("*.y*ml")) if root.is_dir() else [given]
    if len(files) > MAX_INCLUDE_FILES:
        raise InputLimitError(
            f"The lm-eval include path {cut(repr(os.fspath(include)), 200)} holds {len(files):,} YAML files; hfsoup "
            f"checks at most {MAX_INCLUDE_FILES:,}.",
            fix="Name the folder of the tasks you use, not a larger tree.",
        )
    pending, seen = list(files), set()
    while pending:
        file = pending.pop()
        resolved = file.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        shown = cut(repr(os.fspath(file)), 200)
        if not resolved.is_relative_to(base):
            raise UnsafePathError(
                f"The lm-eval task file {shown} leads outside the include path {cut(repr(os.fspath(base)), 200)} "
                "(an absolute path, '..' or a link).",
                fix="Keep every task file, and every file a task includes, inside the include folder.",
            )
        text = safeyaml.read_text(resolved)
        if "!function" in text:
            raise EvaluationError(
                f"The lm-eval task file {shown} names Python to run (!function); hfsoup runs no code from the files "
                "it is pointed at.",
                fix="Write the task with templates and lm-eval's built-in filters and metrics instead, or run it "
                "with lm-eval itself, on a model hfsoup has written.",
            )
        try:
            data = safeyaml.load(text)
        except safeyaml.yaml.YAMLError as exc:
            raise EvaluationError(
                f"The lm-eval task file {shown} is not YAML hfsoup can read: {cut(str(exc), 200)}",
                fix="Check the file, or leave it out of the include folder.",
            ) from None
        includes = data.get("include") if isinstance(data, dict) else None
        for name in includes if isinstance(includes, list) else [] if includes is None else [includes]:
            if not isinstance(name, str) or os.path.isabs(name):
                raise UnsafePathError(
                    f"The lm-eval task file {shown} includes {cut(repr(name), 200)}: an include must be a relative "
                    "path inside the include folder.",
                    fix="Copy the included file into the include folder and name it relatively.",
                )
            pending.append(resolved.parent / name)


@contextlib.contextmanager
def sandboxed_templates() -> Iterator[None]:
    """lm-eval renders a task's prompts (`doc_to_text`, `doc_to_target`...) with a plain Jinja environment, in which
    a template can reach Python's internals (`{{ cycler.__init__.__globals__ }}`) and run anything. While hfsoup
    loads and evaluates tasks, the same templates render in Jinja's immutable sandbox, which refuses that."""
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from lm_eval import utils

    original = utils.env
    sandbox = ImmutableSandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    sandbox.filters.update(original.filters)
    utils.env = sandbox
    try:
        yield
    finally:
        utils.env = original


def check_tasks(names: Sequence[str], include: str | os.PathLike | None) -> None:
    """Refuse names the harness does not know, and an include path whose files would run code (`check_include`)."""
    require_lm_eval()
    if include is not None:
        check_include(include)
    known = task_manager(None if include is None else os.path.abspath(include)).all_tasks
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EvaluationError(
            f"lm-eval knows no task named {', '.join(map(repr, unknown))}"
            + ("" if include is None else f" (its own tasks and those under {cut(repr(os.fspath(include)), 200)})")
            + ".",
            fix=_fix_names(),
        )


@dataclass(frozen=True)
class HarnessTask:
    """One lm-eval task: its harness object, the documents it evaluates and its primary metric.

    Attributes:
        name (`str`): the task's name.
        task (`lm_eval.api.task.Task`): the harness's object (its documents loaded).
        split (`str`): the split lm-eval evaluates (`test_split`, else `validation_split`).
        num_docs (`int`): how many documents that split has.
        metric (`str`): the primary metric (the first of `metric_list`).
        higher_is_better (`bool`): as lm-eval declares it.
        dataset (`str`): the YAML's `dataset_path` (and `dataset_name`), for the records.
    """

    name: str
    task: Any
    split: str
    num_docs: int
    metric: str
    higher_is_better: bool
    dataset: str


def load_tasks(names: Sequence[str], include: str | os.PathLike | None) -> list[HarnessTask]:
    """The tasks `names` stand for (a group for each of its tasks), their documents loaded by lm-eval."""
    check_tasks(names, include)
    manager = task_manager(None if include is None else os.path.abspath(include))
    try:
        with quiet(), no_remote_code(), sandboxed_templates():
            if hasattr(manager, "load"):  # lm-eval 0.4.10 and later: the leaf tasks, groups opened
                leaves = list(manager.load(list(names))["tasks"].items())
            else:
                from lm_eval.tasks import get_task_dict

                leaves = _leaves(get_task_dict(list(names), manager))
    except EvaluationError:
        raise
    except Exception as exc:  # a YAML lm-eval cannot read, or data it cannot load: the harness's own message
        raise EvaluationError(
            f"lm-eval could not load the tasks {', '.join(names)}: {cut(str(exc), 400)}",
            fix="Check each task's YAML (dataset_path, dataset_kwargs, splits); a dataset must be a local file or "
            "a dataset of HF_ENDPOINT.",
        ) from exc
    return [_harness_task(str(name), task) for name, task in leaves]


@contextlib.contextmanager
def no_remote_code() -> Iterator[None]:
    """Refuse any dataset load that asks for remote code while lm-eval loads its tasks (a YAML's `dataset_kwargs:
    trust_remote_code: true`). With datasets 4 and later lm-eval drops the flag itself and datasets runs no scripts;
    with datasets 3 the flag would run the dataset's script: the load is refused before it reaches `datasets`."""
    import datasets

    original = datasets.load_dataset

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("trust_remote_code"):
            raise EvaluationError(
                f"An lm-eval task asks to load dataset {cut(repr(kwargs.get('path', args[:1])), 120)} with "
                "trust_remote_code, which runs code that comes with the dataset; hfsoup never runs remote code.",
                fix="Drop trust_remote_code from the task's YAML (dataset_kwargs), and use a dataset of plain data "
                "files (json, csv, parquet).",
            )
        return original(*args, **kwargs)

    datasets.load_dataset = guarded
    try:
        yield
    finally:
        datasets.load_dataset = original


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's own warnings (defaults it fills in, a model passed as an object) at hfsoup's verbosity: shown with
    `-v` (hfsoup at DEBUG or INFO), else only its errors."""
    harness_logger = logging.getLogger("lm_eval")
    before = harness_logger.level
    if logging.getLogger("hfsoup").getEffectiveLevel() > logging.INFO:
        harness_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        harness_logger.setLevel(before)


def _leaves(tasks: dict) -> list[tuple[str, Any]]:
    """The tasks of `get_task_dict`'s answer, groups opened, in order."""
    out = []
    for key, value in tasks.items():
        if isinstance(value, dict):
            out.extend(_leaves(value))
        elif value is not None:
            out.append((str(getattr(key, "group_name", key)), value))
    return out


def _harness_task(name: str, task: Any) -> HarnessTask:
    config = task.config
    if getattr(task, "UNSAFE_CODE", False):  # lm-eval would refuse it too (confirm_run_unsafe_code stays off)
        raise EvaluationError(
            f"lm-eval task {name!r} is marked unsafe: it runs the code a model generates; hfsoup does not run it.",
            fix="Select on a task that scores likelihoods or text (lm-eval ls tasks).",
        )
    if getattr(config, "output_type", "") == "generate_until":
        logger.info("lm-eval task %s generates text: each candidate soup generates for every document", name)
    split = config.test_split if task.has_test_docs() else config.validation_split
    if not split:
        raise EvaluationError(
            f"lm-eval task {name!r} has neither a test_split nor a validation_split to evaluate.",
            fix="Name one in its YAML (test_split: test).",
        )
    metrics = [m["metric"] for m in (config.metric_list or []) if isinstance(m, dict) and "metric" in m]
    metrics = metrics or list(task.higher_is_better())  # a task class with built-in metrics
    if not metrics:
        raise EvaluationError(
            f"lm-eval task {name!r} declares no metric.", fix="Give it a metric_list in its YAML (metric: acc)."
        )
    metric = str(metrics[0])
    dataset = str(config.dataset_path) + (f"/{config.dataset_name}" if config.dataset_name else "")
    num_docs = len(task.eval_docs)
    return HarnessTask(name, task, split, num_docs, metric, bool(task.higher_is_better().get(metric, True)), dataset)


class _Rows(list):
    """Row indices for lm-eval's `samples`: it tests `i in samples` for every document, so membership is a set's."""

    def __init__(self, rows: Sequence[int]) -> None:
        super().__init__(sorted(rows))
        self._set = frozenset(self)

    def __contains__(self, item: object) -> bool:
        return item in self._set


def share_across_processes(lm: Any, processes: Processes) -> bool:
    """Let lm-eval split its documents over the processes of an `accelerate launch` or `torchrun` run.

    lm-eval's evaluator (0.4.12 and later) reaches other processes only through its model's `rank`, `world_size`,
    `all_gather`, `gather_object` and `barrier`: each process builds the requests of every `world_size`-th document
    of each task, pads them to the same count, and the first gathers the per-document values and aggregates them. An
    `HFLM` built around a model already in memory takes itself for the only process; this tells it the truth, with
    `torch.distributed` (which the launch set up) for the exchanges. `evaluate` hands the first process's figures to
    the others. Returns whether it did (not with one process, nor with an lm-eval without `gather_object`)."""
    from lm_eval.api.model import LM

    if processes.world_size <= 1 or not hasattr(LM, "gather_object"):
        return False
    import torch
    import torch.distributed as dist

    def all_gather(tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(processes.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    lm._hfsoup_processes = (processes.rank, processes.world_size)
    lm.all_gather = all_gather
    lm.barrier = dist.barrier
    return True


@contextlib.contextmanager
def _split(lm: Any, rows: Sequence[Sequence[int]]) -> Iterator[bool]:
    """Whether this evaluation is split over the processes (`share_across_processes`), setting `lm`'s rank and
    world size for it: only when every task has a document for every process (lm-eval cannot aggregate a task a
    process has no document of), else every process evaluates everything, as with one."""
    rank, world = getattr(lm, "_hfsoup_processes", (0, 1))
    split = world > 1 and all(len(r) >= world for r in rows)
    lm._rank, lm._world_size = (rank, world) if split else (0, 1)
    try:
        yield split
    finally:
        lm._rank, lm._world_size = (0, 1)


def evaluate(lm: Any, tasks: Sequence[HarnessTask], rows: Sequence[Sequence[int]]) -> dict[str, float]:
    """Every metric of `lm` on the documents `rows[i]` of `tasks[i]`: `task/metric` for each, and `LM_EVAL_SCORE`
    (the primary metrics' mean, each negated where lower is better)."""
    from lm_eval.evaluator import evaluate as harness_evaluate

    task_dict = {t.name: t.task for t in tasks}
    samples = {t.name: _Rows(r) for t, r in zip(tasks, rows, strict=True)}
    try:
        with quiet(), sandboxed_templates(), _split(lm, rows) as split:
            if split:
                logger.info(
                    "lm-eval: process %d/%d scores %d of the %d documents",
                    lm.rank,
                    lm.world_size,
                    sum(len(range(lm.rank, len(r), lm.world_size)) for r in rows),
                    sum(len(r) for r in rows),
                    extra=EVERY_PROCESS,
                )
            found = harness_evaluate(
                lm, task_dict, samples=samples, bootstrap_iters=0, log_samples=False, confirm_run_unsafe_code=False
            )
            if split:  # the first process aggregated; the others get its figures
                import torch.distributed as dist

                box = [found]
                dist.broadcast_object_list(box, src=0)
                found = box[0]
    except ValueError as exc:  # a task marked unsafe, or a multimodal one
        raise EvaluationError(f"lm-eval refused to evaluate: {cut(str(exc), 400)}", fix=_fix_names()) from exc
    except Exception as exc:
        from jinja2.exceptions import SecurityError

        if not isinstance(exc, SecurityError):
            raise
        raise EvaluationError(
            f"An lm-eval task's template reaches Python's internals ({cut(str(exc), 200)}); hfsoup renders templates "
            "in a sandbox.",
            fix="Write the template with the document's fields and Jinja's filters only.",
        ) from exc
    results = (found or {}).get("results", {})
    metrics: dict[str, float] = {}
    primaries = []
    for t in tasks:
        values = results.get(t.name, {})
        for key, value in values.items():
            metric, _, filtered = str(key).partition(",")
            if isinstance(value, int | float) and not metric.endswith("_stderr") and metric != "sample_len":
                metrics[f"{t.name}/{metric}" + ("" if filtered in ("", "none") else f",{filtered}")] = float(value)
        primary = metrics.get(f"{t.name}/{t.metric}")
        if primary is None:  # a filtered metric (`exact_match,strict-match`): the first of them
            primary = next((v for k, v in metrics.items() if k.startswith(f"{t.name}/{t.metric},")), None)
        if primary is None:
            raise EvaluationError(
                f"lm-eval reported no {t.metric!r} for task {t.name!r} (it reported: "
                f"{', '.join(map(str, values)) or 'nothing'}).",
                fix="Check the task's metric_list.",
            )
        primaries.append(primary if t.higher_is_better else -primary)
    metrics[LM_EVAL_SCORE] = sum(primaries) / len(primaries)
    return metrics


def record(tasks: Sequence[HarnessTask]) -> dict[str, Any]:
    """Which implementation computed the scores (the table's and the card's `metric_module`)."""
    import lm_eval

    return {
        "source": "lm-eval",
        "name": "lm-eval",
        "version": str(getattr(lm_eval, "__version__", "unknown")),
        "tasks": {t.name: t.metric for t in tasks},
    }


def _include() -> str:
    return option("lm_eval_include", metavar="PATH", within="Selection")


def _fix_names() -> str:
    return (
        f"Name tasks lm-eval knows ({_LIST_TASKS}), comma-separated: {option('task', 'lm-eval:hellaswag,arc_easy')}; "
        f"a task of your own is a YAML file in a folder named with {_include()}."
    )
