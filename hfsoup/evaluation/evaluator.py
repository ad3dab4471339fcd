"""Score models on a task: `datasets` for the data, `evaluate` for the metric, Accelerate for placement and processes.

An `Evaluator` loads a task's split and its metric once and keeps the tokenized, length-sorted, padded batches
resident, so scoring many models that share a tokenizer (a greedy soup search) tokenizes once. Under
`accelerate launch` or `torchrun` each process scores every `world_size`-th batch and the predictions are gathered,
so every process returns the same report. What depends on the kind of model lives in `predictors/`.

Example:
    ```py
    >>> from hfsoup.evaluation.evaluator import Evaluator
    >>> evaluator = Evaluator("sst2", "validation")
    >>> for name in ["org/ft-a", "org/ft-b@v1", "./soup"]:
    ...     print(name, evaluator.score(name))
    org/ft-a {'accuracy': 0.912}
    ...
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__, distributed
from ..errors import EvaluationError, option
from ..texttable import text_table
from .data import Batch, SplitData, encode, load_splits, make_batches, preprocessing_fingerprint
from .placement import input_device, load_model, load_tokenizer
from .predictors.registry import predictor_for
from .tasks import PERPLEXITY, TEXT_CLASSIFICATION, Task, get_task, perplexity_task, text_classification_task

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 512


@dataclass
class SplitResult:
    """The score on one dataset split; `predictions` in the split's row order."""

    split: str
    num_examples: int
    metrics: dict[str, float]
    predictions: list = field(default_factory=list, repr=False)


@dataclass
class EvalReport:
    """What `hfsoup eval` reports: the task, the model and data pinned to versions, and one result per split."""

    task: str
    split: str
    model: dict[str, Any]
    dataset: dict[str, Any]
    metric: dict[str, str]
    results: list[SplitResult]
    hfsoup_version: str = __version__

    def metrics(self) -> dict[str, float]:
        """The metrics as one flat dict: `{"accuracy": ...}`, or `{"validation_matched/accuracy": ...}` for several."""
        if len(self.results) == 1:
            return dict(self.results[0].metrics)
        return {f"{r.split}/{name}": value for r in self.results for name, value in r.metrics.items()}

    def to_dict(self, *, predictions: bool = False) -> dict[str, Any]:
        data = asdict(self)
        for result in data["results"]:
            if not predictions:
                result.pop("predictions")
        return data

    def format_table(self) -> str:
        names = list(dict.fromkeys(name for r in self.results for name in r.metrics))
        model = self.model.get("sha") or self.model.get("path") or ""
        rows = [["split", "examples", *names]]
        rows += [[r.split, str(r.num_examples), *(f"{r.metrics[n]:.4f}" for n in names)] for r in self.results]
        return "\n".join([f"{self.task} on {self.model['spec']} ({model})", *text_table(rows, indent="  ")])


class Evaluator:
    """A task's split and metric, loaded once, ready to score any number of models.

    Args:
        task (`str` or `Task`):
            A name from `hfsoup.evaluation.tasks.TASKS` (`"sst2"`, `"mnli"`, ...), `"image-classification"` with
            `dataset`, or `"text-classification"` with `dataset` or `data_files` and `labels_from`.
        split (`str`, *optional*, defaults to `"validation"`):
            The split to score on. MNLI's `validation` is both `validation_matched` and `validation_mismatched`.
            A `datasets` spec (`validation[:50%]`, `train[:2000]`, `train+validation`) scores those rows as one part.
        tokenizer (`PreTrainedTokenizerBase` or `str`, *optional*):
            The tokenizer (for image models, a processor or image processor), or a folder or Hub ID to load a text
            tokenizer from. Defaults to each scored model's own; batches are kept per tokenizer, so models sharing
            one share the work.
        dataset (`str`, *optional*):
            Another dataset repo (`org/name` or `org/name@revision`) or folder with the task's config.
        data_files (`dict[str, list[str]]`, *optional*):
            Local csv/json/parquet files by split, instead of a dataset repo.
        limit (`int`, *optional*):
            Score only the first `limit` examples of each split.
        batch_size (`int`, *optional*, defaults to 32):
            Examples per forward pass.
        max_length (`int`, *optional*):
            Truncate inputs to this many tokens; defaults to the tokenizer's maximum, at most 512.
        token (`str` or `bool`, *optional*):
            Hub token for private models and datasets.
        hub_metrics (`bool`, *optional*):
            Score with the Hub's `evaluate-metric/<name>` module (Python code downloaded from `HF_ENDPOINT` and run)
            instead of the one shipped with hfsoup; defaults to `HFSOUP_HUB_METRICS`. See `hfsoup.evaluation.metrics`.
        labels_from (`str`, `os.PathLike` or `PreTrainedModel`, *optional*):
            For `"text-classification"`: the model whose `id2label` names the classes, in id order (a Hub ID or
            folder has only its config read; `evaluate_model` passes the model it scores). Models scored later are
            matched to these names, as for GLUE.
        text_field (`str`, *optional*):
            For `"perplexity"`: the column holding the text; `"text"` by default.
    """

    def __init__(
        self,
        task: str | Task,
        split: str = "validation",
        *,
        tokenizer: Any = None,
        dataset: str | None = None,
        data_files: dict[str, list[str]] | None = None,
        limit: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        token: str | bool | None = None,
        hub_metrics: bool | None = None,
        labels_from: Any = None,
        text_field: str | None = None,
    ) -> None:
        from .metrics import load_metric

        self.split = split
        self.batch_size, self.max_length, self.token = batch_size, max_length, token
        self.processes = distributed.current()
        with _main_first(self.processes):
            self.task = resolve_task(
                task,
                labels_from=labels_from,
                dataset=dataset,
                data_files=data_files,
                token=token,
                text_field=text_field,
            )
            self.splits, self.dataset = load_splits(
                self.task, split, dataset=dataset, data_files=data_files, limit=limit, token=token
            )
            self.metric = load_metric(self.task.metric, self.task.metric_config, hub=hub_metrics)
        self.tokenizer = load_tokenizer(tokenizer, token=token) if tokenizer is not None else None
        self._batches: dict[tuple[str, str], dict[str, list[Batch]]] = {}

    def score(self, model: Any, *, tokenizer: Any = None, kind: str | None = None) -> dict[str, float]:
        """The metrics of `model` as a flat dict (see `EvalReport.metrics`).

        `model` is a Hub ID, `org/name@revision`, a folder, or a loaded model, which is scored where it is (a soup
        search can load weights into one model and score it again and again). `tokenizer` overrides the model's
        own; `kind` (a key of `PREDICTORS`) the predictor chosen from its architecture.
        """
        return self.evaluate(model, tokenizer=tokenizer, kind=kind).metrics()

    def evaluate(self, model: Any, *, tokenizer: Any = None, kind: str | None = None) -> EvalReport:
        """Score `model` and report it with its provenance; see `score`. `kind` forces a predictor."""
        with _main_first(self.processes):
            model, provenance = load_model(model, kind=kind, token=self.token)
        architectures = [*(model.config.architectures or []), type(model).__name__]
        predictor = predictor_for(architectures, kind=kind, model_name=provenance["spec"])
        if tokenizer is not None:  # Loaded the predictor's way: an image model's folder gives its processor.
            tokenizer = load_tokenizer(tokenizer, token=self.token, loader=predictor.load_tokenizer)
        else:
            tokenizer = self.tokenizer
        if tokenizer is None:
            source = provenance.get("path") or getattr(model, "name_or_path", "")
            if not source:
                raise EvaluationError(
                    f"No tokenizer for the loaded model {provenance['spec']!r}: it was not loaded from a folder or "
                    "the Hub, so hfsoup cannot find its tokenizer.",
                    fix="Pass tokenizer= (a tokenizer, a folder or a Hub ID) to Evaluator or to score().",
                )
            tokenizer = load_tokenizer(source, token=self.token, loader=predictor.load_tokenizer)
        prepared = predictor.prepare(model, self.task, model_name=provenance["spec"], tokenizer=tokenizer)
        batches = self._batches_for(predictor, tokenizer)
        device = input_device(model)
        results = []
        for split in self.splits:
            mine = batches[split.name][self.processes.rank :: self.processes.world_size]
            logger.info(
                "process %d/%d: %d of the %d batches of %s",
                self.processes.rank,
                self.processes.world_size,
                len(mine),
                len(batches[split.name]),
                split.name,
                extra=distributed.EVERY_PROCESS,
            )
            predictions = _gather(_predict(model, predictor, prepared, mine, device), split, self.processes)
            metrics = self.metric.compute(predictions, split.references)
            results.append(SplitResult(split.name, len(predictions), metrics, predictions))
        dataset = {k: v for k, v in self.dataset.items() if k != "source"}
        return EvalReport(self.task.name, self.split, provenance, dataset, dict(self.metric.record), results)

    def restrict(self, positions: Sequence[int] | None) -> None:
        """Score only the rows at `positions` of the split (a held-out or reporting part); `None` keeps every row.

        Call it before scoring: the batches are made from the rows kept.
        """
        if positions is None:
            return
        if len(self.splits) != 1:
            names = ", ".join(s.name for s in self.splits)
            raise EvaluationError(
                f"Split {self.split!r} of {self.task.name} stands for several dataset splits ({names}); a part of it "
                "cannot be held out.",
                fix=f"Name one of them: {names}.",
            )
        split = self.splits[0]
        rows = list(positions)
        references, keys = [split.references[i] for i in rows], [split.keys[i] for i in rows]
        self.splits = [SplitData(split.name, split.rows.select(rows), references, keys)]
        self._batches.clear()

    def batches(self, predictor: Any, tokenizer: Any) -> dict[str, list[Batch]]:
        """The padded batches of each split for this predictor and tokenizer, made once and kept."""
        return self._batches_for(predictor, tokenizer)

    def _batches_for(self, predictor: Any, tokenizer: Any) -> dict[str, list[Batch]]:
        key = (predictor.name, preprocessing_fingerprint(tokenizer))
        if key not in self._batches:
            # An image processor has no model_max_length; its predictor ignores max_length.
            limit = getattr(tokenizer, "model_max_length", DEFAULT_MAX_LENGTH)
            max_length = self.max_length or min(limit, DEFAULT_MAX_LENGTH)
            batches = {}
            with _main_first(self.processes):  # The main process writes the cache; the others read it.
                for split in self.splits:
                    encoded = encode(split, predictor, self.task, tokenizer, max_length=max_length)
                    batches[split.name] = make_batches(encoded, predictor, tokenizer, batch_size=self.batch_size)
            self._batches[key] = batches
        return self._batches[key]


def resolve_task(
    task: str | Task,
    *,
    labels_from: Any = None,
    dataset: str | None = None,
    data_files: dict[str, list[str]] | None = None,
    token: str | bool | None = None,
    text_field: str | None = None,
) -> Task:
    """The `Task` named `task` (see `get_task`); `text-classification` with the class names of `labels_from`;
    `perplexity` on the `text_field` column.

    The data is checked before the model is read: text-classification has no data of its own, so a call without
    `dataset` or `data_files` fails at once, naming both.
    """
    if not isinstance(task, str):
        return task
    text_field = text_field or "text"
    if task.lower().replace("_", "-") != TEXT_CLASSIFICATION:
        found = get_task(task, dataset=dataset, token=token, text_field=text_field)
        if found.name == PERPLEXITY and not found.dataset and data_files:
            found = perplexity_task(
                dataset=", ".join(f for fs in data_files.values() for f in fs), text_field=text_field
            )
        if found.name == PERPLEXITY and not found.dataset:
            raise EvaluationError(
                "Task perplexity has no data of its own.",
                fix=f"Name a dataset with {option('dataset', 'org/text')}, or local files with --data-files "
                f"SPLIT=FILE; with a {text_field!r} column ({option('text_field', 'NAME')} names another).",
            )
        return found
    if dataset is None and not data_files:
        raise EvaluationError(
            "Task text-classification has no data of its own.",
            fix=f"Name a dataset with {option('dataset', 'org/name')}, or local files with --data-files SPLIT=FILE "
            "(data_files={SPLIT: [FILE]}); csv, json(l) or parquet with a text column and a label column (class "
            "names or ids in the model's id2label order).",
        )
    if labels_from is None:
        raise EvaluationError(
            "Task text-classification takes its class names from a model, and none was named.",
            fix="Pass labels_from=MODEL (a Hub ID, folder or loaded model) to Evaluator, or a Task made by "
            "text_classification_task(label_names); evaluate_model and 'hfsoup eval' use the model they score.",
        )
    source = dataset or ", ".join(f for files in (data_files or {}).values() for f in files)
    return text_classification_task(model_labels(labels_from, token=token), dataset=source)


def model_labels(model: Any, *, token: str | bool | None = None) -> list[str]:
    """A classifier's class names in id order, from its `id2label`: a loaded model's config, or the `config.json` of
    a Hub ID (`org/name@revision`) or folder, read without its weights."""
    config = getattr(model, "config", None)
    if config is None:
        from transformers import AutoConfig

        from ..hub import fetch, resolve

        folder = fetch(resolve(str(model), token=token), token=token, weights=False)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    id2label = {int(i): str(name) for i, name in (getattr(config, "id2label", None) or {}).items()}
    if not id2label:  # pragma: no cover - transformers gives every config LABEL_0 and LABEL_1
        raise EvaluationError(
            f"Model {model!r} names no classes (its config has no id2label), so text-classification has none.",
            fix="Set id2label in its config.json, or pass a Task made by text_classification_task(label_names).",
        )
    return [id2label[i] for i in sorted(id2label)]


def _predict(model: Any, predictor: Any, prepared: Any, batches: list[Batch], device: Any) -> list[tuple[int, Any]]:
    import torch

    was_training = model.training
    model.eval()
    out: list[tuple[int, Any]] = []
    try:
        with torch.inference_mode():
            conditioned = predictor.condition(model, prepared)  # once for these weights (CLIP: the class prompts)
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch.inputs.items()}
                predictions = predictor.readout(predictor.scores(model, inputs, conditioned).cpu(), prepared)
                out.extend(zip(batch.positions, predictions, strict=True))
    finally:
        model.train(was_training)
    return out


def _gather(pairs: list[tuple[int, Any]], split: SplitData, processes: distributed.Processes) -> list:
    """Every process's (position, prediction) pairs, in the split's row order, on every process."""
    if processes.world_size > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * processes.world_size
        dist.all_gather_object(parts, pairs)
        pairs = [pair for part in parts for pair in part]
    predictions = [None] * len(split.references)
    for position, prediction in pairs:
        predictions[position] = prediction
    if any(p is None for p in predictions):  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"predictions missing for {predictions.count(None)} examples of {split.name}")
    return predictions


class _main_first:  # noqa: N801 - a context manager, like contextlib helpers
    """The main process runs the block first (downloads, cache writes); the others wait, then run it on the cache."""

    def __init__(self, processes: distributed.Processes) -> None:
        self.processes = processes

    def __enter__(self) -> None:
        if not self.processes.is_main:
            self.processes.barrier()

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        # Released even when the main process failed: the others then meet the same error, and report it themselves.
        if self.processes.is_main:
            self.processes.barrier()


def evaluate_model(
    model: Any,
    task: str | Task,
    split: str = "validation",
    *,
    tokenizer: Any = None,
    dataset: str | None = None,
    data_files: dict[str, list[str]] | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    token: str | bool | None = None,
    kind: str | None = None,
    hub_metrics: bool | None = None,
    text_field: str | None = None,
) -> EvalReport:
    """Score one model on a task and report it with its provenance.

    Args:
        model (`str`, `os.PathLike` or `PreTrainedModel`):
            `org/name`, `org/name@revision`, a local folder, or a loaded model (scored where it is).
        task (`str` or `Task`):
            A task from `hfsoup.evaluation.tasks.TASKS`, `"image-classification"` (with `dataset`), or
            `"text-classification"` (with `dataset` or `data_files`), whose class names are the model's `id2label`.
        split (`str`, *optional*, defaults to `"validation"`):
            The split; for MNLI `validation` scores both `validation_matched` and `validation_mismatched`; or a
            `datasets` spec such as `validation[:50%]`.
        kind (`str`, *optional*):
            A key of `hfsoup.evaluation.predictors.registry.PREDICTORS`, to override the choice made from the model's
            architecture.
        tokenizer, dataset, data_files, limit, batch_size, max_length, token, hub_metrics, text_field:
            See `Evaluator`.

    Returns:
        `EvalReport`: `.metrics()` for the numbers, `.to_dict()` for the JSON that `hfsoup eval --json` writes.

    Raises:
        `EvaluationError`: an unknown task or split, a model whose labels do not fit the task, no examples.

    Example:
        ```py
        >>> import hfsoup
        >>> report = hfsoup.evaluate_model("org/ft-a@v1", "mrpc")
        >>> report.metrics()
        {'accuracy': 0.86, 'f1': 0.9}
        ```
    """
    evaluator = Evaluator(
        task,
        split,
        tokenizer=tokenizer,
        dataset=dataset,
        data_files=data_files,
        limit=limit,
        batch_size=batch_size,
        max_length=max_length,
        token=token,
        hub_metrics=hub_metrics,
        labels_from=model,
        text_field=text_field,
    )
    return evaluator.evaluate(model, kind=kind)


def score(model: Any, task: str | Task, split: str = "validation", **options: Any) -> dict[str, float]:
    """`evaluate_model(model, task, split, **options).metrics()`: the metrics as a flat dict."""
    return evaluate_model(model, task, split, **options).metrics()


__all__ = ["EvalReport", "EvaluationError", "Evaluator", "SplitResult", "evaluate_model", "score"]
