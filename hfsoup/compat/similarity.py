"""Shared initialization, measured from the weights while they stream past.

For every pair of ingredients (and against `--base`) the cosine similarity and relative L2 distance of the weight
*matrices*: norms and biases are left out because any initialization sets them to the same constants (ones and
zeros), which would make unrelated models look alike. The task head is measured apart from the body, since Hub
fine-tunes often start from a shared body but a freshly initialized head.

Calibration (`benchmarks/calibrate_shared_init.py`, figures in its docstring): fine-tunes of one base score above
0.95 (tiny families) and 0.99 (real MiniLM fine-tunes); independently initialized models of the same shape score
within 0.05 of 0. The threshold sits in the middle of that gap.

A large tensor is measured on a fixed sample of about `SAMPLE_ELEMENTS` positions, the same in every ingredient
and however the tensor is cut into blocks: in every run of `SAMPLE_ELEMENTS` elements of the flattened tensor, its
first 1/s (`s = numel // SAMPLE_ELEMENTS`). The Gram matrix costs `n^2` products per element measured against the
soup's `n` additions per element read, so a full Gram of every weight matrix would cost more than the soup itself for
a handful of ingredients; on the sample it stays a fraction. Contiguous runs rather than every s-th element, because
BLAS dot products on contiguous memory run at the memory's speed and a gather of every s-th element does not.
Siblings agree element by element, so a sample of a quarter million positions tells them from strangers as the whole
tensor does (the non-finite check still reads every element).

A head far below it is told apart by its sign: near 0 it is unrelated (initialized independently), strongly negative it
points against its siblings' (trained on swapped labels, or a sign flip). When most siblings agree, each verdict names
the one ingredient unlike them, which a method that drops ingredients (greedy) may leave out (`leave_out_outliers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import option
from .report import CompatReport, Similarity
from .static import HEAD_PREFIXES

#: Below this body cosine two ingredients are not fine-tunes of one initialization.
MIN_BODY_COSINE = 0.5
#: Below this head cosine (with the bodies related) the heads were initialized independently.
MIN_HEAD_COSINE = 0.5
#: At or below this head cosine a head points against the others' (swapped labels, a sign flip), not just unrelated.
ANTI_ALIGNED_HEAD_COSINE = -0.5
#: About this many positions of a tensor (at most about this many of one block) enter the Gram matrix, the same in
#: every ingredient (see the module docstring); tensors of the tiny test families are far smaller: measured whole.
SAMPLE_ELEMENTS = 1 << 18
#: The checks whose refusal blames one ingredient, which a method that drops ingredients may leave out instead.
OUTLIER_CHECKS = ("shared-init", "head")


class _Gram:
    """The running Gram matrix (all pairwise dot products) of the ingredients' flattened weight matrices."""

    def __init__(self, n: int) -> None:
        self.gram = np.zeros((n, n), dtype=np.float64)
        self.tensors = 0

    def add(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """Add one flat block of every ingredient; return the block's own Gram diagonal (sums of squares)."""
        # One BLAS dot product per pair, on the blocks where they lie: no stacked copy, and for a handful of
        # ingredients faster than a matrix product of the stack (which packs it first). BLAS sums in several
        # partial sums, so the relative error stays near 1e-7 on a 256 Ki block, far below the 1e-3 that separates
        # siblings; blocks add up in float64.
        n = len(blocks)
        block_gram = np.empty((n, n))
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite weights are caught from the diagonal
            for i in range(n):
                for j in range(i, n):
                    block_gram[i, j] = block_gram[j, i] = np.dot(blocks[i], blocks[j])
        self.gram += block_gram
        return np.diagonal(block_gram)

    def merge(self, gram: list[list[float]], tensors: int) -> None:
        self.gram += np.asarray(gram, dtype=np.float64)
        self.tensors += tensors

    def cosine(self) -> list[list[float]]:
        norms = np.sqrt(np.maximum(np.diagonal(self.gram), 1e-300))
        return np.clip(self.gram / norms[:, None] / norms[None, :], -1, 1).tolist()

    def rel_l2(self) -> list[list[float]]:
        diag = np.diagonal(self.gram)
        dist = np.sqrt(np.maximum(diag[:, None] + diag[None, :] - 2 * self.gram, 0))
        scale = (np.sqrt(diag)[:, None] + np.sqrt(diag)[None, :]) / 2
        return (dist / np.maximum(scale, 1e-300)).tolist()


class SimilarityMeter:
    """Accumulate pairwise similarities block by block; also catch NaN/Inf and unequal integer buffers.

    Tensors arrive as numpy arrays (the soup engine's blocks, already widened to float32 or float64); a tensor may
    come in several blocks, between `start` and `finish`. `update` takes a whole tensor at once.

    Args:
        names (`list[str]`): the ingredients, in order.
        base (`str`, *optional*): the name of an extra last array in every call, the declared base model.
    """

    def __init__(self, names: list[str], *, base: str | None = None) -> None:
        self.names = names
        self.base = base
        n = len(names) + (1 if base else 0)
        self.body = _Gram(n)
        self.head = _Gram(len(names))
        self.non_finite: dict[str, list[str]] = {}
        self.unequal_buffers: list[str] = []
        self._gram: _Gram | None = None
        self._name = ""
        self._stride, self._seen = 1, 0  # the current tensor's sample: every _stride-th of its flattened elements
        self._with_base = False
        self._bad: set[int] = set()

    def update(self, name: str, tensors: Sequence, base=None) -> None:  # noqa: ANN001 - arrays or torch tensors
        """Measure one whole tensor of every ingredient (numpy arrays, or torch tensors, converted)."""
        arrays = [_as_array(t) for t in tensors]
        base_array = None if base is None else _as_array(base)
        if not np.issubdtype(arrays[0].dtype, np.floating):
            self.compare_buffers(name, arrays)
            return
        wide = [a.astype(np.float32) if a.dtype == np.float16 else a for a in arrays]
        base_fits = None if base_array is None else base_array.shape == arrays[0].shape
        self.start(name, arrays[0].ndim, base_fits, numel=arrays[0].size)
        self.block(wide, None if base_array is None else base_array.astype(wide[0].dtype, copy=False))
        self.finish()

    def compare_buffers(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        """Integer buffers (position ids) are not averaged: they must be equal in every ingredient."""
        if any(not np.array_equal(arrays[0], a) for a in arrays[1:]):
            self.unequal_buffers.append(name)

    def start(self, name: str, ndim: int, base_fits: bool | None, *, numel: int | None = None) -> None:
        """Begin a float tensor of `ndim` dimensions; `base_fits`: the base has it, same shape (None: no base).
        `numel`, when known, sets the tensor's sample (about `SAMPLE_ELEMENTS` positions); without it each block
        larger than `SAMPLE_ELEMENTS` is sampled as if it were the whole tensor."""
        self._name, self._bad = name, set()
        self._gram, self._with_base = None, False
        self._stride, self._seen = 1 if numel is None else max(1, numel // SAMPLE_ELEMENTS), 0
        if ndim < 2:  # norms and biases: set to ones and zeros by any initialization, so they tell nothing
            return
        if name.startswith(HEAD_PREFIXES):
            self._gram = self.head
        elif self.base is None:
            self._gram = self.body
        elif base_fits:
            self._gram, self._with_base = self.body, True

    def block(self, blocks: Sequence[np.ndarray], base: np.ndarray | None = None, *, finite: bool = False) -> None:
        """The next block of the current tensor, one per ingredient (and the base's, when it is measured).

        `finite`: the caller has shown every element of `blocks` finite (the soup engine, from the sum of its
        weighted sum: a NaN or an Inf in any summed block makes it non-finite), so the meter skips its own pass over
        every element."""
        flats = [np.ascontiguousarray(b).reshape(-1) for b in blocks]
        start, size = self._seen, flats[0].size
        self._seen += size
        windows = self.sample_windows(start, size)
        if self._gram is not None:
            measured = [*flats, np.ascontiguousarray(base).reshape(-1)] if self._with_base else flats
            squares = sum(self._gram.add([m[lo:hi] for m in measured])[: len(flats)] for lo, hi in windows)
        if finite:
            return
        if self._gram is None or windows != [(0, size)]:
            # A sum of squares is non-finite when any element is: one fast BLAS reduction over every element,
            # instead of a boolean mask per block.
            with np.errstate(over="ignore", invalid="ignore"):
                squares = np.array([np.dot(f, f) for f in flats])
        if not np.isfinite(squares).all():
            # A non-finite sum of squares may also be an overflow: only then the exact test runs.
            for i, block in enumerate(blocks):
                if not np.isfinite(squares[i]) and not np.isfinite(block).all():
                    self._bad.add(i)

    def sample_windows(self, start: int, size: int) -> list[tuple[int, int]]:
        """The measured parts `(lo, hi)` of the current tensor's block at element `start`, of `size` elements
        (empty when the tensor is not measured). Reads the meter only: other threads may ask."""
        if self._gram is None:
            return []
        return _windows(start, size, max(self._stride, -(-size // SAMPLE_ELEMENTS)))

    def block_parts(
        self, parts: Sequence[Sequence[np.ndarray]], base_parts: Sequence[np.ndarray] | None, size: int
    ) -> None:
        """`block(..., finite=True)` for a block of `size` elements already cut to its `sample_windows`: `parts[i]`
        holds ingredient i's parts (copies made by another thread), `base_parts` the base's. The sums are
        `block`'s, bit for bit: the same products, added in the same order."""
        self._seen += size
        if self._gram is None:
            return
        for k in range(len(parts[0]) if parts else 0):
            measured = [p[k] for p in parts]
            if self._with_base:
                measured.append(base_parts[k])  # type: ignore[index]
            self._gram.add(measured)

    def finish(self) -> None:
        """End the current tensor."""
        if self._gram is not None:
            self._gram.tensors += 1
        for i in sorted(self._bad):
            self.non_finite.setdefault(self.names[i], []).append(self._name)
        self._gram, self._bad = None, set()

    def state(self) -> dict:
        """A JSON-able snapshot; meters over disjoint tensors merge exactly (sums), whatever the order of shards."""
        return {
            "body": self.body.gram.tolist(),
            "body_tensors": self.body.tensors,
            "head": self.head.gram.tolist(),
            "head_tensors": self.head.tensors,
            "non_finite": self.non_finite,
            "unequal_buffers": self.unequal_buffers,
        }

    def merge(self, state: dict) -> None:
        self.body.merge(state["body"], state["body_tensors"])
        self.head.merge(state["head"], state["head_tensors"])
        for ingredient, names in state["non_finite"].items():
            self.non_finite.setdefault(ingredient, []).extend(names)
        self.unequal_buffers.extend(state["unequal_buffers"])

    def fresh(self) -> SimilarityMeter:
        """An empty meter over the same ingredients (one per shard)."""
        return SimilarityMeter(self.names, base=self.base)

    def result(self) -> Similarity:
        n = len(self.names)
        body_cos, body_l2 = self.body.cosine(), self.body.rel_l2()
        similarity = Similarity(
            names=list(self.names),
            body_cosine=[row[:n] for row in body_cos[:n]],
            body_rel_l2=[row[:n] for row in body_l2[:n]],
        )
        if self.head.tensors:
            similarity.head_cosine, similarity.head_rel_l2 = self.head.cosine(), self.head.rel_l2()
        if self.base is not None:
            similarity.base = self.base
            similarity.body_cosine_to_base = [body_cos[i][n] for i in range(n)]
            similarity.body_rel_l2_to_base = [body_l2[i][n] for i in range(n)]
        return similarity

    def judge(self, report: CompatReport) -> Similarity:
        """Add the measured verdicts to `report` and attach the figures."""
        similarity = self.result()
        report.similarity = similarity
        report.weights_checked = True
        for ingredient, tensors in self.non_finite.items():
            report.add(
                "error",
                "weights",
                ingredient,
                f"has NaN or Inf values in {len(tensors)} tensors, e.g. {tensors[0]}",
                "Re-export the checkpoint; a soup with it would be NaN too.",
            )
        if self.unequal_buffers:
            report.add(
                "error",
                "dtypes",
                None,
                f"integer buffers differ between ingredients ({self.unequal_buffers[0]}"
                f"{' and more' if len(self.unequal_buffers) > 1 else ''}); they cannot be averaged",
            )
        if self.body.tensors == 0:
            report.add("warning", "shared-init", None, "no weight matrices could be compared")
            return similarity
        self._judge_body(similarity, report)
        self._judge_heads(similarity, report)
        return similarity

    def _judge_body(self, s: Similarity, report: CompatReport) -> None:
        n = len(s.names)
        # The reference is the ingredient most similar to all others, so one impostor listed first does not make
        # every true sibling look like the odd one out. With a base, the one closest to the base: two ingredients
        # tie on their sums whatever they are, and the base says which of them is the sibling.
        if s.body_cosine_to_base is not None:
            ref = max(range(n), key=lambda i: s.body_cosine_to_base[i])  # type: ignore[index]
        else:
            ref = max(range(n), key=lambda i: sum(s.body_cosine[i]))
        for i in range(n):
            cos = s.body_cosine[ref][i]
            if i != ref and cos < MIN_BODY_COSINE:
                others = ", ".join(f"{s.body_cosine[i][j]:.3f}" for j in range(n) if j != i)
                report.add(
                    "error",
                    "shared-init",
                    s.names[i],
                    f"does not share an initialization with the others: body cosine similarity {cos:.3f} and "
                    f"relative L2 distance {s.body_rel_l2[ref][i]:.3f} to {s.names[ref]} (to each other ingredient: "
                    f"{others}); fine-tunes of one base score above {MIN_BODY_COSINE}, typically above 0.95",
                    f"Remove it (check the base_model in its card), or pass {option('force')} if you know they "
                    "share a base.",
                )
        if s.body_cosine_to_base is not None:
            for i, cos in enumerate(s.body_cosine_to_base):
                if cos < MIN_BODY_COSINE:
                    report.add(
                        "error",
                        "shared-init",
                        s.names[i],
                        f"was not fine-tuned from {s.base}: body cosine similarity {cos:.3f}, relative L2 "
                        f"{s.body_rel_l2_to_base[i]:.3f}",  # type: ignore[index]
                        f"Check {option('base', ...)}, or remove the ingredient.",
                    )

    def _judge_heads(self, s: Similarity, report: CompatReport) -> None:
        if not s.head_cosine:
            return
        n, heads = len(s.names), s.head_cosine
        related = [[s.body_cosine[i][j] >= MIN_BODY_COSINE for j in range(n)] for i in range(n)]
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if related[i][j] and heads[i][j] < MIN_HEAD_COSINE]
        if not pairs:
            return
        # As for the body: the reference is the head most like its siblings'. When most siblings share its head,
        # each one that does not is the suspect, named; without such a majority no ingredient can be blamed.
        ref = max(range(n), key=lambda i: sum(heads[i][j] for j in range(n) if related[i][j]))
        siblings = [j for j in range(n) if related[ref][j]]
        suspects = [j for j in siblings if heads[ref][j] < MIN_HEAD_COSINE]
        if suspects and 2 * len(suspects) < len(siblings):
            for i in suspects:
                others = ", ".join(f"{heads[i][j]:.3f}" for j in siblings if j != i)
                what, harm = _head_diagnosis(heads[ref][i])
                report.add(
                    "error",
                    "head",
                    s.names[i],
                    f"{what} (head cosine {heads[ref][i]:.3f} to {s.names[ref]}, to each sibling: {others}), "
                    f"although its body shares their base; {harm}",
                    _head_fix(heads[ref][i]),
                )
            return
        worst = min(pairs, key=lambda p: heads[p[0]][p[1]])
        shown = ", ".join(f"{s.names[i]} ~ {s.names[j]}" for i, j in pairs[:4])
        cos = heads[worst[0]][worst[1]]
        what, harm = _head_diagnosis(cos, plural=True)
        report.add(
            "error",
            "head",
            None,
            f"{what} although the bodies share a base (head cosine {cos:.3f} for {shown}); {harm}",
            _head_fix(cos),
        )


def _head_diagnosis(cos: float, *, plural: bool = False) -> tuple[str, str]:
    """What a low head cosine means: near 0, unrelated heads; strongly negative, one head pointing against the other
    (a fine-tune on swapped labels, or a sign flip), which no re-initialization produces."""
    if cos <= ANTI_ALIGNED_HEAD_COSINE:
        what = "the classification heads point in opposite directions" if plural else "its head is anti-aligned"
        return f"{what}: labels swapped or a sign flip", "averaging opposite heads cancels the classifier"
    what = "the classification heads were" if plural else "its classification head was"
    return f"{what} initialized independently", "averaging unrelated heads gives a near-random classifier"


def _head_fix(cos: float) -> str:
    if cos <= ANTI_ALIGNED_HEAD_COSINE:
        return (
            "Check its id2label and the labels it was trained on (a fine-tune on swapped labels predicts the other "
            f"class); remove it, or let a greedy soup leave it out. {option('force')} would average opposite heads."
        )
    return (
        "Fine-tune every ingredient from one checkpoint that already has the head (as the model soups paper does), "
        f"or re-train the soup's head on your data after souping with {option('force')}."
    )


def leave_out_outliers(report: CompatReport) -> dict[str, str]:
    """Turn the similarity refusals that blame one ingredient into warnings, for a method that can soup without it.

    Only the checks the weights decide (shared initialization, the head) name an outlier; structure, labels,
    tokenizer and non-finite weights still refuse. The outliers must be a minority (two good fine-tunes and one bad:
    the bad one is the one unlike the others), else nothing is left out and the report refuses as before.

    Returns:
        `dict[str, str]`: each ingredient left out, by name, and why (the findings' messages).
    """
    blamed: dict[str, list] = {}
    for finding in report.errors:
        if finding.check in OUTLIER_CHECKS and finding.ingredient is not None:
            blamed.setdefault(finding.ingredient, []).append(finding)
    n = len(report.similarity.names) if report.similarity is not None else len(report.ingredients)
    if not blamed or 2 * len(blamed) >= n or n - len(blamed) < 2:
        return {}
    reasons = {}
    for name, findings in blamed.items():
        reasons[name] = "; ".join(f"{f.check}: {f.message}" for f in findings)
        for f in findings:
            report.findings.remove(f)
            report.add("warning", f.check, name, f"left out of the soup: {f.message}", f.fix)
    return reasons


def _windows(start: int, size: int, stride: int) -> list[tuple[int, int]]:
    """The measured parts `(lo, hi)` of the block at `start` (of `size` elements) of a tensor sampled at `stride`:
    the first `ceil(SAMPLE_ELEMENTS / stride)` elements of every run of `SAMPLE_ELEMENTS` of the tensor."""
    if stride <= 1:
        return [(0, size)]
    length, windows = -(-SAMPLE_ELEMENTS // stride), []
    for run in range(start // SAMPLE_ELEMENTS * SAMPLE_ELEMENTS, start + size, SAMPLE_ELEMENTS):
        lo, hi = max(run, start), min(run + length, start + size)
        if lo < hi:
            windows.append((lo - start, hi - start))
    return windows


def _as_array(tensor) -> np.ndarray:  # noqa: ANN001 - a numpy array or a torch tensor
    if isinstance(tensor, np.ndarray):
        return tensor
    import torch

    wide = tensor.detach().cpu()
    if wide.is_floating_point() and wide.dtype not in (torch.float32, torch.float64):
        wide = wide.to(torch.float32)  # bfloat16 and float8 have no numpy dtype
    return wide.numpy()
