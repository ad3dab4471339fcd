"""An independent float64 reference for soups, used by tests and the demo to check hfsoup's output."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..io.checkpoint import CheckpointReader
from ..soups.base import StateDict


def reference_average(
    folders: Sequence[str | os.PathLike], weights: Sequence[float] | None = None, *, allow_pickle: bool = False
) -> StateDict:
    """The weighted mean of every float tensor of `folders`, in float64, loading one tensor at a time."""
    weights = [1.0 / len(folders)] * len(folders) if weights is None else list(weights)
    readers = [CheckpointReader(f, allow_pickle=allow_pickle) for f in folders]
    out = {}
    for name, meta in readers[0].structure.items():
        if meta.is_float:
            out[name] = sum(w * r.get(name).double() for w, r in zip(weights, readers, strict=True))
    return out


def max_relative_deviation(folder: str | os.PathLike, reference: StateDict) -> float:
    """The largest `max|soup - ref| / max|ref|` over all tensors (each tensor scaled by its own magnitude)."""
    worst = 0.0
    with CheckpointReader(folder) as soup:
        if set(soup.structure) != set(reference) | {n for n, m in soup.structure.items() if not m.is_float}:
            raise AssertionError("the soup and the reference hold different tensors")
        for name, ref in reference.items():
            got = soup.get(name).double()
            scale = float(ref.abs().max()) or 1.0
            worst = max(worst, float((got - ref).abs().max()) / scale)
    return worst


# Mantissa bits (with the implicit one) and smallest exponent of the low-precision float formats.
_FORMATS = {torch.float16: (11, -24), torch.bfloat16: (8, -133)}


def ulp_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """How far `got` (float16 or bfloat16) is from a float64 `reference`, in units in the last place of `got`'s format.

    A correctly rounded result is within 0.5; float32 accumulation can tip exact ties, so allow a hair more.
    """
    bits, min_exp = _FORMATS[got.dtype]
    _, exponent = torch.frexp(reference)
    ulp = torch.exp2((exponent - bits).clamp_min(min_exp).double())
    return float(((got.double() - reference).abs() / ulp).max())


def reference_fisher_merge(
    states: Sequence[StateDict], fishers: Sequence[StateDict], *, floor: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Fisher merging in float64: per entry `sum_i F_i theta_i / sum_i F_i`, each `F_i` floored at `floor`; a
    tensor without a Fisher is the mean."""
    out = {}
    for name, first in states[0].items():
        if not torch.is_floating_point(first):
            continue
        if name not in fishers[0]:
            out[name] = sum(s[name].double() for s in states) / len(states)
            continue
        f = [torch.clamp(fi[name].double(), min=floor) for fi in fishers]
        out[name] = sum(fi * s[name].double() for fi, s in zip(f, states, strict=True)) / sum(f)
    return out


def reference_regmean_merge(
    states: Sequence[StateDict], grams: Sequence[StateDict], *, alpha: float
) -> dict[str, torch.Tensor]:
    """RegMean in float64: every weight with Gram matrices `W^T = (sum_i G_i')^-1 sum_i G_i' W_i^T`, with `G_i'` the
    Gram matrix with its off-diagonal entries times `alpha`; every other float tensor the mean."""
    out = {}
    for name, first in states[0].items():
        if not torch.is_floating_point(first):
            continue
        if name not in grams[0]:
            out[name] = sum(s[name].double() for s in states) / len(states)
            continue
        scaled = []
        for g in grams:
            g = g[name].double()
            off = g - torch.diag(torch.diagonal(g))
            scaled.append(torch.diag(torch.diagonal(g)) + alpha * off)
        rhs = sum(g @ s[name].double().T for g, s in zip(scaled, states, strict=True))
        out[name] = torch.linalg.solve(sum(scaled), rhs).T
    return out


# ---- the data-free merge methods, one tensor at a time, in float64 numpy (written from the methods' definitions) --


def dare_keep(seed: int, name: str, ingredient: int, numel: int, density: float) -> np.ndarray:
    """DARE's keep mask of one ingredient's tensor: PCG64 seeded by `SeedSequence([seed, ingredient, h])`, `h` the
    first 8 bytes of sha256(name) read little-endian; each raw 64-bit word is two 32-bit words (low half first), one
    per entry, and an entry is kept when its word is below ceil(density * 2**32)."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    bits = np.random.PCG64(np.random.SeedSequence([seed, ingredient, h]))
    raw = bits.random_raw((numel + 1) // 2)
    words = np.stack([raw & 0xFFFFFFFF, raw >> 32], axis=1).reshape(-1)[:numel]
    return words < math.ceil(density * 2**32)


def elect_mean(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """TIES's sign election and disjoint mean of float64 task vectors."""
    sign = np.sign(sum(vectors))
    agree = [(v != 0) & (np.sign(v) == sign) for v in vectors]
    count = sum(a.astype(np.float64) for a in agree)
    total = sum(np.where(a, v, 0.0) for a, v in zip(agree, vectors, strict=True))
    return np.where(count > 0, total / np.where(count > 0, count, 1), 0.0)


def _top_k(delta: np.ndarray, density: float) -> np.ndarray:
    """TIES's trim: the entries at least as large in magnitude as the k-th largest (`k = int(density * numel)`; all
    entries tied at it kept), by a full sort."""
    k = int(density * delta.size)
    if k == 0:
        return np.zeros(delta.shape, dtype=bool)
    magnitude = np.abs(delta)
    return magnitude >= np.sort(magnitude, axis=None)[::-1][k - 1]


def merge_reference(
    method: str,
    base: np.ndarray | None,
    thetas: Sequence[np.ndarray],
    name: str,
    *,
    density: float = 0.2,
    seed: int = 0,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
    t: float = 0.5,
    alpha: float = 0.5,
) -> np.ndarray:
    """One tensor of a data-free merge (`task-arithmetic`, `ties`, `dare-linear`, `dare-ties`, `slerp`,
    `model-stock`, `wise-ft`) of `thetas` onto `base` (unused by slerp), in float64."""
    shape = np.shape(base if base is not None else thetas[0])
    thetas = [np.asarray(x, dtype=np.float64).ravel() for x in thetas]
    if method == "slerp":
        a, b = thetas
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        if abs(cos) > 1 - 5e-4:
            return ((1 - t) * a + t * b).reshape(shape)
        omega = math.acos(cos)
        return ((math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)).reshape(shape)
    assert base is not None
    base = np.asarray(base, dtype=np.float64).ravel()
    deltas = [x - base for x in thetas]
    weights = [1.0] * len(thetas) if weights is None else list(weights)
    if method == "task-arithmetic":
        out = base + scale * sum(w * d for w, d in zip(weights, deltas, strict=True))
    elif method == "wise-ft":
        out = (1 - alpha) * base + alpha * sum(thetas) / len(thetas)
    elif method == "ties":
        out = base + scale * elect_mean([np.where(_top_k(d, density), d, 0.0) for d in deltas])
    elif method in ("dare-linear", "dare-ties"):
        dropped = [np.where(dare_keep(seed, name, i, d.size, density), d / density, 0.0) for i, d in enumerate(deltas)]
        if method == "dare-ties":
            merged = elect_mean(dropped)
        else:
            merged = sum(w * d for w, d in zip(weights, dropped, strict=True))
        out = base + scale * merged
    elif method == "model-stock":
        n = len(deltas)
        cosines = [
            deltas[i] @ deltas[j] / (np.linalg.norm(deltas[i]) * np.linalg.norm(deltas[j]))
            for i in range(n)
            for j in range(i + 1, n)
        ]
        cos = float(np.mean(cosines))
        ratio = n * cos / (1 + (n - 1) * cos)
        out = ratio * sum(thetas) / n + (1 - ratio) * base
    else:
        raise ValueError(f"no reference for {method!r}")
    return np.asarray(out).reshape(shape)
