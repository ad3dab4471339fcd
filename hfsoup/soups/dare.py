"""DARE (Yu et al., 2024, "Language models are Super Mario"): drop and rescale the task vectors, then merge.

Each task-vector entry `theta_i - base` is dropped with probability `1 - density` and the kept ones are divided by
`density`; then `dare-linear` adds them as task arithmetic does (`base + scale * sum_i w_i dropped_i`) and `dare-ties`
elects signs and averages the agreeing entries as TIES does (`base + scale * merged`).

The masks are drawn per tensor and ingredient from `merge.tensor_seed(seed, name, i)`, block by block, as raw 64-bit
PCG64 words split into two 32-bit words, an entry kept when its word is below ceil(density * 2**32) (`merge.DareMask`),
so that a fixed seed gives the same bytes whatever the shards, the processes or the device. The rescale by 1/density
is folded into the weights of the final sum.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from .. import schema
from ..options import option
from .base import (
    Mixing,
    Outcome,
    PlotStyle,
    SoupContext,
    SoupMethod,
    as_tuple,
    option_args,
    recorded_options,
    uniform_weights,
)
from .merge import F64, Election, TensorInputs, TensorMerge, dare_masks
from .task_arithmetic import scale_option, weights_option, weights_problems
from .ties import density_option

DENSITY_HELP = "share of each task vector's entries kept (the rest dropped at random), in (0, 1]"


def seed_option() -> Any:
    return option(0, kind=schema.integer(minimum=0), flag="--dare-seed", help="seed of the random drop")


class DareMerge(TensorMerge):
    """Drop and rescale, then sum with `weights` (`elect=False`) or elect signs as TIES (`elect=True`)."""

    def __init__(self, density: float, scale: float, seed: int, weights: tuple[float, ...], elect: bool) -> None:
        self.density, self.scale, self.seed, self.weights, self.elect = density, scale, seed, weights, elect

    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        if not inputs.has_base:
            yield from inputs.mean()
            return
        masks = dare_masks(self.seed, inputs.name, inputs.n, self.density)
        # The 1/density rescale is folded into the final weights: dropped_i = keep_i * delta_i / density, so
        # sum_i w_i dropped_i = sum_i (w_i / density) keep_i delta_i, and TIES's disjoint mean of the dropped
        # vectors is the mean of the kept deltas over density (a positive factor elects the same signs).
        weights = [self.scale * w / self.density for w in self.weights]
        # Float32 blocks straight from the memory maps (float64 inputs stay float64), the kept deltas in one buffer
        # reused block after block; dare-ties's election is float32 with the float64 sums where they decide
        # (`merge.Election`), so it elects the signs of the float64 definition.
        rows = np.empty((inputs.n, min(inputs.numel, inputs.block)), dtype=inputs.dtype)
        election = Election(rows.shape[1], inputs.dtype) if self.elect else None
        for blocks, base_block in inputs.blocks():
            assert base_block is not None
            kept, keeps = [], []
            for i, (block, mask) in enumerate(zip(blocks, masks, strict=True)):
                keep = mask.next(block.size)
                delta = np.subtract(block, base_block, out=rows[i, : block.size])
                kept.append(np.multiply(delta, keep, out=delta))
                keeps.append(keep)
            if election is not None:
                merged = election(kept, partial(_kept_total, blocks, base_block, keeps))
                yield inputs.accumulate([base_block, merged], [1.0, self.scale / self.density])
            else:
                yield inputs.accumulate([base_block, *kept], [1.0, *weights])


def _kept_total(
    blocks: Sequence[np.ndarray], base: np.ndarray, keeps: Sequence[np.ndarray], where: np.ndarray
) -> np.ndarray:
    """The float64 sum of the kept task-vector entries at positions `where` of a block (the sign election's check)."""
    wide = base[where].astype(F64)
    return sum(np.where(k[where], b[where].astype(F64) - wide, 0.0) for b, k in zip(blocks, keeps, strict=True))


class DareLinear(SoupMethod):
    """DARE, then task arithmetic: `base + scale * sum_i w_i dropped_i`.

    Args:
        density (`float`, *optional*, defaults to 0.2): the probability of keeping each entry, in (0, 1].
        weights (`Sequence[float]`, *optional*): one weight per ingredient (1 each by default).
        scale (`float`, *optional*, defaults to 1): multiplies the summed task vectors.
        seed (`int`, *optional*, defaults to 0): seeds the drop (`--dare-seed`).
    """

    name: ClassVar[str] = "dare-linear"
    description: ClassVar[str] = (
        "DARE: task-vector entries dropped at random and the rest rescaled by 1/density, then summed onto the base as "
        "in task arithmetic (Yu et al., 2024)"
    )
    needs_base: ClassVar[bool] = True
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle("<", "tab:pink")
    elect: ClassVar[bool] = False

    @dataclass
    class Options:
        density: float = density_option(0.2, DENSITY_HELP)
        weights: list[float] | None = weights_option()
        scale: float = scale_option()
        seed: int = seed_option()

    def problems(self, n_ingredients: int) -> list[tuple[str, str]]:
        return weights_problems(getattr(self.options, "weights", None), n_ingredients)

    def run(self, context: SoupContext) -> Outcome:
        options = self.options
        weights = as_tuple(getattr(options, "weights", None) or [1.0] * context.n)
        merge = DareMerge(options.density, options.scale, options.seed, weights, type(self).elect)
        return Outcome(Mixing(uniform_weights(context.n)), recorded_options(self), merge=merge)

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))


class DareTies(DareLinear):
    """DARE, then TIES's sign election and disjoint mean: `base + scale * merged`.

    Args:
        density (`float`, *optional*, defaults to 0.2): the probability of keeping each entry, in (0, 1].
        scale (`float`, *optional*, defaults to 1): multiplies the merged task vector.
        seed (`int`, *optional*, defaults to 0): seeds the drop (`--dare-seed`).
    """

    name: ClassVar[str] = "dare-ties"
    description: ClassVar[str] = (
        "DARE: task-vector entries dropped at random and the rest rescaled by 1/density, then signs elected and the "
        "agreeing entries averaged onto the base as in TIES (Yu et al., 2024)"
    )
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle(">", "tab:gray")
    elect: ClassVar[bool] = True

    @dataclass
    class Options:
        density: float = density_option(0.2, DENSITY_HELP)
        scale: float = scale_option()
        seed: int = seed_option()
