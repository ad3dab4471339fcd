"""An independent float64 reference for soups, used by tests and the demo to check hfsoup's output."""

from __future__ import annotations

import os
from collections.abc import Sequence

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
