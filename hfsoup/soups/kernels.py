"""The arithmetic of a soup, on blocks of numpy arrays: dtype conversions and the weighted sum.

The soup engine works on fixed-size blocks of each tensor (`BLOCK` elements), not whole tensors: a 94 MB embedding
matrix never needs a 94 MB accumulator, the blocks stay in the CPU's caches, and the memory a soup needs is a few
blocks whatever the model. Everything here is numpy, so a CPU soup never imports torch (whose import alone takes
longer than averaging a BERT-base on two cores, and holds 150 MB); a GPU soup hands the same blocks to
`TorchAccumulator`.

bfloat16 has no numpy dtype: its bits are held in uint16 and widened exactly to float32 (a bfloat16 is the top half of
a float32), and narrowed with round-to-nearest-even, bit for bit as torch does it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Elements per block on the CPU: 64 Ki float32 values are 256 KiB, so the N input blocks, the accumulator and a
# scratch block of one step stay in a core's L2 cache (a few MiB) for a handful of ingredients: each numpy pass over
# them is then a pass over cached memory. 256 Ki blocks (1 MiB each) spilled to L3 and allocated fresh pages: a
# BERT-base soup of four fine-tunes and a base took 15-25% more CPU time. A block is still large enough that numpy's
# per-call overhead stays small.
BLOCK = 1 << 16

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def compute_dtype(codes: Sequence[str]) -> np.dtype:
    """float32, or float64 when any input is float64 (its precision must not be thrown away)."""
    return _F64 if "F64" in codes else _F32


def widen(raw: np.ndarray, code: str, dtype: np.dtype = _F32) -> np.ndarray:
    """Stored values (`raw`, in `checkpoint.STORAGE[code]`) as `dtype` floats; a view when nothing changes.

    `raw` may also be a tensor computed on read (`io.adapter.LoraTensor`'s flat view): `np.asarray` computes it."""
    raw = np.asarray(raw)
    if code == "BF16":
        wide = (raw.astype(np.uint32) << 16).view(np.float32)
    elif code in ("F8_E4M3", "F8_E5M2"):
        wide = _float8_to_float32(raw, code)
    else:
        wide = raw
    return wide if wide.dtype == dtype else wide.astype(dtype)


def narrow(values: np.ndarray, code: str) -> np.ndarray:
    """Float values as the stored representation of `code` (`values` itself when it already is)."""
    if code == "BF16":
        bits = values.astype(np.float32).view(np.uint32)
        # Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then drop the low half. NaNs become
        # the canonical quiet NaN (rounding could carry a NaN's payload into the exponent and make it an Inf).
        rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
        nan = np.isnan(values)
        if nan.any():
            rounded[nan] = 0x7FC0
        return rounded
    if code in ("F8_E4M3", "F8_E5M2"):
        return _float32_to_float8(values, code)
    with np.errstate(over="ignore"):  # beyond float16's range is inf, as in torch: a soup of such inputs is too
        return values.astype({"F64": _F64, "F32": _F32, "F16": np.dtype(np.float16)}[code], copy=False)


def weighted_sum(blocks: Sequence[np.ndarray], weights: Sequence[float], out: np.ndarray | None = None) -> np.ndarray:
    """sum_i weights[i] * blocks[i], in the blocks' (common) float dtype, added in the order given.

    The order is fixed, so any split of the work (processes, shards, resumed runs) gives the same bits.
    """
    acc = np.multiply(blocks[0], blocks[0].dtype.type(weights[0]), out=out)
    scratch = np.empty_like(acc) if len(blocks) > 1 else None
    for block, weight in zip(blocks[1:], weights[1:], strict=True):
        np.multiply(block, block.dtype.type(weight), out=scratch)
        np.add(acc, scratch, out=acc)
    return acc


class TorchAccumulator:
    """The weighted sum on a torch device (a GPU): blocks go over, the result comes back as numpy.

    Args:
        device (`str`): e.g. `"cuda:0"`.
    """

    #: Elements per block handed to the GPU: larger than the CPU's `BLOCK`, so that each transfer and kernel launch
    #: carries enough data to pay for its fixed cost.
    block = 1 << 18

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def __call__(self, blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        torch = self.torch
        acc = None
        for block, weight in zip(blocks, weights, strict=True):
            # np.array: a writable copy (torch warns on read-only memory maps); pinned transfers would not pay off
            # for one use per block.
            on_device = torch.from_numpy(np.array(block, copy=True)).to(self.device, non_blocking=True)
            acc = on_device * weight if acc is None else acc.add_(on_device, alpha=weight)
        return acc.cpu().numpy()  # type: ignore[union-attr]


def _float8_to_float32(raw: np.ndarray, code: str) -> np.ndarray:
    # float8 checkpoints are rare; torch knows their formats exactly, numpy does not.
    import torch

    dtype = torch.float8_e4m3fn if code == "F8_E4M3" else torch.float8_e5m2
    return torch.from_numpy(np.array(raw, copy=True)).view(dtype).to(torch.float32).numpy()


def _float32_to_float8(values: np.ndarray, code: str) -> np.ndarray:
    import torch

    dtype = torch.float8_e4m3fn if code == "F8_E4M3" else torch.float8_e5m2
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(dtype)
    return tensor.view(torch.uint8).numpy()
