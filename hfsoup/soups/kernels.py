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

import sys
from collections.abc import Sequence

import numpy as np

# Elements per block on the CPU: 64 Ki float32 values are 256 KiB, so the N input blocks, the accumulator and a
# scratch block of one step stay in a core's L2 cache (a few MiB) for a handful of ingredients: each numpy pass over
# them is then a pass over cached memory. 256 Ki blocks (1 MiB each) spilled to L3 and allocated fresh pages: a
# BERT-base soup of four fine-tunes and a base took 15-25% more CPU time. A block is still large enough that numpy's
# per-call overhead stays small.
BLOCK = 1 << 16


def sum_block() -> int:
    """Elements per block of the plain weighted sum (the uniform soup): 4 x `BLOCK`. It makes few passes over a
    block, so what the merges gain from L2-sized steps it loses in numpy calls, fresh arrays and, with several threads,
    hand-overs: a uniform soup of 4 x 1B bf16 Llama checkpoints took 7.0 s at 64 Ki and 5.1 s at 256 Ki on 2 cores."""
    return 4 * BLOCK


_F32 = np.dtype(np.float32)
# Which uint16 of a float32's bits is its top half (a bfloat16): the second on little-endian machines.
_HIGH = 1 if sys.byteorder == "little" else 0
_F64 = np.dtype(np.float64)


def compute_dtype(codes: Sequence[str]) -> np.dtype:
    """float32, or float64 when any input is float64 (its precision must not be thrown away)."""
    return _F64 if "F64" in codes else _F32


def widen(raw: np.ndarray, code: str, dtype: np.dtype = _F32, *, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values (`raw`, in `checkpoint.STORAGE[code]`) as `dtype` floats; a view when nothing changes.

    `out` (float32, at least `raw.size` elements) receives a bfloat16 block's widening instead of a fresh array: the
    engine reuses one per ingredient, so widening a block is one copy and one shift, with nothing allocated.
    `raw` may also be a tensor computed on read (`io.adapter.LoraTensor`'s flat view): `np.asarray` computes it."""
    raw = np.asarray(raw)
    if code == "BF16":
        if out is not None and dtype == _F32:
            bits = out.reshape(-1)[: raw.size].view(np.uint32).reshape(raw.shape)
            bits[...] = raw
            np.left_shift(bits, 16, out=bits)
            return bits.view(np.float32)
        wide = (raw.astype(np.uint32) << 16).view(np.float32)
    elif code in ("F8_E4M3", "F8_E5M2"):
        wide = _float8_to_float32(raw, code)
    else:
        wide = raw
    return wide if wide.dtype == dtype else wide.astype(dtype)


def narrow(values: np.ndarray, code: str, *, finite: bool = False) -> np.ndarray:
    """Float values as the stored representation of `code` (`values` itself when it already is). `finite`: the
    caller has checked that every value is finite, so bfloat16 rounding skips its own NaN check."""
    if code == "BF16":
        values = np.asarray(values, dtype=np.float32)
        bits = values.view(np.uint32)
        # Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then keep the high half (a strided
        # copy of the uint16 halves: one pass fewer than a shift and a cast). In place in one scratch array.
        rounding = np.right_shift(bits, 16)
        np.bitwise_and(rounding, 1, out=rounding)
        np.add(rounding, 0x7FFF, out=rounding)
        np.add(rounding, bits, out=rounding)
        rounded = np.ascontiguousarray(rounding.reshape(-1).view(np.uint16)[_HIGH::2]).reshape(values.shape)
        # NaNs become the canonical quiet NaN (rounding could carry a NaN's payload into the exponent and make it an
        # Inf). A finite sum rules them out in one fast reduction; only a non-finite one pays for the exact mask.
        if not finite and values.size:
            with np.errstate(over="ignore", invalid="ignore"):
                finite = bool(np.isfinite(np.add.reduce(values, axis=None)))
        if not finite:
            nan = np.isnan(values)
            if nan.any():
                rounded[nan] = 0x7FC0
        return rounded
    if code in ("F8_E4M3", "F8_E5M2"):
        return _float32_to_float8(values, code)
    with np.errstate(over="ignore"):  # beyond float16's range is inf, as in torch: a soup of such inputs is too
        return values.astype({"F64": _F64, "F32": _F32, "F16": np.dtype(np.float16)}[code], copy=False)


#: Whether `widen_bf16_pairs` may read bfloat16 pairs as uint32: the value at the lower address is the low half of
#: the uint32 only on little-endian machines.
PAIRS = sys.byteorder == "little"


def widen_bf16_pairs(raw: np.ndarray, even: np.ndarray, odd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An even number of stored bfloat16 values (`raw`, uint16) widened to float32, split into the values at even
    and at odd positions: `(even[:n], odd[:n])` as float32, n = half of `raw.size`.

    Read as uint32, a pair holds its first value in the low half and its second in the high half, so the first
    widened is the pair shifted left by 16 and the second is the pair with its low half cleared: two passes over half
    as many elements, where `widen` casts and shifts every element. For a uniform soup of 4 x 1B bfloat16
    checkpoints that is a quarter less CPU time in all. The arithmetic is elementwise, so sums of the halves are
    the sums of the elements; `narrow_bf16_pairs` interleaves them again. `even` and `odd`: uint32 buffers of at
    least n elements (little-endian machines only, `PAIRS`)."""
    pairs = np.ascontiguousarray(raw).reshape(-1).view(np.uint32)
    n = pairs.size
    low, high = even[:n], odd[:n]
    np.left_shift(pairs, 16, out=low)
    np.bitwise_and(pairs, np.uint32(0xFFFF0000), out=high)
    return low.view(np.float32), high.view(np.float32)


def narrow_bf16_pairs(even: np.ndarray, odd: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The finite float32 values `even` and `odd` (the halves from `widen_bf16_pairs`, or sums of them) rounded to
    bfloat16 as `narrow` rounds them, and interleaved again: a fresh uint16 array of `2 * even.size` values.

    Each half is rounded in uint32 (ties to even, as `narrow`), then the pair is put together in one uint32: the
    first value's bfloat16 in its low half, the second's in its high half. That replaces `narrow`'s strided copy
    with contiguous passes. `scratch`: a uint32 buffer of at least `even.size` elements. Every value must be finite
    (the caller has checked): a NaN is not made the canonical one here."""
    n = even.size
    out = np.empty(n, np.uint32)
    rounding = scratch[:n]
    for values, first in ((even, True), (odd, False)):
        bits = values.view(np.uint32)
        np.right_shift(bits, 16, out=rounding)
        np.bitwise_and(rounding, 1, out=rounding)
        np.add(rounding, 0x7FFF, out=rounding)
        np.add(rounding, bits, out=rounding)
        if first:
            np.right_shift(rounding, 16, out=out)
        else:
            np.bitwise_and(rounding, np.uint32(0xFFFF0000), out=rounding)
            np.bitwise_or(out, rounding, out=out)
    return out.view(np.uint16)


def weighted_sum(
    blocks: Sequence[np.ndarray], weights: Sequence[float], out: np.ndarray | None = None, *, sum_first: bool = False
) -> np.ndarray:
    """sum_i weights[i] * blocks[i], in the blocks' (common) float dtype, added in the order given.

    The order is fixed, so any split of the work (processes, shards, resumed runs) gives the same bits.

    `sum_first`: equal weights (the uniform soup) are summed first and scaled once, 4 passes over the block instead of
    2N - 1 and one rounding fewer per term; for a power-of-two weight (2, 4, 8 ingredients) the bits are the
    term-by-term sum's (but for subnormal results). Summing first can overflow where the weighted terms would not
    (values near float32's largest), so only a caller that checks the result for non-finite values asks for it.
    """
    if sum_first and len(blocks) > 1 and all(w == weights[0] for w in weights[1:]):
        with np.errstate(over="ignore"):  # an overflow is the caller's to see (the engine checks the sum)
            acc = np.add(blocks[0], blocks[1], out=out)
            for block in blocks[2:]:
                np.add(acc, block, out=acc)
            return np.multiply(acc, acc.dtype.type(weights[0]), out=acc)
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
