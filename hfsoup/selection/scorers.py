"""Scorers: a loaded model of any kind `hfsoup eval` knows and one part of a task's data, turned into what the soup
methods call.

`ModelScorer` runs the model with any weights through `torch.func.functional_call` (the model's own parameters are
never overwritten), so one loaded model scores every ingredient, trial soup and learned mixture. What depends on the
kind of model comes from its predictor (`hfsoup.evaluation.predictors`): a classifier's logits in the dataset's label
order, T5's log-likelihood of each label word, CLIP's similarity to each class prompt (re-embedded by the soup's own
text tower). From those per-answer scores a scorer is at once:

- a `Scorer`: the task's primary metric of a state dict;
- with accuracy as the primary metric, a `SummedScorer` (`AccuracyScorer`): correct predictions batch by batch, so
  a greedy search can stop scoring a hopeless candidate;
- a `HeldOutLoss` for the learned soup: the cross-entropy of the scores over the label set (squared error for a
  regression head), summed over a batch;
- the source of the results table's figures: every metric of the task, and the output ensemble's (the ingredients'
  log-probabilities over the label set, averaged).

Under `torchrun` or `accelerate launch` each process scores its share of the batches (round robin, as `hfsoup eval`
splits them) and the scores are gathered, so every process sees every score and takes the same decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .. import distributed
from ..errors import EvaluationError, option
from ..evaluation.evaluator import Evaluator
from ..evaluation.placement import input_device
from ..evaluation.predictors.registry import predictor_for
from ..soups.base import StateDict

logger = logging.getLogger(__name__)

#: The learned soup's gradient is a sum over at most this many groups of consecutive held-out batches, one backward
#: pass through the mixing each: as many whatever the number of processes, so that their sums are the same.
LEARNED_GROUPS = 64


class _Run(torch.nn.Module):
    """The predictor's steps as one module call, so that `functional_call` swaps a soup's weights in for all of
    them (CLIP zero-shot runs its text tower in `condition` and its vision tower in `scores`)."""

    def __init__(self, model: Any, predictor: Any, prepared: Any) -> None:
        super().__init__()
        self.model, self.predictor, self.prepared = model, predictor, prepared

    def forward(self, batch: dict | None = None, conditioned: Any = None) -> Any:
        if conditioned is None:
            conditioned = self.predictor.condition(self.model, self.prepared)
        if batch is None:
            return conditioned
        return self.predictor.scores(self.model, batch, conditioned)


class ModelScorer:
    """Score a model with given weights on the single split of `evaluator`.

    Args:
        evaluator (`Evaluator`):
            The task's data (one split, possibly `restrict`ed to a part) and metric.
        model (`PreTrainedModel`):
            A loaded model of the ingredients' architecture; it provides the code, not the weights.
        tokenizer (`PreTrainedTokenizerBase` or processor):
            The ingredients' tokenizer (an image processor or processor for image models).
        kind (`str`, *optional*):
            A key of `PREDICTORS`; by default chosen from the architecture, as `hfsoup eval` does.
        model_name (`str`, *optional*):
            For messages.
    """

    max_per_example = 1.0
    #: Its scores have a differentiable loss (`loss`, `mean_loss`): the learned soup's and the records' held-out loss.
    differentiable = True
    #: Called with the number of rows after every batch scored (the selection stage's progress bar), or `None`.
    on_rows: Callable[[int], None] | None = None

    def __init__(
        self,
        evaluator: Evaluator,
        model: Any,
        tokenizer: Any,
        *,
        kind: str | None = None,
        model_name: str = "the soup",
    ) -> None:
        architectures = [*(model.config.architectures or []), type(model).__name__]
        self.predictor = predictor_for(architectures, kind=kind, model_name=model_name)
        self.evaluator, self.model, self.task = evaluator, model.eval(), evaluator.task
        self.prepared = self.predictor.prepare(model, self.task, model_name=model_name, tokenizer=tokenizer)
        self.answers = self.predictor.answers(self.prepared)
        (self.split,) = evaluator.splits
        self._batches = evaluator.batches(self.predictor, tokenizer)[self.split.name]
        self.processes = distributed.current()
        self._mine = self._batches[self.processes.rank :: self.processes.world_size]
        logger.info(  # the held-out and the reported part each say how they are split
            "process %d/%d: %d of the %d batches of %s (%d rows)",
            self.processes.rank,
            self.processes.world_size,
            len(self._mine),
            len(self._batches),
            self.split.name,
            len(self.split.references),
            extra=distributed.EVERY_PROCESS,
        )
        self.num_examples = len(self.split.references)
        self.references = torch.tensor(self.split.references)
        self.device = input_device(model)
        self.primary = self.task.primary_metric
        self.targets = self._targets()
        self._run = _Run(model, self.predictor, self.prepared)
        self._names = set(model.state_dict())
        self._renamed, self._converted = checkpoint_names(model)

    def _targets(self) -> torch.Tensor | None:
        """Each example's answer column, for the cross-entropy; `None` for a regression head."""
        if self.answers is None:
            return None
        if self.task.is_regression:  # numbers as answers (T5's stsb): the answer nearest the reference
            values = torch.tensor(self.answers, dtype=torch.float64)
            return (self.references.double()[:, None] - values[None, :]).abs().argmin(dim=1)
        column = {answer: i for i, answer in enumerate(self.answers)}
        return torch.tensor([column[int(r)] for r in self.split.references])

    # ---- running the model ----

    def _call(self, state: StateDict, batch: Any = None, conditioned: Any = None) -> Any:
        converted = [name for name in state if name in self._converted]
        if converted:
            raise EvaluationError(
                f"transformers does not load tensors such as {converted[0]!r} of {type(self.model).__name__} as "
                "they are stored (it fuses or splits them at load), so hfsoup cannot swap a soup's weights into the "
                "loaded model to score it.",
                fix=f"Soup them without a task ({option('method', 'uniform')}), then score the soup with hfsoup eval.",
            )
        state = {self._renamed.get(name, name): tensor for name, tensor in state.items()}
        unknown = [name for name in state if name not in self._names]
        if unknown:
            raise EvaluationError(
                f"The ingredients' tensors {unknown[:3]} are not parameters of {type(self.model).__name__}.",
                fix="Soup checkpoints saved by transformers' save_pretrained.",
            )
        inputs = None if batch is None else {k: v.to(self.device) for k, v in batch.inputs.items()}
        params = {f"model.{name}": tensor for name, tensor in state.items()}
        return torch.func.functional_call(
            self._run, params, args=(), kwargs={"batch": inputs, "conditioned": conditioned}
        )

    def scores(self, state: StateDict) -> torch.Tensor:
        """The scores of every example, in the split's row order: `(num_examples, num_answers)`."""
        with torch.inference_mode():
            conditioned = self._call(state)  # once for these weights
            parts = []
            for batch in self._mine:
                parts.append((batch.positions, self._call(state, batch, conditioned).float().cpu()))
                self._scored(len(batch.positions))
        if self.processes.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.processes.world_size
            dist.all_gather_object(gathered, parts)
            parts = [part for rank in gathered for part in rank]
        out: torch.Tensor | None = None
        for positions, scores in parts:
            if out is None:
                out = torch.empty(self.num_examples, scores.shape[-1])
            out[list(positions)] = scores
        if out is None:
            raise EvaluationError(f"No examples to score in {self.split.name}.", fix="Hold out a part with rows.")
        return out

    def _scored(self, rows: int) -> None:
        if self.on_rows is not None:
            self.on_rows(rows)

    @property
    def ensembles(self) -> bool:
        """Whether its scores are per answer, so that the ingredients' can be averaged (the output ensemble)."""
        return self.predictor.ensembles

    def predictions(self, scores: torch.Tensor) -> list:
        return self.predictor.readout(scores, self.prepared)

    def ensemble(self, scores: Sequence[torch.Tensor]) -> torch.Tensor:
        """The output ensemble's scores: the ingredients' log-probabilities over the label set, averaged (a
        regression head's outputs, averaged)."""
        stacked = torch.stack(list(scores))
        if self.answers is None:
            return stacked.mean(dim=0)
        return stacked.log_softmax(dim=-1).mean(dim=0)

    # ---- metrics ----

    def metrics(self, scores: torch.Tensor) -> dict[str, float]:
        """Every metric of the task for these scores (an ingredient's, a soup's, or the ensemble's)."""
        computed = self.evaluator.metric.compute(self.predictions(scores), self.split.references)
        return {name: float(value) for name, value in computed.items()}

    def primary_of(self, scores: torch.Tensor) -> float:
        """The primary metric, computed as `__call__` computes it (for accuracy: correct / examples)."""
        return self.metrics(scores)[self.primary]

    def __call__(self, state: StateDict) -> float:
        return self.primary_of(self.scores(state))

    # ---- the learned soup's objective ----

    def batch_groups(self) -> list[list]:
        """This process's groups of batches for the learned soup (all of them in one process).

        The batches are cut into at most `LEARNED_GROUPS` runs of consecutive batches, however many processes there
        are, and the runs are dealt round robin: each run's gradient is then the same sum in any number of processes.
        """
        world, rank = self.processes.world_size, self.processes.rank
        return [[self._batches[i] for i in group] for group in _groups(len(self._batches))[rank::world]]

    def batches(self) -> list:
        """This process's batches for the learned soup, its groups' one after the other."""
        return [batch for group in self.batch_groups() for batch in group]

    def every_batch(self) -> list:
        """Every batch of the part, in order, whatever the number of processes (the data-dependent merges' data:
        every process then computes the same statistics)."""
        return list(self._batches)

    def batch_scores(self, state: StateDict, batch: Any) -> torch.Tensor:
        """One batch's scores `(examples, answers)` for the model with weights `state`, differentiable in them (the
        Fisher merge's log-likelihoods; its forward hooks see the layers' inputs for RegMean). Its rows move the
        progress bar, as scoring does: these passes are the merge's time."""
        scores = self._call(state, batch).float()
        self._scored(len(batch.positions))
        return scores

    def parameter_name(self, name: str) -> str:
        """The loaded model's name for a checkpoint tensor (transformers renames some at load)."""
        return self._renamed.get(name, name)

    def loss(self, state: StateDict, batch: Any) -> torch.Tensor:
        scores = self._call(state, batch).float()  # the learned soup's steps have a bar of their own
        if self.predictor.sums_own_loss:
            return self.predictor.loss(scores)
        positions = torch.tensor(batch.positions)
        if self.targets is None:
            references = self.references[positions].to(scores.device, torch.float32)
            return torch.nn.functional.mse_loss(scores[:, 0], references, reduction="sum")
        return torch.nn.functional.cross_entropy(scores, self.targets[positions].to(scores.device), reduction="sum")

    def sum_in_order(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """One value per group of `batch_groups` (this process's), summed with every other process's in the groups'
        order: the learned soup's loss and gradient, the same floating-point sum in any number of processes."""
        values = [value.detach().cpu() for value in values]
        world = self.processes.world_size
        if world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, values)
            # Group k went to process k % world, as its (k // world)-th.
            values = [gathered[k % world][k // world] for k in range(len(_groups(len(self._batches))))]
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def mean_loss(self, scores: torch.Tensor) -> float:
        """The mean held-out loss of these scores, as `loss` computes it."""
        if self.predictor.sums_own_loss:
            return self.predictor.mean_loss(scores)
        if self.targets is None:
            return torch.nn.functional.mse_loss(scores[:, 0], self.references.float()).item()
        return torch.nn.functional.cross_entropy(scores, self.targets).item()


def checkpoint_names(model: Any) -> tuple[dict[str, str], set[str]]:
    """How the model's checkpoint names its tensors, where transformers renames them at load (transformers 5 loads
    ViT's `vit.encoder.layer.0.attention.attention.key.weight` as `vit.layers.0.attention.k_proj.weight`): the
    checkpoint name -> parameter name of every renamed tensor, and the checkpoint names of tensors it converts
    (fuses, splits), which no renaming reaches. Found by transformers' own reversal of its load-time conversion (what
    `save_pretrained` writes), matched to the parameters by storage: a renamed tensor is the parameter itself."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4 loads every checkpoint as it is stored
        return {}, set()
    runtime = model.state_dict()
    reverted = revert_weight_conversion(model, dict(runtime))
    if reverted is runtime or set(reverted) == set(runtime):
        return {}, set()

    def where(tensor: torch.Tensor) -> tuple:
        return tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype

    names = {where(tensor): name for name, tensor in runtime.items()}
    renamed, converted = {}, set()
    for name, tensor in reverted.items():
        found = names.get(where(tensor)) if isinstance(tensor, torch.Tensor) else None
        if found is None:
            converted.add(name)
        elif found != name:
            renamed[name] = found
    return renamed, converted


def _groups(n_batches: int) -> list[range]:
    """`n_batches` cut into at most `LEARNED_GROUPS` runs of consecutive batches, as even as can be."""
    k = min(n_batches, LEARNED_GROUPS)
    return [range(i * n_batches // k, (i + 1) * n_batches // k) for i in range(k)]


class AccuracyScorer(ModelScorer):
    """A `ModelScorer` whose primary metric is accuracy: a `SummedScorer`, counted batch by batch."""

    def partial_sums(self, state: StateDict) -> Iterator[tuple[float, int]]:
        """Per batch, in the batches' order: correct predictions and examples. Processes score a round of batches
        at once (one each) and share the counts, so every process yields the same sums in the same order."""
        answers = torch.tensor(self.answers)
        world, rank = self.processes.world_size, self.processes.rank
        with torch.inference_mode():
            conditioned = self._call(state)
        for start in range(0, len(self._batches), world):
            # Inference mode per round, not across the yields: the caller's code between them runs as it would.
            counts: tuple[float, int] | None = None
            if start + rank < len(self._batches):
                batch = self._batches[start + rank]
                with torch.inference_mode():
                    predicted = answers[self._call(state, batch, conditioned).argmax(dim=-1).cpu()]
                correct = (predicted == self.references[torch.tensor(batch.positions)]).sum().item()
                counts = (float(correct), len(batch.positions))
                self._scored(len(batch.positions))
            rounds = [counts]
            if world > 1:  # objects, not a tensor all-reduce: NCCL reduces only tensors on the GPU
                import torch.distributed as dist

                rounds = [None] * world
                dist.all_gather_object(rounds, counts)
            yield from (c for c in rounds if c is not None)  # the last round may not reach every process

    def primary_of(self, scores: torch.Tensor) -> float:
        predicted = torch.tensor(self.answers)[scores.argmax(dim=-1)]
        return float((predicted == self.references).sum().item()) / self.num_examples

    def __call__(self, state: StateDict) -> float:
        return sum(s for s, _ in self.partial_sums(state)) / self.num_examples


def make_scorer(
    evaluator: Evaluator, model: Any, tokenizer: Any, *, kind: str | None = None, model_name: str = "the soup"
) -> ModelScorer:
    """An `AccuracyScorer` when the task ranks by accuracy, else a `ModelScorer`."""
    summed = evaluator.task.primary_metric == "accuracy" and not evaluator.task.is_regression
    cls = AccuracyScorer if summed else ModelScorer
    return cls(evaluator, model, tokenizer, kind=kind, model_name=model_name)
