"""Model Stock (Jang et al., 2024, "Model Stock: All we need is just a few fine-tuned models").

Per tensor: with the task vectors `d_i = theta_i - base` and `cos` the average of their pairwise cosines,
`t = N cos / (1 + (N - 1) cos)` and the result is `t * mean_i theta_i + (1 - t) * base`. The cosines come from a
float64 pass over the blocks (the Gram matrix of the task vectors); the combination is the engine's weighted sum.
A zero task vector counts as cosine 0 with every other; `t` is 0 where the denominator vanishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, uniform_weights
from .merge import F64, TensorInputs, TensorMerge


def stock_ratio(gram: np.ndarray) -> float:
    """`t` from the Gram matrix of the N task vectors of one tensor."""
    n = gram.shape[0]
    norms = np.sqrt(np.diagonal(gram))
    cosines = [
        gram[i, j] / (norms[i] * norms[j]) if norms[i] > 0 and norms[j] > 0 else 0.0
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
        for blocks, base in inputs.blocks(F64):
            deltas = np.stack([b - base for b in blocks])
            gram += deltas @ deltas.T
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
