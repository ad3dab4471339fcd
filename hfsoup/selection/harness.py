"""Selection on lm-eval tasks (`--task lm-eval:TASKS`): each candidate soup scored in memory by EleutherAI's harness,
on a held-out part of every task's documents, and reported on another, disjoint part.

The loaded causal LM and its tokenizer are wrapped once in lm-eval's `HFLM`; the harness calls the model itself, so a
candidate's weights are copied into the loaded model's tensors before each evaluation (nothing is written to disk;
every candidate sets every tensor it mixes, so none keeps a previous one's). The parts are carved per task by the
same rule and options as every other task (`carve`: `--held-out`, `--held-out-fraction`, `--held-out-size`,
`--seed`, `--report`), on the documents lm-eval evaluates, and given to the harness as `samples`. Its metrics are not
differentiable: no learned soup, Fisher or RegMean here (refused before any download, `Selection.check`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import distributed
from ..errors import EvaluationError, option
from ..evaluation import harness
from ..evaluation.placement import input_device
from ..evaluation.splitspec import parse_split
from ..evaluation.tasks import Task
from ..soups.base import StateDict
from .heldout import Part, carve
from .options import Selection
from .scorers import checkpoint_names

logger = logging.getLogger(__name__)

#: The split name that, with lm-eval tasks, stands for the split each task evaluates (it is `--report`'s default).
ALIAS = "validation"


class HarnessScorer:
    """The lm-eval metrics of a model with given weights on chosen documents of each task.

    `scores(state)` returns the metrics themselves (`task/metric` and `LM_EVAL_SCORE`): the selection stage only
    passes them back to `metrics` and `primary_of`. No ensemble (the harness scores one model) and no loss.
    """

    differentiable = False
    ensembles = False
    on_rows: Callable[[int], None] | None = None

    def __init__(self, lm: Any, model: Any, tasks: Sequence[harness.HarnessTask], rows: Sequence[Sequence[int]]):
        self.lm, self.model, self.tasks, self.rows = lm, model, list(tasks), [list(r) for r in rows]
        self.num_examples = sum(len(r) for r in self.rows)
        self.device = input_device(model)
        self.primary = harness.LM_EVAL_SCORE
        self._tensors = model.state_dict()  # the parameters' own storage: copied into, never replaced
        self._renamed, self._converted = checkpoint_names(model)

    def _load(self, state: StateDict) -> None:
        converted = [name for name in state if name in self._converted]
        unknown = [name for name in state if self._renamed.get(name, name) not in self._tensors]
        if converted or unknown:
            raise EvaluationError(
                f"The ingredients' tensors {(converted or unknown)[:3]} are not parameters of "
                f"{type(self.model).__name__} as transformers loads it, so hfsoup cannot score a soup of them with "
                "lm-eval in memory.",
                fix=f"Soup them without a task ({option('method', 'uniform')}), then run lm-eval on the soup.",
            )
        with torch.no_grad():
            for name, tensor in state.items():
                target = self._tensors[self._renamed.get(name, name)]
                target.copy_(tensor.to(device=target.device, dtype=target.dtype))

    def scores(self, state: StateDict) -> dict[str, float]:
        self._load(state)
        self.model.eval()
        metrics = harness.evaluate(self.lm, self.tasks, self.rows)
        if self.on_rows is not None:
            self.on_rows(self.num_examples)
        return metrics

    def metrics(self, scores: dict[str, float]) -> dict[str, float]:
        return dict(scores)

    def primary_of(self, scores: dict[str, float]) -> float:
        return scores[self.primary]

    def __call__(self, state: StateDict) -> float:
        return self.primary_of(self.scores(state))


def harness_selection(
    selection: Selection, model: Any, tokenizer: Any
) -> tuple[Task, HarnessScorer, HarnessScorer, list[Part], dict, Callable[[dict], dict]]:
    """The task (for the table), the held-out and the reported scorers, the two parts (held-out first), the
    `metric_module` record, and how to write the chosen soup's `evaluation` entry from its metrics."""
    from lm_eval.models.huggingface import HFLM

    from ..evaluation.predictors.causal_lm import CausalLMPredictor

    architectures = [*(model.config.architectures or []), type(model).__name__]
    if not CausalLMPredictor().accepts(architectures):
        raise EvaluationError(
            f"lm-eval tasks score causal language models; the ingredients are {architectures[0]}.",
            fix=f"Select these on a task of their kind (see {option('task', ..., within='Selection')} in hfsoup soup "
            "--help), or soup causal LMs (*ForCausalLM).",
        )
    names = harness.parse_tasks(selection.task)
    tasks = harness.load_tasks(names, selection.lm_eval_include)
    held_rows, report_rows, held_parts, report_parts = [], [], [], []
    for task in tasks:
        held, report, held_part, report_part = _carve(task, selection)
        held_rows.append(held)
        report_rows.append(report)
        held_parts.append(held_part)
        report_parts.append(report_part)
    parts = [_joined(tasks, held_parts), _joined(tasks, report_parts)]
    kwargs: dict[str, Any] = {"batch_size": selection.batch_size}
    if selection.max_length is not None:
        kwargs["max_length"] = selection.max_length
    # trust_remote_code stays at HFLM's default (off); the model and tokenizer are already loaded by hfsoup.
    with harness.quiet():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, **kwargs)
    harness.share_across_processes(lm, distributed.current())
    held_scorer = HarnessScorer(lm, model, tasks, held_rows)
    report_scorer = HarnessScorer(lm, model, tasks, report_rows)
    datasets = ", ".join(dict.fromkeys(t.dataset for t in tasks))
    name = f"{harness.PREFIX}{','.join(names)}"
    task = Task(name, datasets, "default", (), (), "lm-eval", "default", harness.LM_EVAL_SCORE, label_field="")
    module = harness.record(tasks)
    logger.info("held-out: %s; report: %s", parts[0].description, parts[1].description)

    def evaluation(metrics: dict) -> dict:
        return {
            "task": task.name,
            "dataset": datasets,
            "dataset_config": None,
            "dataset_sha": None,
            "metric": harness.LM_EVAL_SCORE,
            "metric_module": module,
            "tasks": [
                {"name": t.name, "split": t.split, "metric": t.metric, "held_out_rows": len(h), "report_rows": len(r)}
                for t, h, r in zip(tasks, held_rows, report_rows, strict=True)
            ],
            "held_out": {"split": parts[0].split, "description": parts[0].description, "metrics": metrics["held_out"]},
            "report": {"split": parts[1].split, "description": parts[1].description, "metrics": metrics["reports"][0]},
        }

    return task, held_scorer, report_scorer, parts, module, evaluation


def _carve(task: harness.HarnessTask, selection: Selection) -> tuple[list[int], list[int], Part, Part]:
    """One task's held-out and reported documents, by `carve`'s rule: the rows of each spec, then the parts."""
    report = selection.report_sets[0].split
    report_rows = _spec_rows(report, task)
    split_rows, keys = {report: len(report_rows)}, {report: report_rows}
    held_rows = report_rows
    if selection.held_out is not None and selection.held_out != report:
        held_rows = _spec_rows(selection.held_out, task)
        split_rows[selection.held_out], keys[selection.held_out] = len(held_rows), held_rows
    held_part, report_part = carve(
        split_rows,
        held_out=selection.held_out,
        report=report,
        fraction=selection.fraction,
        size=selection.size,
        seed=selection.seed,
        force=selection.force,
        keys=keys,  # a document's identity is its row: two specs are checked for shared documents
    )

    def documents(rows: list[int], part: Part) -> list[int]:
        return sorted(set(rows if part.positions is None else [rows[p] for p in part.positions]))

    return documents(held_rows, held_part), documents(report_rows, report_part), held_part, report_part


def _spec_rows(spec: str, task: harness.HarnessTask) -> list[int]:
    """The documents (rows of the split lm-eval evaluates) a split spec reads."""
    parsed = parse_split(spec)
    wrong = [base for base in parsed.bases if base not in (task.split, ALIAS)]
    if wrong:
        raise EvaluationError(
            f"lm-eval task {task.name!r} evaluates its {task.split} split ({task.num_docs} documents); split "
            f"{spec!r} reads its {wrong[0]!r} split.",
            fix=f"Name {task.split!r} (or {ALIAS!r}, which stands for it with lm-eval tasks), or a slice of it, with "
            f"{option('report', f'{task.split}[50%:]', within='Selection')} and "
            f"{option('held_out', f'{task.split}[:50%]', flag='--held-out', within='Selection')}.",
        )
    ranges = parsed.ranges({base: task.num_docs for base in parsed.bases})
    return [row for _, start, stop in ranges for row in range(start, stop)]


def _joined(tasks: Sequence[harness.HarnessTask], parts: Sequence[Part]) -> Part:
    """One part over every task (its description names each task's split and share)."""
    # `validation` stood for the split the task evaluates: the description names that split.
    described = "; ".join(
        f"{t.name}: {p.description.replace(ALIAS, t.split) if t.split != ALIAS else p.description}"
        for t, p in zip(tasks, parts, strict=True)
    )
    split = ", ".join(dict.fromkeys(t.split for t in tasks))
    return Part(split, None, sum(p.num_rows for p in parts), described)
