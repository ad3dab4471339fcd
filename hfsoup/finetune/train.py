"""Running a sweep: the shared start (the base with one seeded head), each run through `transformers.Trainer`, and
the push of each finished run.

Each run is written to a hidden staging folder and renamed to `<output_dir>/<run name>` when complete, with a
`finetune.json` holding its hyperparameters and the sha256 of the shared start; a rerun skips the complete runs, so an
interrupted sweep resumes with the runs left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..constants import TMP_MARKER
from ..errors import HfsoupError, OutputExistsError, SweepError, option
from ..io import guard
from ..io.checkpoint import file_sha256
from ..io.staging import fresh_staging, open_up
from .plan import plan_sweep
from .sweep import PUSHED_FILE, RUN_FILE, START_DIR, Run, Sweep

logger = logging.getLogger(__name__)


def _task(sweep: Sweep, base_config: Any) -> Any:
    from ..evaluation.tasks import TEXT_CLASSIFICATION, get_task, is_generic_label, text_classification_task

    if sweep.task.lower().replace("_", "-") != TEXT_CLASSIFICATION:
        task = get_task(sweep.task)
        return task if sweep.dataset is None else replace(task, dataset=sweep.dataset)
    names = sweep.label_names
    if names is None:
        import datasets

        from ..evaluation.data import FILE_BUILDERS

        files = sweep.data_files["train"]  # type: ignore[index]
        suffix = Path(files[0]).suffix.lower()
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        try:
            builder = FILE_BUILDERS.get(suffix, "json")
            rows = datasets.load_dataset(builder, data_files={"train": files}, **kwargs)["train"]
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


def _train(
    sweep: Sweep,
    run: Run,
    start: Path,
    start_sha: str,
    task: Any,
    train: Any,
    data: dict,
    *,
    on_step: Callable[[int, int], None] | None = None,
) -> Path:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class ShowSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201, ANN003 - the callback API
            if on_step is not None:
                on_step(state.global_step, state.max_steps)

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
        trainer.add_callback(ShowSteps())
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


def _step_shower(bar, name: str):  # noqa: ANN001, ANN202 - a tqdm; a callable(step, of)
    """The sweep's one bar counts runs; within a run, each training step shows beside it (a run takes minutes)."""

    def show(step: int, of: int) -> None:
        bar.set_postfix_str(f"{name}: step {step}/{of}")

    return show


def is_complete(folder: Path) -> bool:
    """Whether `folder` is a finished run (moved into place with its `finetune.json`)."""
    return (folder / RUN_FILE).is_file()


def _push(sweep: Sweep, run: Run, folder: Path, token: str | None) -> str:
    from huggingface_hub import HfApi

    from ..publish.upload import require_valid_repo_id

    record_path = Path(sweep.output_dir) / PUSHED_FILE
    pushed = json.loads(record_path.read_text()) if record_path.is_file() else {}
    repo_id = f"{sweep.push_org}/{Path(sweep.output_dir).resolve().name}-{run.name}"
    if pushed.get(run.name, {}).get("repo_id") == repo_id:
        return repo_id
    require_valid_repo_id(repo_id)
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
    from transformers import AutoConfig, AutoTokenizer

    from ..progress import bar as progress_bar

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
    bar = progress_bar(runs, desc="Fine-tuning", unit="run")
    for run in bar:
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
            _train(sweep, run, start, start_sha, task, train, data, on_step=_step_shower(bar, run.name))
        outputs.append(_push(sweep, run, folder, token) if sweep.push_org else folder)
    return outputs
