"""The tasting stage of the pipeline: score the ingredients, search the soup, and lay out the results table.

Runs after the ingredients are fetched and before the soup is written. It carves the task's data into a held-out part
(where greedy and learned soups are selected) and a reported part (never used for selection), scores every ingredient
on both, runs the chosen soup method and the baselines (uniform, greedy, learned soups and the output ensemble), and
returns the mixing weights that the streaming engine then writes, with the table and the provenance that go beside
them. Nothing here writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import EvaluationError, InvalidSoupArgumentsError, option
from ..evaluation.evaluator import DEFAULT_BATCH_SIZE, Evaluator
from ..evaluation.tasks import TEXT_CLASSIFICATION, Task, get_task, text_classification_task
from ..soups import GreedySoup, LearnedSoup, Mixing
from .heldout import DEFAULT_FRACTION, Part, carve, duplicate_inputs
from .results import ResultsTable, Row, require_matplotlib
from .scorers import ClassifierScorer, make_scorer

logger = logging.getLogger(__name__)

#: What the results table can compare, besides every ingredient.
BASELINES = ("uniform", "greedy", "learned", "ensemble")


@dataclass
class Selection:
    """Where and how soups are scored and selected: the task, its held-out and reported parts, the methods' options.

    Args:
        task (`str` or `Task`):
            A GLUE task name (`sst2`, ...), `text-classification` (class names from the first ingredient, data from
            `dataset` or `data_files` with `text` and `label` columns), or a `Task`.
        report (`str`, *optional*, defaults to `"validation"`):
            The split the results are reported on.
        held_out (`str`, *optional*):
            The split to select on; by default a seeded part of `report` (see `hfsoup.selection.heldout.carve`).
        fraction (`float`, *optional*, defaults to 0.5), size (`int`, *optional*), seed (`int`, *optional*):
            How the held-out part is carved.
        dataset (`str`, *optional*), data_files (`dict[str, list[str]]`, *optional*):
            Another dataset repo or folder, or local csv/json/parquet files by split.
        batch_size (`int`, *optional*, defaults to 32), max_length (`int`, *optional*):
            Scoring batches and truncation.
        accept (`str`, *optional*, defaults to `"ge"`), early_stop (`bool`, *optional*, defaults to `True`):
            The greedy soup's acceptance rule and early stopping.
        by_layer (`bool`, *optional*), learned_steps (`int`, *optional*, defaults to 20),
        learned_lr (`float`, *optional*, defaults to 0.05):
            The learned soup's options.
        compare (`Sequence[str]`, *optional*):
            The baselines in the table, from `BASELINES`; all by default. The chosen method is always scored.
        force (`bool`, *optional*, defaults to `False`):
            Accept held-out rows that are also reported.
        plot (`bool`, *optional*, defaults to `True`):
            Draw `results.png` (needs matplotlib).
        hub_metrics (`bool`, *optional*):
            Score with the Hub's metric module instead of hfsoup's (see `Evaluator`); defaults to `HFSOUP_HUB_METRICS`.
    """

    task: str | Task
    report: str = "validation"
    held_out: str | None = None
    fraction: float = DEFAULT_FRACTION
    size: int | None = None
    seed: int = 0
    dataset: str | None = None
    data_files: dict[str, list[str]] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: int | None = None
    accept: str = "ge"
    early_stop: bool = True
    by_layer: bool = False
    learned_steps: int = 20
    learned_lr: float = 0.05
    compare: Sequence[str] = BASELINES
    force: bool = False
    plot: bool = True
    hub_metrics: bool | None = None

    def check(self) -> None:
        """Refuse contradictory options before anything is downloaded."""
        unknown = [c for c in self.compare if c not in BASELINES]
        if unknown:
            raise InvalidSoupArgumentsError(
                f"Unknown baseline(s) {', '.join(map(repr, unknown))} to compare.",
                fix=f"Choose from: {', '.join(BASELINES)} (or none).",
            )
        GreedySoup(accept=self.accept)
        LearnedSoup(by_layer=self.by_layer, steps=self.learned_steps, lr=self.learned_lr)
        if self.plot:
            require_matplotlib()


@dataclass
class Tasting:
    """What tasting produced: the weights to write, the table and the provenance to write beside them.

    Attributes:
        mixing (`Mixing`): the chosen method's weights.
        table (`ResultsTable`): every ingredient, soup and the ensemble on both parts.
        evaluation (`dict`): the chosen soup's own scores and where they come from.
        records (`dict[str, dict]`): per soup scored (`uniform`, `greedy`, `learned`), its method's record: the
            greedy decisions, the learned weights and losses, the held-out loss.
    """

    mixing: Mixing
    table: ResultsTable
    evaluation: dict
    records: dict[str, dict] = field(default_factory=dict)


def taste(
    ingredients: Sequence[Any],
    readers: Sequence[Any],
    *,
    method: str,
    weights: Sequence[float] | None,
    selection: Selection,
    names: Sequence[str],
    alignment: Mapping[int, Sequence[int]],
    label_indexed: Sequence[str],
    token: str | bool | None = None,
) -> Tasting:
    """Score, search and compare. `ingredients` are the pinned `hub.PinnedIngredient`s, `readers` their checkpoints,
    `names` the tensor names to mix, `alignment`/`label_indexed` how to put permuted heads in order."""
    from ..evaluation.placement import load_model, load_tokenizer

    first = str(ingredients[0].local_dir)
    model, _ = load_model(first, kind=None, token=token)
    tokenizer = load_tokenizer(first, token=token)
    task = _task(selection, model, token=token)
    held, report, parts = _parts(task, selection, token=token)
    held_scorer = make_scorer(held, model, tokenizer, model_name=ingredients[0].name)
    report_scorer = make_scorer(report, model, tokenizer, model_name=ingredients[0].name)
    loaders = [state_loader(reader, names, alignment.get(i), label_indexed) for i, reader in enumerate(readers)]
    compare = set(selection.compare) | {method}
    labels = [i.name for i in ingredients]

    # Every ingredient on both parts; the uniform (or weighted) sum accumulates on the way.
    n = len(loaders)
    mix = tuple(weights) if weights is not None and method == "uniform" else tuple(1.0 / n for _ in range(n))
    keep_states = "learned" in compare
    states, held_logits, report_logits = [], [], []
    uniform: dict[str, torch.Tensor] | None = None
    for i, load in enumerate(loaders):
        state = load()
        held_logits.append(held_scorer.logits(state))
        report_logits.append(report_scorer.logits(state))
        uniform = _add(uniform, state, mix[i])
        if keep_states:
            states.append(state)
        logger.info("scored %s: held-out %s", labels[i], f"{held_scorer.primary_of(held_logits[-1]):.4f}")
    assert uniform is not None
    table = ResultsTable(
        task.primary_metric, parts[0].description, parts[1].description, metric_module=dict(held.metric.record)
    )
    for i, ingredient in enumerate(ingredients):
        table.rows.append(
            Row(
                labels[i],
                "ingredient",
                sha=ingredient.sha,
                held_out=held_scorer.metrics(held_logits[i]),
                report=report_scorer.metrics(report_logits[i]),
            )
        )

    soups: dict[str, tuple[dict, Mixing, dict]] = {}
    if "uniform" in compare:
        soups["uniform"] = (uniform, Mixing(mix), {})
    if "greedy" in compare:
        greedy = GreedySoup(accept=selection.accept, early_stop=selection.early_stop)
        scores = [held_scorer.primary_of(logits) for logits in held_logits]
        found = greedy.search(loaders, held_scorer, names=labels, scores=scores)
        soups["greedy"] = (found.state, found.mixing, found.to_dict())
        for i, row in enumerate(table.rows[:n]):
            row.kept = i in found.kept
    if "learned" in compare:
        learner = LearnedSoup(by_layer=selection.by_layer, steps=selection.learned_steps, lr=selection.learned_lr)
        learned = learner.fit(states, held_scorer, names=labels, device=held_scorer.device)
        soups["learned"] = (_mixed(states, learned.mixing), learned.mixing, learned.to_dict())
    del states

    evaluation_metrics: dict[str, dict] = {}
    for name, (state, _, record) in soups.items():
        held_out_logits, report_out_logits = held_scorer.logits(state), report_scorer.logits(state)
        row = Row(f"{name} soup", "soup", method=name)
        row.held_out = held_scorer.metrics(held_out_logits)
        row.report = report_scorer.metrics(report_out_logits)
        if name in ("uniform", "learned"):
            record.setdefault("held_out_loss", held_scorer.mean_loss(held_out_logits))
        table.rows.append(row)
        evaluation_metrics[name] = {"held_out": row.held_out, "report": row.report}
    if "ensemble" in compare:
        row = Row("ensemble", "ensemble")
        row.held_out = held_scorer.metrics(torch.stack(held_logits).mean(dim=0))
        row.report = report_scorer.metrics(torch.stack(report_logits).mean(dim=0))
        table.rows.append(row)

    evaluation = _evaluation(task, held, parts, evaluation_metrics[method])
    logger.info("results:\n%s", table.format_table())
    return Tasting(soups[method][1], table, evaluation, {name: record for name, (_, _, record) in soups.items()})


def _task(selection: Selection, model: Any, *, token: str | bool | None) -> Task:
    if isinstance(selection.task, Task):
        return selection.task
    if selection.task.lower().replace("_", "-") == TEXT_CLASSIFICATION:
        if selection.dataset is None and not selection.data_files:
            raise EvaluationError(
                "Task text-classification has no data of its own.",
                fix=f"Name a dataset with {option('dataset', 'org/name', within='Selection')}, or local files with "
                "--data-files SPLIT=FILE (Selection(data_files={SPLIT: [FILE]})), columns text and label.",
            )
        id2label = model.config.id2label
        source = selection.dataset or ", ".join(f for files in (selection.data_files or {}).values() for f in files)
        return text_classification_task([id2label[i] for i in sorted(id2label)], dataset=source)
    return get_task(selection.task, dataset=selection.dataset, token=token)


def _parts(task: Task, selection: Selection, *, token: str | bool | None) -> tuple[Evaluator, Evaluator, list[Part]]:
    """Evaluators restricted to the held-out and reported parts, and the parts."""
    options = {
        "dataset": selection.dataset,
        "data_files": selection.data_files,
        "batch_size": selection.batch_size,
        "max_length": selection.max_length,
        "token": token,
        "hub_metrics": selection.hub_metrics,
    }
    report = Evaluator(task, selection.report, **options)
    held_split = selection.held_out or selection.report
    held = Evaluator(task, held_split, **options)
    if held.metric.record != report.metric.record:  # the Hub's space got a new commit between the two downloads
        raise EvaluationError(
            f"The metric module changed while it was loaded: {held.metric.record} then {report.metric.record}.",
            fix="Run again (or drop --hub-metrics to use the module shipped with hfsoup).",
        )
    sizes = {}
    for evaluator in (report, held):
        if len(evaluator.splits) != 1:  # MNLI's validation is two dataset splits
            names = ", ".join(s.name for s in evaluator.splits)
            raise EvaluationError(
                f"Split {evaluator.split!r} of {task.name} stands for several dataset splits ({names}); soups are "
                "selected and reported on one split at a time.",
                fix=f"Name one of them with {option('report', ..., within='Selection')} (and "
                f"{option('held_out', ..., within='Selection')}): {names}.",
            )
        sizes[evaluator.split] = len(evaluator.splits[0].references)
    held_part, report_part = carve(
        sizes,
        held_out=selection.held_out,
        report=selection.report,
        fraction=selection.fraction,
        size=selection.size,
        seed=selection.seed,
        force=selection.force,
    )
    held.restrict(held_part.positions)
    report.restrict(report_part.positions)
    if held_part.split != report_part.split:
        inputs = list(task.input_fields)
        repeated = duplicate_inputs(
            list(zip(*(held.splits[0].rows[f] for f in inputs), strict=True)),
            list(zip(*(report.splits[0].rows[f] for f in inputs), strict=True)),
        )
        if repeated:
            logger.warning(
                "%d reported examples have the same inputs as held-out ones (%s and %s repeat some texts)",
                repeated,
                held_part.split,
                report_part.split,
            )
    logger.info("held-out: %s; report: %s", held_part.description, report_part.description)
    return held, report, [held_part, report_part]


def state_loader(
    reader: Any, names: Sequence[str], order: Sequence[int] | None = None, label_indexed: Sequence[str] = ()
) -> Callable[[], dict[str, torch.Tensor]]:
    """Read one ingredient's tensors (float ones as float32), its head rows put in the first ingredient's order."""

    rows, permuted = (list(order) if order is not None else None), set(label_indexed)

    def load() -> dict[str, torch.Tensor]:
        state = {}
        for name in names:
            tensor = reader.get(name)  # torch tensors: these states are scored with the model
            if rows is not None and name in permuted:
                tensor = tensor[rows]
            state[name] = tensor.float() if torch.is_floating_point(tensor) else tensor
        return state

    return load


def _add(total: dict | None, state: Mapping[str, torch.Tensor], weight: float) -> dict:
    if total is None:
        return {k: (t * weight if torch.is_floating_point(t) else t) for k, t in state.items()}
    for k, t in state.items():
        if torch.is_floating_point(t):
            total[k].add_(t, alpha=weight)
    return total


def _mixed(states: Sequence[Mapping[str, torch.Tensor]], mixing: Mixing) -> dict:
    out: dict | None = None
    for i, state in enumerate(states):
        part = {k: (t * mixing.weights_for(k)[i] if torch.is_floating_point(t) else t) for k, t in state.items()}
        out = part if out is None else {k: (out[k] + v if torch.is_floating_point(v) else v) for k, v in part.items()}
    assert out is not None
    return out


def _evaluation(task: Task, held: Evaluator, parts: list[Part], metrics: dict) -> dict:
    """The `evaluation` entry of `hfsoup.json`: the soup's own scores and where they come from."""
    dataset = held.dataset
    source = dataset.get("id") or ", ".join(f for files in dataset.get("data_files", {}).values() for f in files)
    config = dataset.get("config") if dataset.get("id") else None
    return {
        "task": task.name if task.dataset != "nyu-mll/glue" else f"glue/{task.name}",
        "dataset": source,
        "dataset_config": config,
        "dataset_sha": dataset.get("sha"),
        "metric": task.primary_metric,
        "metric_module": dict(held.metric.record),  # which implementation computed every score below
        "held_out": {"split": parts[0].split, "description": parts[0].description, "metrics": metrics["held_out"]},
        "report": {"split": parts[1].split, "description": parts[1].description, "metrics": metrics["report"]},
    }


__all__ = ["BASELINES", "ClassifierScorer", "Selection", "Tasting", "state_loader", "taste"]
