"""Fine-tune sweeps: train soup ingredients from one base over a hyperparameter grid or a random search.

    # hfsoup finetune google-bert/bert-base-uncased --task mrpc -o sweeps/mrpc \\
    #     --grid learning_rate=1e-5,2e-5,3e-5 seed=0,1 --epochs 3 --push-org me

Every run starts from the same checkpoint: the base with its classification head built once (seeded) and saved in
the sweep folder as `start/`. Runs that share their head's initialization can be souped; runs whose heads were
initialized independently cannot (`hfsoup check` refuses them). Training goes through `transformers.Trainer`
(Accelerate underneath) on the task's train split.

Each run is written to a hidden staging folder and renamed to `<output_dir>/<run name>` when complete, with a
`finetune.json` holding its hyperparameters and the sha256 of the shared start; a rerun skips the complete runs, so an
interrupted sweep resumes with the runs left.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..constants import TMP_MARKER
from ..errors import HfsoupError, OutputExistsError, SweepError, option, quote
from ..io import guard
from ..io.checkpoint import file_sha256
from ..io.staging import fresh_staging, open_up

logger = logging.getLogger(__name__)

#: The hyperparameters a sweep can vary, with their defaults (those of the model soups paper's BERT fine-tunes).
HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "seed": 0,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "epochs": 3.0,
}
#: Short names used in run names, in this order.
_SHORT = {"learning_rate": "lr", "seed": "seed", "weight_decay": "wd", "label_smoothing": "ls", "epochs": "ep"}
START_DIR = "start"
RUN_FILE = "finetune.json"
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

    base: str
    output_dir: str
    task: str = "text-classification"
    dataset: str | None = None
    data_files: dict[str, list[str]] | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None
    grid: dict[str, list] | None = None
    random: dict[str, Any] | None = None
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    max_length: int = 128
    head_seed: int = 0
    push_org: str | None = None
    private: bool = False


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


@dataclass
class _Problems:
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.items.append((where, message))


# ---- validation ----


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


def _check_grid(grid: Any, where: str, problems: _Problems) -> None:
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


def _check_random(random: Any, where: str, problems: _Problems) -> None:
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
    problems = _Problems()
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


def _positive_int(value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"expected a positive integer, got {quote(value)}"
    return None


#: Checks of the scalar fields of `Sweep` (grid and random are checked by `search_problems`).
FIELD_CHECKS = {
    "base": lambda v: None if isinstance(v, str) and v else f"expected a model ID or folder, got {quote(v)}",
    "output_dir": lambda v: None if isinstance(v, str) and v else f"expected a folder, got {quote(v)}",
    "task": lambda v: None if isinstance(v, str) and v else f"expected a task name, got {quote(v)}",
    "dataset": lambda v: None if v is None or isinstance(v, str) else f"expected a dataset repo, got {quote(v)}",
    "data_files": lambda v: _data_files_problem(v),
    "text_column": lambda v: None if isinstance(v, str) and v else f"expected a column name, got {quote(v)}",
    "label_column": lambda v: None if isinstance(v, str) and v else f"expected a column name, got {quote(v)}",
    "label_names": lambda v: (
        None
        if v is None or (isinstance(v, list) and len(v) >= 2 and all(isinstance(n, str) for n in v))
        else f"expected a list of at least 2 class names, got {quote(v)}"
    ),
    "grid": lambda v: None,
    "random": lambda v: None,
    "epochs": lambda v: None if _number(v) and v > 0 else f"expected a positive number, got {quote(v)}",
    "max_steps": lambda v: _positive_int(v, optional=True),
    "batch_size": _positive_int,
    "max_length": _positive_int,
    "head_seed": lambda v: (
        None if not isinstance(v, bool) and isinstance(v, int) else f"expected an integer, got {quote(v)}"
    ),
    "push_org": lambda v: (
        None
        if v is None or (isinstance(v, str) and v and "/" not in v)
        else f"expected an org or user name (no '/'), got {quote(v)}"
    ),
    "private": lambda v: None if isinstance(v, bool) else f"expected true or false, got {quote(v)}",
}


def _data_files_problem(value: Any) -> str | None:
    from ..evaluation.data import data_files_problem  # the shape every split-to-files mapping must have

    if value is None or (problem := data_files_problem(value)):
        return problem
    if "train" not in value:
        return f"needs a train split (fine-tuning trains on train only), got splits {', '.join(value) or 'none'}"
    return None


def sweep_problems(data: Any, *, where: str = "") -> list[tuple[str, str]]:
    """Every problem of sweep data (a mapping of `Sweep` fields), each as (location, message)."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        return [(where or "sweep", f"expected a mapping of sweep settings, got {type(data).__name__}")]
    problems: list[tuple[str, str]] = []
    for key in data:
        if key not in FIELD_CHECKS:
            at = f"{prefix}{key}" if isinstance(key, str) and len(key) <= 64 else f"{where}[{quote(key, limit=64)}]"
            problems.append((at, f"unknown key (expected one of: {', '.join(FIELD_CHECKS)})"))
    for key in ("base", "output_dir"):
        if key not in data:
            problems.append((f"{prefix}{key}", "missing (required)"))
    for key, value in data.items():
        if key in FIELD_CHECKS and (message := FIELD_CHECKS[key](value)):
            problems.append((f"{prefix}{key}", message))
    if data.get("grid") is None and data.get("random") is None:
        problems.append((f"{prefix}grid", "missing: give a grid or a random search"))
    problems += search_problems(data.get("grid"), data.get("random"), where=where)
    task = data.get("task", "text-classification")
    # str() of a value expanded from aliases could be huge: a non-string task is reported by its check above.
    task = task.lower().replace("_", "-") if isinstance(task, str) else "text-classification"
    if task == "text-classification" and not data.get("data_files"):
        problems.append((f"{prefix}data_files", "task text-classification needs data files with a train split"))
    elif task != "text-classification":
        from ..evaluation.tasks import TASKS

        if "".join(c for c in task if c.isalnum()) not in TASKS:
            problems.append(
                (
                    f"{prefix}task",
                    f"unknown task {quote(data.get('task'))} (expected text-classification or one of: "
                    f"{', '.join(TASKS)})",
                )
            )
    return problems


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


# ---- planning ----


def _run(values: dict[str, Any], sweep: Sweep, varied: list[str]) -> Run:
    merged = {**HYPERPARAMETERS, "epochs": sweep.epochs, **values}
    shown = [k for k in _SHORT if k in ("learning_rate", "seed", "weight_decay", "label_smoothing") or k in varied]
    parts = []
    for key in shown:
        value = merged[key]
        text = (
            str(int(value))
            if key == "seed"
            else f"{float(value):.3g}"
            if key == "learning_rate"
            else repr(float(value))
        )
        parts.append(f"{_SHORT[key]}{text}")
    return Run(
        name="-".join(parts),
        learning_rate=float(merged["learning_rate"]),
        seed=int(merged["seed"]),
        weight_decay=float(merged["weight_decay"]),
        label_smoothing=float(merged["label_smoothing"]),
        epochs=float(merged["epochs"]),
        max_steps=sweep.max_steps,
    )


def plan_sweep(sweep: Sweep) -> list[Run]:
    """The runs of `sweep`, in a deterministic order with deterministic names (`lr2e-05-seed0-wd0.0-ls0.0`).

    Example:
        ```py
        >>> sweep = Sweep("org/bert", "sweep/", task="sst2", grid={"learning_rate": [1e-5, 2e-5], "seed": [0, 1]})
        >>> [run.name for run in plan_sweep(sweep)][:2]
        ['lr1e-05-seed0-wd0.0-ls0.0', 'lr1e-05-seed1-wd0.0-ls0.0']
        ```
    """
    problems = search_problems(sweep.grid, sweep.random)
    if sweep.grid is None and sweep.random is None:
        problems.append(("grid", "missing: give a grid or a random search"))
    if problems:
        raise SweepError(
            f"The sweep's search has {len(problems)} problem{'s' if len(problems) > 1 else ''}, each listed below.",
            fix=f"Hyperparameters are {', '.join(HYPERPARAMETERS)}; grid values are non-empty lists, random ranges "
            "are [low, high] and n is at least 2.",
            problems=[f"{w}: {m}" for w, m in problems],
        )
    if sweep.grid is not None:
        keys = [k for k in HYPERPARAMETERS if k in sweep.grid]
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep.grid[k] for k in keys))]
        runs = [_run(c, sweep, [k for k in keys if len(sweep.grid[k]) > 1]) for c in combos]
    else:
        import numpy as np

        spec = dict(sweep.random)  # type: ignore[arg-type]
        rng = np.random.default_rng(spec.pop("seed", 0))
        n = spec.pop("n")
        runs = []
        for _ in range(n):
            values: dict[str, Any] = {"seed": int(rng.integers(0, 10_000))}
            for key in HYPERPARAMETERS:
                if key not in spec:
                    continue
                low, high = spec[key]
                if key == "learning_rate":
                    values[key] = float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")
                elif key == "epochs":
                    values[key] = int(rng.integers(math.ceil(low), math.floor(high) + 1))
                else:
                    values[key] = float(f"{rng.uniform(low, high):.3g}")
            runs.append(_run(values, sweep, [k for k in spec]))
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(
            f"The sweep plans several runs with the same hyperparameters: {', '.join(duplicates)}.",
            fix="Widen the random ranges, raise their precision, or change the search's seed.",
        )
    return runs


# ---- running ----


def _task(sweep: Sweep, base_config: Any) -> Any:
    from ..evaluation.tasks import TEXT_CLASSIFICATION, get_task, is_generic_label, text_classification_task

    if sweep.task.lower().replace("_", "-") != TEXT_CLASSIFICATION:
        task = get_task(sweep.task)
        return task if sweep.dataset is None else replace(task, dataset=sweep.dataset)
    names = sweep.label_names
    if names is None:
        import datasets

        from ..evaluation.data import _BUILDERS

        files = sweep.data_files["train"]  # type: ignore[index]
        suffix = Path(files[0]).suffix.lower()
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        try:
            rows = datasets.load_dataset(_BUILDERS.get(suffix, "json"), data_files={"train": files}, **kwargs)["train"]
            labels = rows[sweep.label_column]
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise HfsoupError(
                f"Cannot read labels (column {sweep.label_column!r}) from the train files {', '.join(files)}: {exc}.",
                fix=f"Check {option('data_files', ..., within='Sweep')} and "
                f"{option('label_column', ..., within='Sweep')}.",
            ) from exc
        if labels and isinstance(labels[0], str):
            names = sorted(set(labels))
        else:
            count = max(int(v) for v in labels) + 1
            given = [base_config.id2label.get(i) for i in range(count)] if base_config.num_labels == count else []
            if given and not any(is_generic_label(n) for n in given):
                names = [str(n) for n in given]
            else:
                names = [f"LABEL_{i}" for i in range(max(count, 2))]
    return text_classification_task(names, text_field=sweep.text_column, label_field=sweep.label_column)


def _shared_start(sweep: Sweep, task: Any, token: str | None) -> tuple[Path, str]:
    """The sweep's shared starting checkpoint (the base with its head for `task`), made once, and its sha256."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = Path(sweep.output_dir) / START_DIR
    weights = out / "model.safetensors"
    if weights.is_file():
        return out, file_sha256(weights)
    staging = out.parent / f".{out.name}{TMP_MARKER}partial"
    labels = {i: name for i, name in enumerate(task.label_names)} if task.label_names else None
    extra: dict[str, Any] = {"num_labels": task.num_labels}
    if labels:
        extra.update(id2label=labels, label2id={n: i for i, n in labels.items()})
    torch.manual_seed(sweep.head_seed)  # a head the base lacks is initialized from this seed
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            sweep.base, token=token, ignore_mismatched_sizes=True, **extra
        )
        tokenizer = AutoTokenizer.from_pretrained(sweep.base, token=token)
    except OSError as exc:
        raise HfsoupError(
            f"Cannot load the base model {sweep.base!r} for sequence classification: {str(exc).splitlines()[0]}",
            fix="Name a Hub model ID or a folder holding a transformers model and its tokenizer.",
        ) from exc
    if task.is_regression:
        model.config.problem_type = "regression"
    _fresh(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    open_up(staging)
    os.replace(staging, out)
    return out, file_sha256(weights)


def _fresh(staging: Path) -> None:
    """A new staging folder: leftovers of an earlier run discarded, a link planted at the name never followed."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    fresh_staging(staging, resume=False)


def _train_rows(sweep: Sweep, task: Any, tokenizer: Any, token: str | None) -> tuple[Any, dict]:
    from ..evaluation.data import load_splits

    (split,), provenance = load_splits(task, "train", dataset=sweep.dataset, data_files=sweep.data_files, token=token)
    rows = split.rows
    fields = task.text_fields

    def encode(batch: dict) -> dict:
        return tokenizer(*(batch[f] for f in fields), truncation=True, max_length=sweep.max_length)

    encoded = rows.map(encode, batched=True, remove_columns=rows.column_names, desc=f"Tokenizing {task.name}/train")
    labels = [float(v) for v in split.references] if task.is_regression else split.references
    return encoded.add_column("labels", labels), provenance


def _card(sweep: Sweep, run: Run, task: Any) -> str:
    from huggingface_hub import ModelCardData

    local = os.path.isdir(sweep.base)  # the Hub accepts only a model ID as base_model
    data = ModelCardData(
        base_model=None if local else sweep.base,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["hfsoup", "hfsoup-finetune", "model-soup-ingredient"],
    )
    hp = ", ".join(f"{k}={v}" for k, v in run.hyperparameters().items() if v is not None)
    return (
        f"---\n{data.to_yaml()}\n---\n\n# {run.name}\n\n"
        f"A fine-tune of {'the local model ' * local}`{sweep.base}` on {task.name} (train split), "
        f"one run of an `hfsoup finetune` sweep: {hp}. "
        "Every run of the sweep started from the same checkpoint (the base with one seeded classification head), so "
        "the runs can be averaged into a model soup (`hfsoup soup`). `finetune.json` records the hyperparameters and "
        "the sha256 of that shared start.\n"
    )


def _train(sweep: Sweep, run: Run, start: Path, start_sha: str, task: Any, train: Any, data: dict) -> Path:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    out = Path(sweep.output_dir) / run.name
    staging = out.parent / f".{out.name}{TMP_MARKER}partial"
    _fresh(staging)
    try:
        tokenizer = AutoTokenizer.from_pretrained(start)
        model = AutoModelForSequenceClassification.from_pretrained(start)
        gpu = torch.cuda.is_available()
        args = TrainingArguments(
            output_dir=str(staging / "trainer"),
            learning_rate=run.learning_rate,
            num_train_epochs=run.epochs,
            max_steps=run.max_steps if run.max_steps is not None else -1,
            per_device_train_batch_size=sweep.batch_size,
            weight_decay=run.weight_decay,
            label_smoothing_factor=run.label_smoothing,
            seed=run.seed,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=not gpu,
            dataloader_pin_memory=gpu,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)  # no metrics dict printed at the end: the sweep logs its progress
        result = trainer.train()
        shutil.rmtree(staging / "trainer", ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(_card(sweep, run, task))
        record = {
            "run": run.name,
            "hyperparameters": run.hyperparameters(),
            "base_model": sweep.base,
            "start": {"path": START_DIR, "sha256": start_sha, "head_seed": sweep.head_seed},
            "task": task.name,
            "data": data,
            "batch_size": sweep.batch_size,
            "max_length": sweep.max_length,
            "train_examples": len(train),
            "steps": result.global_step,
            "train_loss": result.training_loss,
        }
        (staging / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        open_up(staging)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def is_complete(folder: Path) -> bool:
    """Whether `folder` is a finished run (moved into place with its `finetune.json`)."""
    return (folder / RUN_FILE).is_file()


def _push(sweep: Sweep, run: Run, folder: Path, token: str | None) -> str:
    from huggingface_hub import HfApi

    from ..publish.upload import _check_repo_id

    record_path = Path(sweep.output_dir) / PUSHED_FILE
    pushed = json.loads(record_path.read_text()) if record_path.is_file() else {}
    repo_id = f"{sweep.push_org}/{Path(sweep.output_dir).resolve().name}-{run.name}"
    if pushed.get(run.name, {}).get("repo_id") == repo_id:
        return repo_id
    _check_repo_id(repo_id)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=sweep.private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message=f"hfsoup finetune: {run.name} of a fine-tune sweep"
    )
    pushed[run.name] = {"repo_id": repo_id, "commit": commit.oid}
    from ..io.staging import write_file_atomic

    write_file_atomic(record_path, json.dumps(pushed, indent=2) + "\n")
    return repo_id


def run_sweep(sweep: Sweep, *, token: str | None = None) -> list[Path | str]:
    """Train every run of `sweep` that is not complete yet; push them when `sweep.push_org` is set.

    Returns, in plan order, each run's folder, or its repo ID when pushed.

    Example:
        ```py
        >>> sweep = Sweep("org/bert", "sweep/", task="sst2", grid={"seed": [0, 1]}, max_steps=100)
        >>> run_sweep(sweep)
        [PosixPath('sweep/lr2e-05-seed0-wd0.0-ls0.0'), PosixPath('sweep/lr2e-05-seed1-wd0.0-ls0.0')]
        ```
    """
    from huggingface_hub.utils import tqdm
    from transformers import AutoConfig, AutoTokenizer

    runs = plan_sweep(sweep)
    root = Path(sweep.output_dir)
    # Runs are added to the sweep folder, which is never replaced: it may hold a local base, but not be or lie
    # inside it, nor be the current or home folder, a root or the Hub cache.
    local = Path(sweep.base).expanduser().is_dir()
    base = [guard.Protected(f"the base model {sweep.base!r}", guard.real(sweep.base), may_contain=True)]
    guard.refuse_collisions(root, base if local else [])
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"The sweep folder {root} is a file.", fix="Choose another folder with -o.")
    for run in runs:
        if (root / run.name).exists() and not is_complete(root / run.name):
            raise OutputExistsError(
                f"{root / run.name} exists but is not a finished run of this sweep (it has no {RUN_FILE}).",
                fix="Move it away, or choose another sweep folder with -o.",
            )
    root.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if not is_complete(root / r.name)]
    if len(todo) < len(runs):
        logger.info(
            "%d of %d runs are complete in %s; training the %d left", len(runs) - len(todo), len(runs), root, len(todo)
        )
    outputs: list[Path | str] = []
    if todo:
        config = AutoConfig.from_pretrained(
            sweep.base if not (root / START_DIR).is_dir() else root / START_DIR, token=token
        )
        task = _task(sweep, config)
        start, start_sha = _shared_start(sweep, task, token)
        train, data = _train_rows(sweep, task, AutoTokenizer.from_pretrained(start), token)
    else:  # nothing to train; the runs are checked against the start when it is still there
        start_weights = root / START_DIR / "model.safetensors"
        start_sha = file_sha256(start_weights) if start_weights.is_file() else None
    for run in tqdm(runs, desc="Fine-tuning", unit="run"):
        folder = root / run.name
        if is_complete(folder):
            recorded = json.loads((folder / RUN_FILE).read_text())["start"]["sha256"]
            if start_sha is not None and recorded != start_sha:
                raise SweepError(
                    f"{folder} was trained from another start (sha256 {recorded[:12]}...) than the sweep's "
                    f"{root / START_DIR} ({start_sha[:12]}...): its head would not be shared.",
                    fix="Train the sweep into a fresh folder, or move the stale run away.",
                )
        else:
            logger.info("fine-tuning %s (%s)", run.name, run.hyperparameters())
            _train(sweep, run, start, start_sha, task, train, data)
        outputs.append(_push(sweep, run, folder, token) if sweep.push_org else folder)
    return outputs


# ---- command line ----


def _cli_value(name: str, text: str) -> Any:
    """A value as typed on the command line: an int for seeds, a number otherwise; the text itself when neither
    (so that validation reports it)."""
    for kind in (int, float) if name == "seed" else (float,):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def sweep_from_args(
    base: str,
    output_dir: str,
    *,
    grid: list[str] | None = None,
    ranges: list[str] | None = None,
    random_n: int | None = None,
    random_seed: int = 0,
    **settings: Any,
) -> Sweep:
    """A `Sweep` from command-line text (`learning_rate=1e-5,2e-5`, `learning_rate=1e-5:5e-5`); every problem of
    every argument is reported at once in one `SweepError`."""
    problems: list[str] = []
    parsed_grid: dict[str, list] | None = None
    random: dict[str, Any] | None = None
    if grid:
        parsed_grid = {}
        for item in grid:
            name, sep, values = item.partition("=")
            if not sep or not name or not values:
                problems.append(f"--grid {item}: expected NAME=VALUE,VALUE,... (e.g. learning_rate=1e-5,2e-5)")
                continue
            parsed_grid[name] = [_cli_value(name, v.strip()) for v in values.split(",")]
    if random_n is not None:
        random = {"n": random_n, "seed": random_seed}
        for item in ranges or []:
            name, sep, bounds = item.partition("=")
            low, colon, high = bounds.partition(":")
            if not sep or not colon:
                problems.append(f"--range {item}: expected NAME=LOW:HIGH (e.g. learning_rate=1e-5:5e-5)")
                continue
            random[name] = [_cli_value(name, low.strip()), _cli_value(name, high.strip())]
    elif ranges:
        problems.append("--range: ranges apply to a random search: add --random N")
    data = {"base": base, "output_dir": output_dir, "grid": parsed_grid, "random": random}
    data.update({k: v for k, v in settings.items() if v is not None})
    problems += [f"{_cli_name(w)}: {m}" for w, m in sweep_problems(data)]
    if problems:
        raise SweepError(
            f"The fine-tune sweep has {len(problems)} problem{'s' if len(problems) > 1 else ''}, each listed below.",
            fix=f"Hyperparameters are {', '.join(HYPERPARAMETERS)}: --grid learning_rate=1e-5,2e-5 seed=0,1, or "
            "--random 8 --seed 0 --range learning_rate=1e-5:5e-5 weight_decay=0:0.1.",
            problems=problems,
        )
    return make_sweep(data)


def _cli_name(where: str) -> str:
    head, _, rest = where.partition(".")
    flag = {"grid": "--grid", "random": "--random/--range", "output_dir": "-o"}.get(
        head, f"--{head.replace('_', '-')}"
    )
    return f"{flag} {rest}".strip()
