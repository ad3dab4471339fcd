"""Per-tensor merges: what the engine runs instead of the weighted sum for the methods that are not one.

Task arithmetic and WiSE-FT are affine combinations of the ingredients and the base (`Mixing.base_weight`), so they
take the engine's weighted sum as it is. TIES, DARE, SLERP and Model Stock decide something per tensor (a magnitude
threshold, a random mask, an angle, a cosine) before they combine: such a method returns a `TensorMerge` in its
`Outcome`, and the engine hands it each float tensor as a `TensorInputs`: the ingredients' (and the base's) stored
tensors, memory-mapped, read block by block. A merge that needs a whole-tensor figure reads the blocks twice (a
statistics pass, then the output pass), so it never holds an ingredient, nor a whole tensor of every ingredient:
TIES's top-k threshold is a streamed radix selection (`magnitude_thresholds`); Model Stock holds one tensor's mean
task vector when it is small (`model_stock.HOLD_ELEMENTS`). The first pass over a tensor's blocks also feeds the
soup's similarity meter (`TensorInputs.observe_rest` measures what no pass read).

The decisions (top-k, sign election, the masks, SLERP's parallel fallback) are those of a float64 transcription of
the definitions, made on the CPU: TIES's in float64; dare-ties's sign election in float32 with float64 sums where
float32 rounding could change a sign (`Election`); SLERP's fallback from float32 products summed in float64, in
float64 near the threshold. Every final combination goes through the engine's accumulator (the GPU's when there is
one): in float32 (float64 inputs keep float64), but TIES's `base + scale * merged` in float64.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import kernels

F64 = np.dtype(np.float64)

Accumulate = Callable[[Sequence[np.ndarray], Sequence[float]], np.ndarray]
Observe = Callable[[Sequence[np.ndarray], "np.ndarray | None"], None]


class TensorInputs:
    """One float tensor of every ingredient, and of the base when the soup has one that holds it, as flat arrays
    in their stored representation (memory maps), with the engine's accumulator.

    Attributes:
        name (`str`): the tensor's name.
        numel (`int`): its number of elements.
        n (`int`): the number of ingredients.
        has_base (`bool`): whether the base holds this tensor (a bare `BertModel` base lacks the classifier).
        dtype (`np.dtype`): the engine's accumulation dtype for it (float32, or float64 for float64 inputs).
        block (`int`): elements per block (`kernels.BLOCK` on the CPU, the accumulator's `block` on a GPU).
    """

    def __init__(
        self,
        name: str,
        flats: Sequence[np.ndarray],
        codes: Sequence[str],
        base: tuple[np.ndarray, str] | None,
        dtype: np.dtype,
        accumulate: Accumulate,
        observe: Observe | None = None,
        *,
        block: int | None = None,
    ) -> None:
        self.name, self._flats, self._codes, self._base = name, flats, codes, base
        self.numel = int(flats[0].size)
        self.n = len(flats)
        self.has_base = base is not None
        self.dtype = dtype
        self.block = kernels.BLOCK if block is None else block
        self._accumulate = accumulate
        # `observe` (the engine's similarity meter) sees every block once, in order, from whichever pass reads it
        # first: the merge's own first pass, so that measuring costs no pass of its own (`observe_rest`).
        self._observe, self._observed = observe, 0

    def blocks(self, dtype: np.dtype | None = None) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        """Every block in order (`block` elements): the ingredients' blocks and the base's (or None)."""
        dtype = self.dtype if dtype is None else dtype
        for index, start in enumerate(range(0, self.numel, self.block)):
            stop = start + self.block
            blocks = [kernels.widen(f[start:stop], c, dtype) for f, c in zip(self._flats, self._codes, strict=True)]
            base = None if self._base is None else kernels.widen(self._base[0][start:stop], self._base[1], dtype)
            if self._observe is not None and index == self._observed:
                self._observe(blocks, base)  # before the merge sees them: it may reuse the blocks' memory
                self._observed += 1
            yield blocks, base

    def base_blocks(self, dtype: np.dtype | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The base's blocks alone, with their offsets (a pass that needs nothing of the ingredients); the base
        must hold the tensor."""
        assert self._base is not None
        dtype = self.dtype if dtype is None else dtype
        flat, code = self._base
        for start in range(0, self.numel, self.block):
            yield start, kernels.widen(flat[start : start + self.block], code, dtype)

    def observe_rest(self) -> None:
        """Feed `observe` the blocks no pass has read yet (all of them when the merge read none)."""
        if self._observe is not None and self._observed * self.block < self.numel:
            for _ in self.blocks():
                pass

    def accumulate(self, blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """The engine's weighted sum of same-dtype blocks (on the GPU when the soup runs there)."""
        return self._accumulate(blocks, weights)

    def mean(self) -> Iterator[np.ndarray]:
        """The ingredients' uniform mean, block by block: what a tensor the base lacks becomes."""
        weights = [1.0 / self.n] * self.n
        for blocks, _ in self.blocks():
            yield self.accumulate(blocks, weights)


class TensorMerge:
    """A per-tensor merge (see the module docstring). `prepare` sees every tensor name of the soup once, before any
    tensor (whatever share of the shards this process writes); `merge` yields the output tensor's blocks in order,
    as floats (the engine casts them to the output dtype)."""

    def prepare(self, names: Sequence[str]) -> None:
        """Called once with every tensor name of the soup (sorted), e.g. to count layers. Nothing by default."""

    def merge(self, inputs: TensorInputs) -> Iterator[np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must define merge(inputs)")


def tensor_seed(seed: int, name: str, ingredient: int) -> np.random.SeedSequence:
    """The random stream of one ingredient's tensor: `SeedSequence([seed, ingredient, h])` where `h` is the first 8
    bytes of `sha256(name)` as a little-endian integer. It depends on nothing else (not on shards, processes or
    blocks), so a fixed seed gives the same bytes however the work is split."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.SeedSequence([seed, ingredient, digest])


def keep_threshold(density: float) -> int:
    """DARE keeps an entry when its 32-bit random word is below this: `ceil(density * 2**32)`."""
    return math.ceil(density * 2**32)


class DareMask:
    """One ingredient's keep mask of one tensor, block after block: the generator's raw 64-bit PCG64 words
    (`random_raw`), each split into two 32-bit words (low half first), one per entry; an entry is kept when its word
    is below `keep_threshold(density)`. Blocks of an even number of entries (all but a tensor's last) use whole
    64-bit words, so drawing block by block gives the bits of one draw of the whole tensor."""

    def __init__(self, seed: int, name: str, ingredient: int, density: float) -> None:
        self._bits = np.random.PCG64(tensor_seed(seed, name, ingredient))
        self._threshold = keep_threshold(density)

    def next(self, size: int) -> np.ndarray:
        words = self._bits.random_raw((size + 1) // 2).view(np.uint32)  # little-endian: low half first
        if sys.byteorder != "little":
            words = words.reshape(-1, 2)[:, ::-1].reshape(-1)
        if self._threshold >= 2**32:
            return np.ones(size, dtype=bool)  # drawn all the same: the stream does not depend on the density
        return words[:size] < np.uint32(self._threshold)


def dare_masks(seed: int, name: str, n: int, density: float) -> list[DareMask]:
    """One keep mask per ingredient of tensor `name` (`DareMask`)."""
    return [DareMask(seed, name, i, density) for i in range(n)]


def elect(trimmed: Sequence[np.ndarray], exact_total: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """TIES's sign election and disjoint mean of one block (`Election`, in buffers of its own)."""
    return Election(trimmed[0].size, trimmed[0].dtype)(trimmed, exact_total).copy()


class Election:
    """TIES's sign election and disjoint mean: each entry's sign is the sign of the sum of the (trimmed) task
    vectors; the entries that are non-zero and agree with it are averaged (0 where none does). An entry agrees when
    its sign equals the elected one: where that is non-zero, such an entry is non-zero; where it is zero, so is
    every agreeing entry and the mean.

    In float32 the computed sum can take the other sign (or 0) where the task vectors nearly cancel: the float32
    task vectors and their sum are each off by at most `n * eps / 2` of the sum of magnitudes. Where the computed
    sum is below `n * eps` of that sum of magnitudes, `exact_total(positions)` (the float64 sums of the exact task
    vectors there) elects the sign, so the election is the float64 one; elsewhere the float32 sign is exact.

    One election per tensor, called block after block: its buffers (blocks of at most `size` entries) are reused,
    so a block costs no allocation; the result is valid until the next call."""

    def __init__(self, size: int, dtype: np.dtype) -> None:
        self._floats = np.empty((4, size), dtype=dtype)
        self._bools = np.empty((3, size), dtype=bool)
        self._count = np.empty(size, dtype=np.uint16)  # agreeing entries: at most the number of ingredients

    def __call__(
        self, trimmed: Sequence[np.ndarray], exact_total: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray:
        n, size = len(trimmed), trimmed[0].size
        total, scratch, bound, agreed = (f[:size] for f in self._floats)
        positive, negative, agree = (b[:size] for b in self._bools)
        count = self._count[:size]
        np.copyto(total, trimmed[0])
        for t in trimmed[1:]:
            np.add(total, t, out=total)
        unsure = None
        if exact_total is not None and total.dtype != F64:
            np.abs(trimmed[0], out=bound)
            for t in trimmed[1:]:
                np.add(bound, np.abs(t, out=scratch), out=bound)
            np.multiply(bound, bound.dtype.type(n * np.finfo(total.dtype).eps), out=bound)
            if np.less(np.abs(total, out=scratch), bound, out=agree).any():
                unsure = np.flatnonzero(agree)
        # The sign as (total > 0) - (total < 0): several times faster than np.sign, above all in place.
        np.greater(total, 0, out=positive)
        np.less(total, 0, out=negative)
        sign = np.subtract(positive, negative, out=total, dtype=total.dtype)
        if unsure is not None:
            sign[unsure] = np.sign(exact_total(unsure))  # type: ignore[misc]
        for i, t in enumerate(trimmed):
            # max(t * sign, 0): |t| where t is non-zero and of the elected sign (which is then non-zero), else 0;
            # same-dtype operations only (a float times a boolean mask is a slower loop).
            part = np.maximum(np.multiply(t, sign, out=scratch if i else agreed), 0, out=scratch if i else agreed)
            np.greater(part, 0, out=agree)
            if i:
                np.add(agreed, part, out=agreed)
                np.add(count, agree.view(np.uint8), out=count)
            else:
                np.copyto(count, agree)
        np.multiply(agreed, sign, out=agreed)
        return np.divide(agreed, np.maximum(count, 1, out=count), out=agreed)


#: Radix digits of the streamed selection, and how many candidates it gathers at most to finish with a partition.
_DIGIT = 16
_GATHER = 1 << 20


def magnitude_thresholds(inputs: TensorInputs, density: float) -> list[float]:
    """The k-th largest magnitude (`k = int(density * numel)`; infinity when k is 0) of every ingredient's float64
    task vector `theta_i - base`: TIES keeps the entries at least this large (ties at it all kept).

    Streamed block by block, never one whole tensor. For float32-computed inputs the magnitudes are first ranked in
    float32 (`|theta - base|` rounded to float32 is a monotone function of the float64 one, so an entry of a larger
    float32 magnitude is never smaller in float64): one pass counts the top 16 bits of the float32 magnitudes'
    bits (which order as the values), one more gathers the float64 magnitudes of the entries in the digit holding
    the k-th largest, and `np.partition` finishes. Where that digit holds more than `_GATHER` entries, or the inputs
    are float64, `_float64_thresholds` selects on the float64 bits instead."""
    n, k = inputs.n, int(density * inputs.numel)
    if k <= 0:
        return [float("inf")] * n
    if inputs.dtype != np.float32:
        return _float64_thresholds(inputs, k)
    counts = [np.zeros(1 << _DIGIT, dtype=np.int64) for _ in range(n)]
    for blocks, base in inputs.blocks():
        assert base is not None
        for i, block in enumerate(blocks):
            bits = np.abs(np.subtract(block, base)).view(np.uint32) >> np.uint32(_DIGIT)
            counts[i] += np.bincount(bits, minlength=1 << _DIGIT)
    digits, ranks = [], []
    for i in range(n):
        above = np.cumsum(counts[i][::-1])  # above[j]: entries in the top j + 1 digits
        top = int(np.searchsorted(above, k))
        digits.append(np.uint32((1 << _DIGIT) - 1 - top))
        ranks.append(k - (int(above[top - 1]) if top else 0))
        if int(counts[i][int(digits[i])]) > _GATHER:
            return _float64_thresholds(inputs, k)
    found: list[list[np.ndarray]] = [[] for _ in range(n)]
    for blocks, base in inputs.blocks():
        assert base is not None
        for i, block in enumerate(blocks):
            bits = np.abs(np.subtract(block, base)).view(np.uint32) >> np.uint32(_DIGIT)
            where = np.flatnonzero(bits == digits[i])
            found[i].append(np.abs(block[where].astype(F64) - base[where].astype(F64)))
    thresholds = []
    for candidates, rank in zip(found, ranks, strict=True):
        gathered = np.concatenate(candidates)
        thresholds.append(float(np.partition(gathered, gathered.size - rank)[gathered.size - rank]))
    return thresholds


def _float64_thresholds(inputs: TensorInputs, k: int) -> list[float]:
    """`magnitude_thresholds` by a radix selection on the float64 magnitudes' bits: a pass counts, per ingredient,
    the next 16 bits of the magnitudes that share the digits found so far, and the digit holding the k-th largest
    is kept, until at most `_GATHER` candidates remain; one more pass gathers them for `np.partition`."""
    n = inputs.n
    prefix, shift, rank = [0] * n, [64] * n, [k] * n  # rank: the wanted entry's rank among those matching prefix
    result: list[float | None] = [None] * n
    gather = [False] * n
    while any(r is None for r in result):
        counts = [np.zeros(1 << _DIGIT, dtype=np.int64) for _ in range(n)]
        found: list[list[np.ndarray]] = [[] for _ in range(n)]
        for blocks, base in inputs.blocks(F64):
            assert base is not None
            for i, block in enumerate(blocks):
                if result[i] is not None:
                    continue
                magnitude = np.subtract(block, base, out=block if block.flags.writeable else None)
                bits = np.abs(magnitude, out=magnitude).view(np.uint64)
                if shift[i] < 64:
                    bits = bits[(bits >> np.uint64(shift[i])) == np.uint64(prefix[i])]
                if gather[i]:
                    found[i].append(bits)
                else:
                    digit = (bits >> np.uint64(shift[i] - _DIGIT)) & np.uint64((1 << _DIGIT) - 1)
                    counts[i] += np.bincount(digit.astype(np.intp), minlength=1 << _DIGIT)
        for i in range(n):
            if result[i] is not None:
                continue
            if gather[i]:
                candidates = np.concatenate(found[i]).view(F64)
                result[i] = float(np.partition(candidates, candidates.size - rank[i])[candidates.size - rank[i]])
                continue
            above = np.cumsum(counts[i][::-1])  # above[j]: entries in the top j + 1 digits
            top = int(np.searchsorted(above, rank[i]))  # the first run of top digits holding rank entries
            digit = (1 << _DIGIT) - 1 - top
            rank[i] -= int(above[top - 1]) if top else 0
            prefix[i], shift[i] = (prefix[i] << _DIGIT) | digit, shift[i] - _DIGIT
            if shift[i] == 0:  # every candidate has these bits: they are the value
                result[i] = float(np.array([prefix[i]], dtype=np.uint64).view(F64)[0])
            elif int(counts[i][digit]) <= _GATHER:
                gather[i] = True
    return [float(r) for r in result]  # type: ignore[arg-type]
