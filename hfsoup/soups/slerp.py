"""SLERP: spherical linear interpolation of two ingredients, tensor by tensor (as in mergekit's `slerp`).

Per tensor, with `a` and `b` the two flattened tensors and `cos = a.b / (|a| |b|)`: when `|cos| > 1 - PARALLEL` (or a
tensor is zero) the result is the linear `(1 - t) a + t b`; else, with `omega = arccos(cos)`,
`sin((1 - t) omega) / sin(omega) * a + sin(t omega) / sin(omega) * b`. `t = 0` is the first ingredient.

A per-layer schedule (`--t-schedule 0,0.5,1`) gives `t` at evenly spaced depths: a tensor of layer `l` of a stack of
`L` layers (`...layer.l.`, `...layers.l.`, `...block.l.`, counted per stack, so T5's encoder and decoder and CLIP's
two towers each run from the first anchor to the last) gets the anchors linearly interpolated at `l / (L - 1)`; the
tensors outside layers (embeddings, heads) get `--t`. The cosine comes from a pass over the blocks (float32 BLAS dot
products per block, summed in float64; float64 products where float32 overflows or where the cosine lies within
`UNDECIDED` of the parallel threshold, so that the fallback is decided as in float64), the combination from the
engine's weighted sum (GPU when there is one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import schema
from ..options import option
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, option_args, recorded_options
from .merge import F64, TensorInputs, TensorMerge

#: How close to parallel (1 - |cos|) two tensors must be for the linear fallback (mergekit's 0.9995).
PARALLEL = 5e-4

_LAYER = re.compile(r"^(.*?\.(?:layer|layers|block|blocks|h))\.(\d+)\.")


def layer_of(name: str) -> tuple[str, int] | None:
    """The stack (the name up to the layer list) and the layer index of a tensor name, or None outside layers."""
    found = _LAYER.match(name)
    return None if found is None else (found.group(1), int(found.group(2)))


def slerp_weights(a_dot_b: float, a_norm: float, b_norm: float, t: float) -> tuple[float, float]:
    """The coefficients of `a` and `b` in the interpolation at `t` (see the module docstring)."""
    if a_norm == 0 or b_norm == 0:
        return 1.0 - t, t
    cos = min(max(a_dot_b / (a_norm * b_norm), -1.0), 1.0)
    if 1.0 - abs(cos) < PARALLEL:
        return 1.0 - t, t
    omega = math.acos(cos)
    return math.sin((1.0 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)


class SlerpMerge(TensorMerge):
    def __init__(self, t: float, schedule: Sequence[float] | None) -> None:
        self.t, self.schedule = t, list(schedule) if schedule else None
        self.depths: dict[str, int] = {}

    def prepare(self, names: Sequence[str]) -> None:
        for name in names:
            if (found := layer_of(name)) is not None:
                self.depths[found[0]] = max(self.depths.get(found[0], 0), found[1] + 1)

    def t_for(self, name: str) -> float:
        found = layer_of(name) if self.schedule else None
        if found is None:
            return self.t
        assert self.schedule is not None
        stack, index = found
        layers = self.depths.get(stack, index + 1)
        position = index / (layers - 1) if layers > 1 else 0.0
        anchors = np.linspace(0.0, 1.0, len(self.schedule))
        return float(np.interp(position, anchors, self.schedule))

    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        dot, a2, b2 = _dots(inputs, None)
        if not math.isfinite(dot + a2 + b2) or _undecided(dot, a2, b2):
            dot, a2, b2 = _dots(inputs, F64)  # float32 overflowed, or its rounding could decide the fallback
        weights = slerp_weights(dot, math.sqrt(a2), math.sqrt(b2), self.t_for(inputs.name))
        for blocks, _ in inputs.blocks():
            yield inputs.accumulate(blocks, weights)


#: Within this of the parallel threshold (in |cos|), the float64 dot products decide between SLERP and the linear
#: fallback: float32 BLAS products summed per block are good to about 1e-7 relative, far inside it.
UNDECIDED = 1e-5


def _dots(inputs: TensorInputs, dtype: np.dtype | None) -> tuple[float, float, float]:
    """`a.b`, `a.a` and `b.b` over the blocks: BLAS dot products of each block in the blocks' dtype (float32 for
    float32 inputs), summed over blocks in float64."""
    dot = a2 = b2 = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for (a, b), _ in inputs.blocks(dtype):
            dot, a2, b2 = dot + float(np.dot(a, b)), a2 + float(np.dot(a, a)), b2 + float(np.dot(b, b))
    return dot, a2, b2


def _undecided(dot: float, a2: float, b2: float) -> bool:
    """Whether the cosine is too close to the parallel threshold for float32 products to decide the fallback."""
    if a2 <= 0 or b2 <= 0:
        return False
    return abs(abs(dot / math.sqrt(a2 * b2)) - (1.0 - PARALLEL)) < UNDECIDED


class SlerpSoup(SoupMethod):
    """Spherical interpolation of exactly two ingredients at `t`, tensor by tensor.

    Args:
        t (`float`, *optional*, defaults to 0.5): 0 is the first ingredient, 1 the second.
        t_schedule (`Sequence[float]`, *optional*): `t` at evenly spaced layer depths, each in [0, 1] (see the
            module docstring); `t` then applies to the tensors outside layers.
    """

    name: ClassVar[str] = "slerp"
    description: ClassVar[str] = (
        "two ingredients interpolated along the great circle through them, tensor by tensor (spherical linear "
        "interpolation, linear where they are nearly parallel)"
    )
    default_baseline: ClassVar[bool] = False  # compared when named: it needs --base, and options to choose
    plot_style: ClassVar[PlotStyle] = PlotStyle("*", "tab:red")

    @dataclass
    class Options:
        t: float = option(
            0.5,
            kind=schema.candidates(schema.unit()),
            help="interpolation factor: 0 is the first ingredient, 1 the second",
        )
        t_schedule: list[float] | None = option(
            None,
            kind=schema.numbers(check_each=schema.unit().check, what="numbers from 0 to 1"),
            help="t at evenly spaced layer depths, e.g. 0,0.5,1 (tensors outside layers get --t)",
        )

    def problems(self, n_ingredients: int) -> list[tuple[str, str]]:
        if n_ingredients != 2:
            return [("method", f"slerp interpolates exactly 2 ingredients, got {n_ingredients}")]
        return []

    def run(self, context: SoupContext) -> Outcome:
        t = self.options.t
        merge = SlerpMerge(t, self.options.t_schedule)
        return Outcome(Mixing((1.0 - t, t)), recorded_options(self), merge=merge)

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))
