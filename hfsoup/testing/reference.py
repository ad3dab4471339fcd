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
