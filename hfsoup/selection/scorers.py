"""Scorers: a loaded classifier and one part of a task's data, turned into what the soup methods call.

`ClassifierScorer` runs the model with any weights through `torch.func.functional_call` (the model's own parameters
are never overwritten), so one loaded model scores every ingredient, trial soup and learned mixture. It is at once:

- a `Scorer`: the task's primary metric of a state dict;
- with accuracy as the primary metric, a `SummedScorer` (`AccuracyScorer`): correct predictions batch by batch, so
  a greedy search can stop scoring a hopeless candidate;
- a `HeldOutLoss` for the learned soup: cross-entropy (or squared error for regression), summed over a batch;
- the source of the results table's figures: every metric of the task, from the logits, and the output ensemble's
  (the ingredients' logits averaged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import EvaluationError, option
from ..evaluation.evaluator import Evaluator
from ..evaluation.placement import input_device
from ..evaluation.predictors.registry import PREDICTORS
from ..soups.base import StateDict

logger = logging.getLogger(__name__)


class ClassifierScorer:
    """Score a sequence classifier with given weights on the single split of `evaluator`.

    Args:
        evaluator (`Evaluator`):
            The task's data (one split, possibly `restrict`ed to a part) and metric.
        model (`PreTrainedModel`):
            A loaded sequence classifier of the ingredients' architecture; it provides the code, not the weights.
        tokenizer (`PreTrainedTokenizerBase`):
            The ingredients' tokenizer.
        model_name (`str`, *optional*):
            For messages.
    """

    max_per_example = 1.0

    def __init__(self, evaluator: Evaluator, model: Any, tokenizer: Any, *, model_name: str = "the soup") -> None:
        predictor = PREDICTORS["sequence-classification"]
        if not predictor.accepts([*(model.config.architectures or []), type(model).__name__]):
            raise EvaluationError(
                f"{model_name!r} ({type(model).__name__}) is not a sequence classifier; greedy and learned soups, "
                "and the results table, score models with a classification head from their logits.",
                fix=f"Soup *ForSequenceClassification fine-tunes, or use {option('method', 'uniform')} without --task "
                "(selection=None).",
            )
        self.evaluator, self.model, self.task = evaluator, model.eval(), evaluator.task
        self.mapping = predictor.prepare(model, self.task, model_name=model_name, tokenizer=tokenizer)
        (self.split,) = evaluator.splits
        self._batches = evaluator.batches(predictor, tokenizer)[self.split.name]
        self.num_examples = len(self.split.references)
        self.references = torch.tensor(self.split.references)
        self.device = input_device(model)
        self.primary = self.task.primary_metric
        if not self.task.is_regression:  # dataset label id -> the model's output id, for the loss
            self.targets = torch.empty_like(self.mapping)
            self.targets[self.mapping] = torch.arange(len(self.mapping))
        names = set(model.state_dict())
        self._names = names

    # ---- running the model ----

    def _logits(self, state: StateDict, batch: Any) -> torch.Tensor:
        unknown = [name for name in state if name not in self._names]
        if unknown:
            raise EvaluationError(
                f"The ingredients' tensors {unknown[:3]} are not parameters of {type(self.model).__name__}.",
                fix="Soup checkpoints saved by transformers' save_pretrained.",
            )
        inputs = {k: v.to(self.device) for k, v in batch.inputs.items()}
        return torch.func.functional_call(self.model, dict(state), args=(), kwargs=inputs).logits.float()

    def logits(self, state: StateDict) -> torch.Tensor:
        """The logits of every example, in the split's row order: `(num_examples, num_outputs)`."""
        out: torch.Tensor | None = None
        with torch.inference_mode():
            for batch in self._batches:
                logits = self._logits(state, batch).cpu()
                if out is None:
                    out = torch.empty(self.num_examples, logits.shape[-1])
                out[batch.positions] = logits
        assert out is not None
        return out

    def predictions(self, logits: torch.Tensor) -> list:
        if self.task.is_regression:
            return logits[:, 0].tolist()
        return self.mapping[logits.argmax(dim=-1)].tolist()

    # ---- metrics ----

    def metrics(self, logits: torch.Tensor) -> dict[str, float]:
        """Every metric of the task for these logits (ingredients', a soup's, or an ensemble's averaged ones)."""
        computed = self.evaluator.metric.compute(self.predictions(logits), self.split.references)
        return {name: float(value) for name, value in computed.items()}

    def primary_of(self, logits: torch.Tensor) -> float:
        """The primary metric, computed as `__call__` computes it (for accuracy: correct / examples)."""
        return self.metrics(logits)[self.primary]

    def __call__(self, state: StateDict) -> float:
        return self.primary_of(self.logits(state))

    # ---- the learned soup's objective ----

    def batches(self) -> list:
        return self._batches

    def loss(self, state: StateDict, batch: Any) -> torch.Tensor:
        logits = self._logits(state, batch)
        positions = torch.tensor(batch.positions)
        if self.task.is_regression:
            references = self.references[positions].to(logits.device, torch.float32)
            return torch.nn.functional.mse_loss(logits[:, 0], references, reduction="sum")
        targets = self.targets[self.references[positions]].to(logits.device)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")

    def mean_loss(self, logits: torch.Tensor) -> float:
        """The mean held-out loss of these logits, as `loss` computes it."""
        if self.task.is_regression:
            return torch.nn.functional.mse_loss(logits[:, 0], self.references.float()).item()
        return torch.nn.functional.cross_entropy(logits, self.targets[self.references]).item()


class AccuracyScorer(ClassifierScorer):
    """A `ClassifierScorer` whose primary metric is accuracy: a `SummedScorer`, counted batch by batch."""

    def partial_sums(self, state: StateDict) -> Iterator[tuple[float, int]]:
        with torch.inference_mode():
            for batch in self._batches:
                predicted = self.mapping[self._logits(state, batch).argmax(dim=-1).cpu()]
                correct = (predicted == self.references[torch.tensor(batch.positions)]).sum().item()
                yield float(correct), len(batch.positions)

    def primary_of(self, logits: torch.Tensor) -> float:
        correct = (self.mapping[logits.argmax(dim=-1)] == self.references).sum().item()
        return float(correct) / self.num_examples

    def __call__(self, state: StateDict) -> float:
        return sum(s for s, _ in self.partial_sums(state)) / self.num_examples


def make_scorer(evaluator: Evaluator, model: Any, tokenizer: Any, *, model_name: str = "the soup") -> ClassifierScorer:
    """An `AccuracyScorer` when the task ranks by accuracy, else a `ClassifierScorer`."""
    summed = evaluator.task.primary_metric == "accuracy" and not evaluator.task.is_regression
    cls = AccuracyScorer if summed else ClassifierScorer
    return cls(evaluator, model, tokenizer, model_name=model_name)
