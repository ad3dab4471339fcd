"""Model Stock (Jang et al., 2024, "Model Stock: All we need is just a few fine-tuned models").

Per tensor: with the task vectors `d_i = theta_i - base` and `cos` the average of their pairwise cosines,
`t = N cos / (1 + (N - 1) cos)` and the result is `t * mean_i theta_i + (1 - t) * base`. The cosines come from a
pass over the blocks (the Gram matrix of the task vectors, float32 products summed in float64, float64 where float32
overflows; cosines clipped to [-1, 1]); the combination is the engine's weighted sum.
A zero task vector counts as cosine 0 with every other; `t` is 0 where the denominator vanishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, uniform_weights
from .merge import F64, TensorInputs, TensorMerge


def block_gram(blocks: list[np.ndarray], base: np.ndarray) -> np.ndarray:
    """The Gram matrix of one block's task vectors: one float32 BLAS product (pairwise sums: relative error near
    1e-6 on a 256 Ki block), again in float64 when float32 overflows; the caller sums blocks in float64."""
    deltas = np.stack([np.subtract(b, base, out=b if b.flags.writeable else None) for b in blocks])
    with np.errstate(over="ignore", invalid="ignore"):
        gram = deltas @ deltas.T
    if not np.isfinite(gram).all():
        wide = deltas.astype(F64)
        gram = wide @ wide.T
    return gram.astype(F64)


def stock_ratio(gram: np.ndarray) -> float:
    """`t` from the Gram matrix of the N task vectors of one tensor."""
    n = gram.shape[0]
    norms = np.sqrt(np.diagonal(gram))
    cosines = [
        min(max(gram[i, j] / (norms[i] * norms[j]), -1.0), 1.0) if norms[i] > 0 and norms[j] > 0 else 0.0
        for i in range(n)
        for j in range(i + 1, n)
    ]
    cos = float(np.mean(cosines))
    denominator = 1.0 + (n - 1) * cos
    return n * cos / denominator if denominator > 1e-12 else 0.0


class ModelStockMerge(TensorMerge):
    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        if not inputs.has_base:
            yield from inputs.mean()
            return
        gram = np.zeros((inputs.n, inputs.n))
        for blocks, base in inputs.blocks():
            gram += block_gram(blocks, base)
        t = stock_ratio(gram)
        weights = [t / inputs.n] * inputs.n + [1.0 - t]
        for blocks, base in inputs.blocks():
            yield inputs.accumulate([*blocks, base], weights)  # type: ignore[list-item]


class ModelStock(SoupMethod):
    """Model Stock: per tensor, the fine-tunes' mean pulled towards the base by the task vectors' agreement."""

    name: ClassVar[str] = "model-stock"
    description: ClassVar[str] = (
        "per tensor, the fine-tunes' mean and the base interpolated by a ratio set by the task vectors' average "
        "pairwise cosine, t = N cos / (1 + (N - 1) cos) (Jang et al., 2024)"
    )
    needs_base: ClassVar[bool] = True
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle("p", "tab:blue")

    @dataclass
    class Options:
        pass

    def run(self, context: SoupContext) -> Outcome:
        return Outcome(Mixing(uniform_weights(context.n)), {}, merge=ModelStockMerge())
