"""The sampled shared-initialization estimate: a few kilobytes of the largest weight matrices, read by Range requests.

The full measure (`compat.similarity`) streams every weight; before anything is downloaded the same question can be
answered from a sample. The base's largest body matrices are found in its safetensors header, the same few
contiguous slices of each (evenly spaced through the tensor) are read from the base and from a candidate, and the
cosine of the two concatenated samples estimates the body cosine: a fine-tune is its base plus a small update, so
its slices point the way the base's do (near 1), while an independently initialized model of the same shape gives a
cosine near 0 (about `1/sqrt(n)` for `n` sampled values). The threshold is the full measure's, `MIN_BODY_COSINE`;
`benchmarks/calibrate_shared_init.py --sampled` measures both sides of it.

Norms, biases and the task head are left out, as in the full measure: any initialization sets norms to ones and
biases to zeros, and Hub fine-tunes often carry a fresh head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compat import HEAD_PREFIXES, CompatReport
from ..compat.similarity import MIN_BODY_COSINE
from ..hub.refs import PinnedIngredient
from ..hub.remote import read_range
from ..io.checkpoint import STORAGE, StructureMap
from ..soups.kernels import widen

#: How many of the largest body matrices are sampled, how many slices of each, and the bytes of one slice.
MATRICES = 3
SLICES = 4
SLICE_BYTES = 1024
_FLOATS = ("F64", "F32", "F16", "BF16")


@dataclass(frozen=True)
class Sample:
    """One slice of one tensor: `count` elements from element `first`, in the tensor's row-major order."""

    tensor: str
    first: int
    count: int


def plan_samples(
    structure: StructureMap, *, matrices: int = MATRICES, slices: int = SLICES, slice_bytes: int = SLICE_BYTES
) -> list[Sample]:
    """The slices to read: `slices` evenly spaced runs of the `matrices` largest float body matrices of `structure`
    (the base's), each run `slice_bytes` of float32 long (the same elements whatever a candidate's dtype)."""
    body = [
        (name, meta)
        for name, meta in structure.items()
        if len(meta.shape) == 2 and meta.dtype in _FLOATS and not name.startswith(HEAD_PREFIXES)
    ]
    body.sort(key=lambda item: (-item[1].numel, item[0]))
    samples = []
    count = max(1, slice_bytes // 4)
    for name, meta in body[:matrices]:
        n = min(count, meta.numel)
        spots = max(1, min(slices, meta.numel // n))
        for k in range(spots):
            first = 0 if spots == 1 else k * (meta.numel - n) // (spots - 1)
            samples.append(Sample(name, first, n))
    return samples


def matching_name(name: str, structure: StructureMap) -> str | None:
    """`name` (the base's) in a candidate whose task model may name it with one more leading component (`bert.`)
    or one less; None when it is not there."""
    if name in structure:
        return name
    bare = name.split(".", 1)[1] if "." in name else name
    if bare in structure:
        return bare
    found = [other for other in structure if other.endswith("." + name) and other.count(".") == name.count(".") + 1]
    return found[0] if len(found) == 1 else None


def read_samples(
    ingredient: PinnedIngredient, samples: list[Sample], reference: StructureMap, *, token: str | bool | None
) -> np.ndarray | None:
    """The sampled values of `ingredient` (float64, concatenated), read by one Range request per slice from the
    headers' offsets (`remote_structure` must have run); None when a sampled tensor is missing, has another shape
    or a dtype that cannot be compared."""
    values = []
    for sample in samples:
        name = matching_name(sample.tensor, ingredient.structure)
        if name is None or name not in ingredient.locations:
            return None
        meta = ingredient.structure[name]
        if meta.shape != reference[sample.tensor].shape or meta.dtype not in _FLOATS:
            return None
        file, start = ingredient.locations[name]
        size = STORAGE[meta.dtype].itemsize
        first = start + sample.first * size
        raw = read_range(ingredient, file, first, first + sample.count * size - 1, token=token)
        values.append(widen(np.frombuffer(raw, dtype=STORAGE[meta.dtype]), meta.dtype, np.dtype(np.float64)))
    return np.concatenate(values) if values else None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two samples (0 when either is all zeros)."""
    with np.errstate(over="ignore", invalid="ignore"):
        denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
        value = float(a @ b) / denominator if denominator > 0 else 0.0
    return value if np.isfinite(value) else 0.0


def judge_sampled(
    report: CompatReport,
    pinned: list[PinnedIngredient],
    reference: PinnedIngredient,
    *,
    token: str | bool | None,
) -> dict[str, float]:
    """The sampled estimate for `hfsoup check --skip-weights`: each remote full ingredient against `reference` (the
    base, or the first remote ingredient), added to `report` as an `error` below `MIN_BODY_COSINE` and an `info`
    otherwise. Local folders and adapters (the base plus a low-rank update, by construction) are not sampled.

    Returns:
        `dict[str, float]`: each sampled ingredient's cosine to the reference, by name.
    """
    samples = plan_samples(reference.structure)
    if not samples or not reference.locations:
        return {}
    ref_values = read_samples(reference, samples, reference.structure, token=token)
    if ref_values is None:
        return {}
    cosines = {}
    for ingredient in pinned:
        if ingredient is reference or ingredient.is_adapter or not ingredient.locations:
            continue
        values = read_samples(ingredient, samples, reference.structure, token=token)
        if values is None:
            continue
        cosines[ingredient.name] = value = cosine(values, ref_values)
        what = f"sampled body cosine {value:.3f} to {reference.name} ({len(values)} values read by Range requests)"
        if value < MIN_BODY_COSINE:
            report.add(
                "error",
                "shared-init",
                ingredient.name,
                f"does not share an initialization with {reference.name}: {what}; fine-tunes of one base score "
                f"above {MIN_BODY_COSINE}",
                "Remove it (check the base_model in its card), or check without --skip-weights (weights=True) to "
                "measure every weight.",
            )
        else:
            report.add("info", "shared-init", ingredient.name, what)
    return cosines
