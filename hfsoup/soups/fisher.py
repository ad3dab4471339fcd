"""Fisher merging (Matena & Raffel, 2022, "Merging models with Fisher-weighted averaging").

Each ingredient's diagonal Fisher information `F_i` is estimated on `fisher_examples` examples of the task's held-out
part: the mean over examples of the squared gradient of the log-likelihood of the model's own prediction
(`log softmax(scores)[argmax]`; a one-output regression head is a unit-variance Gaussian, whose Fisher is the squared
gradient of the output). The soup is, entry by entry, `sum_i F_i theta_i / sum_i F_i`, each `F_i` floored at
`fisher_floor` so that an entry no example moves (a pooler the head never reads) is the plain mean.

One ingredient's diagonal is in memory at a time, beside the two running sums (`sum F_i theta_i`, `sum F_i`) in
float64; the soup is decided in `run` and the engine writes it through `StateMerge`. Gradients need torch: this module
imports it only inside `run`, so `import hfsoup.soups` stays torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import schema
from ..errors import InvalidSoupArgumentsError, option
from ..options import option as declare
from . import kernels
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, option_args, recorded_options, uniform_weights
from .merge import TensorInputs, TensorMerge

if TYPE_CHECKING:
    from .memory import MemoryContext, Part

logger = logging.getLogger(__name__)


class StateMerge(TensorMerge):
    """Writes a soup already decided in memory (tensor name -> float tensor), block by block: what the
    data-dependent merges (Fisher, RegMean) hand the engine."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.state = state

    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        if inputs.name not in self.state:  # not a tensor the method decided: the plain mean
            yield from inputs.mean()
            return
        flat = np.asarray(self.state[inputs.name].detach().cpu().numpy(), dtype=inputs.dtype).reshape(-1)
        for start in range(0, flat.size, kernels.BLOCK):
            yield flat[start : start + kernels.BLOCK]


def data_objective(context: SoupContext, method: str) -> Any:
    """The held-out scorer, with what the data-dependent merges call on it (`every_batch`, `batch_scores`)."""
    objective = context.objective
    if objective is None or not context.loaders or not hasattr(objective, "batch_scores"):
        raise InvalidSoupArgumentsError(
            f"A {method} soup computes statistics of each ingredient on the task's data, and no task was given.",
            fix=f"Name the task: {option('task', 'sst2')} (with its data: --dataset or --data-files).",
        )
    return objective


def examples_option(what: str) -> Any:
    """The number of held-out examples a data-dependent merge computes its statistics on (or candidates)."""
    return declare(256, kind=schema.candidates(schema.positive_int(what="at least one example")), help=what)


def add_to(sums: dict, key: str, value: Any) -> None:
    """`sums[key] += value`, starting at `value`: the running sums over the ingredients, one at a time."""
    sums[key] = value if key not in sums else sums[key] + value


def example_batches(objective: Any, examples: int) -> Iterator[tuple[Any, int]]:
    """The part's batches in order with how many of each batch's examples to use, until `examples` are."""
    left = examples
    for batch in objective.every_batch():
        if left <= 0:
            return
        take = min(left, len(batch.positions))
        left -= take
        yield batch, take


def fisher_diagonal(objective: Any, state: Mapping[str, Any], examples: int, device: Any) -> tuple[dict, int]:
    """One ingredient's diagonal Fisher (float64, on the CPU) over the first `examples` examples, and how many."""
    import torch

    leaves = {
        k: (v.to(device).detach().requires_grad_(True) if torch.is_floating_point(v) else v.to(device))
        for k, v in state.items()
    }
    floats = [k for k, v in leaves.items() if torch.is_floating_point(v)]
    totals = {k: torch.zeros(leaves[k].shape, dtype=torch.float64) for k in floats}
    count = 0
    for batch, take in example_batches(objective, examples):
        scores = objective.batch_scores(leaves, batch)
        if scores.shape[-1] == 1:  # a regression head: a unit-variance Gaussian's Fisher
            chosen = scores[:, 0]
        else:
            log_p = torch.log_softmax(scores, dim=-1)
            chosen = log_p.gather(1, log_p.argmax(dim=-1, keepdim=True).detach())[:, 0]
        for b in range(take):
            grads = torch.autograd.grad(chosen[b], [leaves[k] for k in floats], retain_graph=True, allow_unused=True)
            for k, g in zip(floats, grads, strict=True):
                if g is not None:
                    totals[k] += g.detach().double().cpu() ** 2
        count += take
    return {k: t / max(count, 1) for k, t in totals.items()}, count


class FisherSoup(SoupMethod):
    """Fisher merging: the ingredients averaged entry by entry, each weighted by its diagonal Fisher information.

    Args:
        fisher_examples (`int`, *optional*, defaults to 256): the held-out examples each Fisher is estimated on
            (all of them when the part is smaller).
        fisher_floor (`float`, *optional*, defaults to 1e-6): the least Fisher value of an entry, against division
            by zero.
        fisher_cache (`bool`, *optional*, defaults to `True`): reuse each ingredient's estimate cached under
            `$HFSOUP_CACHE/fisher` (`soups.fisher_cache`: keyed by its commit SHA or weight files' sha256, the
            examples, `fisher_examples` and the definition), and cache those computed.
    """

    name: ClassVar[str] = "fisher"
    description: ClassVar[str] = (
        "Fisher merging: entry by entry, sum_i F_i theta_i / sum_i F_i with each ingredient's diagonal Fisher "
        "estimated on held-out examples (Matena & Raffel, 2022)"
    )
    needs_scores: ClassVar[bool] = True
    needs_objective: ClassVar[bool] = True
    default_baseline: ClassVar[bool] = False  # compared when named: it runs backward passes per example
    plot_style: ClassVar[PlotStyle] = PlotStyle("h", "tab:brown")

    @dataclass
    class Options:
        fisher_examples: int = examples_option("held-out examples each ingredient's diagonal Fisher is estimated on")
        fisher_floor: float = declare(
            1e-6,
            kind=schema.candidates(schema.number(positive=True, what="a positive floor")),
            help="least Fisher value of an entry, against division by zero",
        )
        # A run-time switch, like --hub-metrics: the soup is the same with or without the cache.
        fisher_cache: bool = declare(
            True,
            kind=schema.boolean(),
            recipe=False,
            help="recompute every ingredient's Fisher estimate instead of reusing those cached in $HFSOUP_CACHE",
        )

    def memory_parts(self, context: MemoryContext) -> list[Part]:
        from .memory import Part

        float64 = 8 * context.float_elements
        return [
            Part("float64 running sums (sum F_i theta_i, sum F_i)", float64, 2),
            Part("float64 Fisher diagonal of one ingredient and its accumulator", float64, 2),
            Part("float32 gradient of one example", 4 * context.float_elements),
            context.backward(),
        ]

    def run(self, context: SoupContext) -> Outcome:
        import torch

        objective = data_objective(context, self.name)
        floor = self.options.fisher_floor
        weighted: dict[str, torch.Tensor] = {}
        total: dict[str, torch.Tensor] = {}
        first: dict[str, torch.Tensor] = {}
        count = 0
        examples = self.options.fisher_examples
        identities = context.identities if self.options.fisher_cache else None
        data = None
        for i, load in enumerate(context.loaders):
            state = load()
            identity, name = None if identities is None else identities[i], context.names[i]
            found = None
            if identity is not None:
                from . import fisher_cache

                data = data or fisher_cache.data_fingerprint(objective, list(example_batches(objective, examples)))
                key = fisher_cache.cache_key(identity, data, examples, context.device)
                floats = {k: tuple(v.shape) for k, v in state.items() if torch.is_floating_point(v)}
                found = fisher_cache.load(key, floats, name=name)
                if found is not None:
                    logger.info("fisher: reusing Fisher estimate of %s from the cache", name)
            if found is not None:
                fisher, count = found
            else:
                fisher, count = fisher_diagonal(objective, state, examples, context.device)
                if identity is not None:
                    fisher_cache.store(key, fisher, count, name=name)
                logger.info("fisher: %s's diagonal Fisher from %d examples", name, count)
            for k, f in fisher.items():
                f = f.clamp_min(floor)
                add_to(weighted, k, f * state[k].double())
                add_to(total, k, f)
            if i == 0:
                first = {k: v for k, v in state.items() if k not in fisher}
            del state, fisher
        merged = {k: (weighted[k] / total[k]).float() for k in weighted}
        record = {**recorded_options(self), "examples_used": count}
        return Outcome(Mixing(uniform_weights(context.n)), record, state={**first, **merged}, merge=StateMerge(merged))

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))
