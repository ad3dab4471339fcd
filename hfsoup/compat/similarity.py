"""Shared initialization, measured from the weights while they stream past.

For every pair of ingredients (and against `--base`) the cosine similarity and relative L2 distance of the weight
*matrices*: norms and biases are left out because any initialization sets them to the same constants (ones and
zeros), which would make unrelated models look alike. The task head is measured apart from the body, since Hub
fine-tunes often start from a shared body but a freshly initialized head.

Calibration (`benchmarks/calibrate_shared_init.py`, figures in its docstring): fine-tunes of one base score above
0.95 (tiny families) and 0.99 (real MiniLM fine-tunes); independently initialized models of the same shape score
within 0.05 of 0. The threshold sits in the middle of that gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .report import CompatReport, Similarity
from .static import HEAD_PREFIXES

#: Below this body cosine two ingredients are not fine-tunes of one initialization.
MIN_BODY_COSINE = 0.5
#: Below this head cosine (with the bodies related) the heads were initialized independently.
MIN_HEAD_COSINE = 0.5
# Elements per block when accumulating the Gram matrix in float64 (bounded memory for huge embeddings).
_CHUNK = 1 << 20


class _Gram:
    def __init__(self, n: int) -> None:
        self.gram = torch.zeros(n, n, dtype=torch.float64)
        self.tensors = 0

    def add(self, flats: Sequence[torch.Tensor]) -> None:
        # Each block's Gram matrix comes from one float32 matmul (BLAS sums pairwise, so its relative error stays
        # near 1e-6, far below the 1e-3 that separates siblings); blocks add up in float64.
        numel = flats[0].numel()
        for start in range(0, numel, _CHUNK):
            block = torch.stack([f[start : start + _CHUNK] for f in flats]).to(torch.float32)
            self.gram += (block @ block.T).to(torch.float64)
        self.tensors += 1

    def merge(self, gram: list[list[float]], tensors: int) -> None:
        self.gram += torch.tensor(gram, dtype=torch.float64)
        self.tensors += tensors

    def cosine(self) -> list[list[float]]:
        norms = self.gram.diagonal().clamp_min(1e-300).sqrt()
        return (self.gram / norms[:, None] / norms[None, :]).clamp(-1, 1).tolist()

    def rel_l2(self) -> list[list[float]]:
        diag = self.gram.diagonal()
        dist = (diag[:, None] + diag[None, :] - 2 * self.gram).clamp_min(0).sqrt()
        scale = (diag.sqrt()[:, None] + diag.sqrt()[None, :]) / 2
        return (dist / scale.clamp_min(1e-300)).tolist()


class SimilarityMeter:
    """Accumulate pairwise similarities one tensor at a time; also catch NaN/Inf and unequal integer buffers.

    Args:
        names (`list[str]`): the ingredients, in order.
        base (`str`, *optional*): the name of an extra last tensor in every `update` call, the declared base model.
    """

    def __init__(self, names: list[str], *, base: str | None = None) -> None:
        self.names = names
        self.base = base
        n = len(names) + (1 if base else 0)
        self.body = _Gram(n)
        self.head = _Gram(len(names))
        self.non_finite: dict[str, list[str]] = {}
        self.unequal_buffers: list[str] = []

    def update(self, name: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None = None) -> None:
        first = tensors[0]
        if not first.is_floating_point():
            if any(not torch.equal(first, t) for t in tensors[1:]):
                self.unequal_buffers.append(name)
            return
        for ingredient, tensor in zip(self.names, tensors, strict=True):
            # A sum is non-finite when any element is: one fast reduction instead of a boolean mask per tensor.
            # Only then (or on an overflow of the sum) the exact test runs.
            if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
                self.non_finite.setdefault(ingredient, []).append(name)
        if first.ndim < 2:
            return
        flats = [t.reshape(-1) for t in tensors]
        if name.startswith(HEAD_PREFIXES):
            self.head.add(flats)
        elif self.base is not None:
            if base is not None and base.shape == first.shape:
                self.body.add([*flats, base.reshape(-1)])
        else:
            self.body.add(flats)

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
        # every true sibling look like the odd one out.
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
                    "Remove it (check the base_model in its card), or pass --force if you know they share a base.",
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
                        "Check --base, or remove the ingredient.",
                    )

    def _judge_heads(self, s: Similarity, report: CompatReport) -> None:
        if not s.head_cosine:
            return
        n = len(s.names)
        pairs = [
            (i, j)
            for i in range(n)
            for j in range(i + 1, n)
            if s.body_cosine[i][j] >= MIN_BODY_COSINE and s.head_cosine[i][j] < MIN_HEAD_COSINE
        ]
        if pairs:
            worst = min(pairs, key=lambda p: s.head_cosine[p[0]][p[1]])  # type: ignore[index]
            shown = ", ".join(f"{s.names[i]} ~ {s.names[j]}" for i, j in pairs[:4])
            report.add(
                "error",
                "head",
                None,
                f"the classification heads were initialized independently although the bodies share a base "
                f"(head cosine {s.head_cosine[worst[0]][worst[1]]:.3f} for {shown}); averaging unrelated heads gives "
                "a near-random classifier",
                "Fine-tune every ingredient from one checkpoint that already has the head (as the model soups paper "
                "does), or re-train the soup's head on your data after souping with --force.",
            )
