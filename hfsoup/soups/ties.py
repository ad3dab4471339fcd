"""TIES-merging (Yadav et al., 2023, "Resolving interference when merging models"): trim, elect sign, disjoint merge.

Per tensor: each task vector `theta_i - base` keeps its `k = int(density * numel)` largest magnitudes (entries at
the k-th magnitude all kept) and is zero elsewhere; each entry's sign is elected as the sign of the sum of the trimmed
vectors; the entries that are non-zero and agree with it are averaged; the result is `base + scale * merged`.

The threshold is a whole-tensor figure: it is found by a streamed radix selection over the float64 task vectors'
blocks (`merge.magnitude_thresholds`, two passes for most tensors), so no whole tensor is held; the election and the
mean then stream block by block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import schema
from ..options import option
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, option_args, recorded_options, uniform_weights
from .merge import F64, Election, TensorInputs, TensorMerge, magnitude_thresholds
from .task_arithmetic import scale_option


def density_option(default: float, what: str) -> Any:
    return option(default, kind=schema.candidates(schema.fraction()), help=what)


class TiesMerge(TensorMerge):
    def __init__(self, density: float, scale: float) -> None:
        self.density, self.scale = density, scale

    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        if not inputs.has_base:
            yield from inputs.mean()
            return
        thresholds = magnitude_thresholds(inputs, self.density)
        election = Election(min(inputs.numel, inputs.block), F64)
        for blocks, base_block in inputs.blocks(F64):
            assert base_block is not None
            trimmed = []
            for block, threshold in zip(blocks, thresholds, strict=True):
                delta = np.subtract(block, base_block, out=block if block.flags.writeable else None)
                delta[np.abs(delta) < threshold] = 0.0
                trimmed.append(delta)
            yield inputs.accumulate([base_block, election(trimmed)], [1.0, self.scale])  # float64, as decided


class TiesSoup(SoupMethod):
    """TIES-merging: trimmed task vectors, elected signs, the agreeing entries averaged, added to the base.

    Args:
        density (`float`, *optional*, defaults to 0.2): the share of each tensor's task-vector entries kept (the
            largest magnitudes), in (0, 1].
        scale (`float`, *optional*, defaults to 1): multiplies the merged task vector.
    """

    name: ClassVar[str] = "ties"
    description: ClassVar[str] = (
        "TIES-merging: each task vector trimmed to its largest entries, signs elected, the agreeing entries averaged "
        "and added to the base (Yadav et al., 2023)"
    )
    needs_base: ClassVar[bool] = True
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle("d", "tab:olive")

    @dataclass
    class Options:
        density: float = density_option(0.2, "share of each tensor's task-vector entries kept (largest magnitudes)")
        scale: float = scale_option()

    def run(self, context: SoupContext) -> Outcome:
        merge = TiesMerge(self.options.density, self.options.scale)
        return Outcome(Mixing(uniform_weights(context.n)), recorded_options(self), merge=merge)

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))
