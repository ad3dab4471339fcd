"""A fine-tune sweep as data: its settings (`Sweep`), one run's hyperparameters (`Run`), and their validation.

Validation reports every problem at once, each with its location (`grid.learning_rate[1]: expected a positive
number`), as a recipe's does; `make_sweep` raises them in one `SweepError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .. import schema
from ..errors import SweepError, quote
from ..options import option

#: The hyperparameters a sweep can vary, with their defaults (those of the model soups paper's BERT fine-tunes).
HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "seed": 0,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "epochs": 3.0,
}
#: Short names used in run names, in this order.
SHORT_NAMES = {"learning_rate": "lr", "seed": "seed", "weight_decay": "wd", "label_smoothing": "ls", "epochs": "ep"}
#: In the sweep folder: the shared start (the base with its seeded head) every run trains from.
START_DIR = "start"
#: In each finished run's folder: its hyperparameters, the start's sha256, its data and training figures.
RUN_FILE = "finetune.json"
#: In the sweep folder: which runs were pushed, to which repo and commit (a rerun does not push them again).
PUSHED_FILE = "pushed.json"


@dataclass
class Sweep:
    """A fine-tune sweep.

    Args:
        base (`str`): the pretrained model: a Hub ID (`org/name`) or a folder.
        output_dir (`str`): the sweep folder; each run goes to `output_dir/<run name>`, the shared start to `start/`.
        task (`str`): a GLUE task (`sst2`, `mrpc`, ...) or `text-classification` (with `data_files`).
        dataset (`str`, *optional*): a GLUE-shaped dataset repo instead of `nyu-mll/glue`.
        data_files (`dict[str, list[str]]`, *optional*): `{"train": [...]}` for `text-classification`.
        text_column, label_column (`str`): the columns of `data_files` holding the text and the label.
        label_names (`list[str]`, *optional*): the class names of `text-classification` (default: string labels
            sorted, or the base's labels for label ids).
        grid (`dict[str, list]`, *optional*): every combination of these values is a run.
        random (`dict`, *optional*): `{n: N, seed: S, learning_rate: [lo, hi], ...}`: N runs drawn from ranges
            (learning rate log-uniform, epochs an integer, the rest uniform); every run gets its own training seed.
        epochs (`float`): training epochs of every run (unless swept).
        max_steps (`int`, *optional*): train this many steps instead of epochs.
        batch_size (`int`), max_length (`int`): per-device training batch size and token truncation length.
        head_seed (`int`): the seed of the shared head's initialization.
        push_org (`str`, *optional*): publish each run to `push_org/<sweep folder name>-<run name>`.
        private (`bool`): make pushed repos private.
    """

    base: str = option(kind=schema.custom(lambda v: _named(v, "a model ID or folder")), help="the pretrained model")
    output_dir: str = option(kind=schema.custom(lambda v: _named(v, "a folder")), help="the sweep folder")
    task: str = option(
        "text-classification", kind=schema.custom(lambda v: _named(v, "a task name")), help="a GLUE task"
    )
    dataset: str | None = option(
        None,
        kind=schema.custom(
            lambda v: None if v is None or isinstance(v, str) else f"expected a dataset repo, got {quote(v)}"
        ),
        help="a GLUE-shaped dataset instead of nyu-mll/glue",
    )
    data_files: dict[str, list[str]] | None = option(
        None, kind=schema.custom(lambda v: _data_files_problem(v)), help="training data of text-classification"
    )
    text_column: str = option("text", kind=schema.custom(lambda v: _named(v, "a column name")), help="text column")
    label_column: str = option("label", kind=schema.custom(lambda v: _named(v, "a column name")), help="label column")
    label_names: list[str] | None = option(None, kind=schema.custom(lambda v: _label_names(v)), help="class names")
    grid: dict[str, list] | None = option(None, kind=schema.custom(lambda v: None), help="checked by search_problems")
    random: dict[str, Any] | None = option(None, kind=schema.custom(lambda v: None), help="checked by search_problems")
    epochs: float = option(3.0, kind=schema.number(positive=True), help="training epochs per run")
    max_steps: int | None = option(None, kind=schema.positive_int(optional=True), help="training steps per run")
    batch_size: int = option(32, kind=schema.positive_int(), help="per-device training batch size")
    max_length: int = option(128, kind=schema.positive_int(), help="truncate inputs to this many tokens")
    head_seed: int = option(
        0,
        kind=schema.custom(
            lambda v: (
                None if not isinstance(v, bool) and isinstance(v, int) else f"expected an integer, got {quote(v)}"
            )
        ),
        help="seed of the shared head's initialization",
    )
    push_org: str | None = option(
        None,
        kind=schema.custom(
            lambda v: (
                None
                if v is None or (isinstance(v, str) and v and "/" not in v)
                else f"expected an org or user name (no '/'), got {quote(v)}"
            )
        ),
        help="push each run to ORG/<sweep folder>-<run name>",
    )
    private: bool = option(
        False,
        kind=schema.custom(lambda v: None if isinstance(v, bool) else f"expected true or false, got {quote(v)}"),
        help="make pushed repos private",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _named(value: Any, what: str) -> str | None:
    return None if isinstance(value, str) and value else f"expected {what}, got {quote(value)}"


def _label_names(value: Any) -> str | None:
    if value is None or (isinstance(value, list) and len(value) >= 2 and all(isinstance(n, str) for n in value)):
        return None
    return f"expected a list of at least 2 class names, got {quote(value)}"


@dataclass(frozen=True)
class Run:
    """One fine-tune of a sweep: its name and hyperparameters."""

    name: str
    learning_rate: float
    seed: int
    weight_decay: float
    label_smoothing: float
    epochs: float
    max_steps: int | None = None

    def hyperparameters(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("name")
        return data


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _value_problem(name: str, value: Any) -> str | None:
    """Why `value` is not a valid value of hyperparameter `name` (None when it is)."""
    if name == "seed":
        ok = not isinstance(value, bool) and isinstance(value, int) and value >= 0
        return None if ok else f"expected a non-negative integer, got {quote(value)}"
    if not _number(value):
        return f"expected a number, got {quote(value)}"
    if name in ("learning_rate", "epochs") and value <= 0:
        return f"expected a positive number, got {quote(value)}"
    if name == "weight_decay" and value < 0:
        return f"expected a non-negative number, got {quote(value)}"
    if name == "label_smoothing" and not 0 <= value < 1:
        return f"expected a number in [0, 1), got {quote(value)}"
    return None


def _check_grid(grid: Any, where: str, problems: schema.Problems) -> None:
    if not isinstance(grid, dict) or not grid:
        problems.add(where, f"expected a mapping of hyperparameter to a list of values, got {quote(grid)}")
        return
    for name, values in grid.items():
        spot = f"{where}.{name}"
        if name not in HYPERPARAMETERS:
            problems.add(spot, f"unknown hyperparameter (expected one of: {', '.join(HYPERPARAMETERS)})")
            continue
        if not isinstance(values, list) or not values:
            problems.add(spot, f"expected a non-empty list of values, got {quote(values)}")
            continue
        for i, value in enumerate(values):
            if message := _value_problem(name, value):
                problems.add(f"{spot}[{i}]", message)
        if len(set(map(repr, values))) < len(values):
            problems.add(spot, f"repeats a value: {quote(values)}")


def _check_random(random: Any, where: str, problems: schema.Problems) -> None:
    if not isinstance(random, dict):
        problems.add(
            where, f"expected a mapping such as {{n: 8, seed: 0, learning_rate: [1e-5, 5e-5]}}, got {quote(random)}"
        )
        return
    n = random.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        problems.add(f"{where}.n", f"expected the number of runs, an integer of at least 2, got {quote(n)}")
    rng_seed = random.get("seed", 0)
    if isinstance(rng_seed, bool) or not isinstance(rng_seed, int):
        problems.add(f"{where}.seed", f"expected an integer (the search's seed), got {quote(rng_seed)}")
    for name, bounds in random.items():
        if name in ("n", "seed"):
            continue
        spot = f"{where}.{name}"
        if name not in HYPERPARAMETERS:
            allowed = [k for k in HYPERPARAMETERS if k != "seed"]
            problems.add(spot, f"unknown hyperparameter range (expected n, seed or one of: {', '.join(allowed)})")
            continue
        if not isinstance(bounds, list) or len(bounds) != 2:
            problems.add(spot, f"expected a range [low, high], got {quote(bounds)}")
            continue
        bad = [m for v in bounds if (m := _value_problem(name, v))]
        if bad:
            problems.add(spot, bad[0])
        elif bounds[0] > bounds[1]:
            problems.add(spot, f"low is above high in {quote(bounds)}")


def search_problems(grid: Any, random: Any, *, where: str = "") -> list[tuple[str, str]]:
    """Every problem of a sweep's grid or random search, each as (location, message)."""
    problems = schema.Problems()
    prefix = f"{where}." if where else ""
    if grid is not None and random is not None:
        problems.add(f"{prefix}random", "give either grid or random, not both")
    if grid is not None:
        _check_grid(grid, f"{prefix}grid", problems)
    if random is not None:
        _check_random(random, f"{prefix}random", problems)
    if not problems.items and grid is not None and math.prod(len(v) for v in grid.values()) < 2:
        problems.add(f"{prefix}grid", "a soup needs at least 2 runs: give at least one hyperparameter two values")
    return problems.items


def _data_files_problem(value: Any) -> str | None:
    from ..evaluation.data import data_files_problem  # the shape every split-to-files mapping must have

    if value is None:  # null in a recipe is "no files" (text-classification then asks for them)
        return None
    if problem := data_files_problem(value):
        return problem
    if "train" not in value:
        return f"needs a train split (fine-tuning trains on train only), got splits {', '.join(value) or 'none'}"
    return None


def sweep_problems(data: Any, *, where: str = "") -> list[tuple[str, str]]:
    """Every problem of sweep data (a mapping of `Sweep` fields), each as (location, message)."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        return [(where or "sweep", f"expected a mapping of sweep settings, got {type(data).__name__}")]
    problems = schema.Problems()
    fields = [f.name for f in schema.declared(Sweep)]
    for key in data:
        if key not in fields:
            problems.add(schema.at(where, key), f"unknown key (expected one of: {', '.join(fields)})")
    for key in ("base", "output_dir"):
        if key not in data:
            problems.add(f"{prefix}{key}", "missing (required)")
    problems.extend(schema.field_problems(Sweep, data, where))
    if data.get("grid") is None and data.get("random") is None:
        problems.add(f"{prefix}grid", "missing: give a grid or a random search")
    problems.extend(search_problems(data.get("grid"), data.get("random"), where=where))
    task = data.get("task", "text-classification")
    # str() of a value expanded from aliases could be huge: a non-string task is reported by its check above.
    task = task.lower().replace("_", "-") if isinstance(task, str) else "text-classification"
    if task == "text-classification" and not data.get("data_files"):
        problems.add(f"{prefix}data_files", "task text-classification needs data files with a train split")
    elif task != "text-classification":
        from ..evaluation.tasks import TASKS

        if "".join(c for c in task if c.isalnum()) not in TASKS:
            problems.add(
                f"{prefix}task",
                f"unknown task {quote(data.get('task'))} (expected text-classification or one of: {', '.join(TASKS)})",
            )
    return problems.items


def make_sweep(data: dict[str, Any], *, where: str = "sweep") -> Sweep:
    """Validate sweep data into a `Sweep`, or raise `SweepError` listing every problem with its location."""
    problems = sweep_problems(data, where="")
    if problems:
        raise SweepError(
            f"The {where} has {len(problems)} problem{'s' if len(problems) > 1 else ''}, each listed below.",
            fix=f"Hyperparameters are {', '.join(HYPERPARAMETERS)}; grid values are lists (learning_rate=1e-5,2e-5 "
            "on the command line), random ranges are [low, high].",
            problems=[f"{w}: {m}" for w, m in problems],
        )
    sweep = Sweep(**data)
    if sweep.data_files is not None:
        sweep.data_files = {s: [f] if isinstance(f, str) else list(f) for s, f in sweep.data_files.items()}
    return sweep
