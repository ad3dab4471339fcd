"""Model Stock (Jang et al., 2024, "Model Stock: All we need is just a few fine-tuned models").

Per tensor: with the task vectors `d_i = theta_i - base` and `cos` the average of their pairwise cosines,
`t = N cos / (1 + (N - 1) cos)` and the result is `t * mean_i theta_i + (1 - t) * base`. The cosines come from a
pass over the blocks (the Gram matrix of the task vectors: per block, float32 BLAS dot products, summed over blocks in
float64, float64 where float32 overflows; cosines clipped to [-1, 1]); the combination is the engine's weighted sum.
A zero task vector counts as cosine 0 with every other; `t` is 0 where the denominator vanishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, uniform_weights
from .merge import F64, TensorInputs, TensorMerge


def block_gram(deltas: list[np.ndarray]) -> np.ndarray:
    """The Gram matrix of one block's task vectors: one float32 BLAS dot product per pair (partial sums: relative
    error near 1e-7 on a 256 Ki block), again in float64 when float32 overflows; the caller sums blocks in float64."""
    n = len(deltas)
    gram = np.empty((n, n))
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(n):
            for j in range(i, n):
                gram[i, j] = gram[j, i] = np.dot(deltas[i], deltas[j])
    if not np.isfinite(gram).all():
        wide = np.stack(deltas).astype(F64)
        gram = wide @ wide.T
    return gram


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


#: Tensors of at most this many elements are read once (their task vectors' mean is held: 16 MB in float32).
HOLD_ELEMENTS = 1 << 22


class ModelStockMerge(TensorMerge):
    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        if not inputs.has_base:
            yield from inputs.mean()
            return
        n, gram = inputs.n, np.zeros((inputs.n, inputs.n))
        rows = np.empty((n, min(inputs.numel, inputs.block)), dtype=inputs.dtype)  # reused: no allocations
        # A tensor of at most HOLD_ELEMENTS keeps its task vectors' mean from this pass, so that the output pass
        # reads the base alone (`base + t * mean_i d_i`), not every ingredient again; larger ones are read twice.
        held = np.empty(inputs.numel, dtype=inputs.dtype) if inputs.numel <= HOLD_ELEMENTS else None
        start = 0
        for blocks, base in inputs.blocks():
            assert base is not None
            deltas = [np.subtract(b, base, out=rows[i, : b.size]) for i, b in enumerate(blocks)]
            gram += block_gram(deltas)
            if held is not None:  # the sum of the task vectors, in the order given (1/n goes into the weight)
                np.add.reduce(rows[:, : base.size], axis=0, out=held[start : start + base.size])
            start += base.size
        t = stock_ratio(gram)
        if held is not None:
            for start, base in inputs.base_blocks():
                yield inputs.accumulate([base, held[start : start + base.size]], [1.0, t / n])
            return
        weights = [t / n] * n + [1.0 - t]
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
