"""The soup's numpy arithmetic: dtype conversions bit for bit as torch does them, block-wise sums, the meter."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import hfsoup
from hfsoup.compat.similarity import SAMPLE_ELEMENTS, SimilarityMeter
from hfsoup.io.checkpoint import CheckpointReader, SafetensorsStreamWriter, TensorMeta
from hfsoup.soups import engine, kernels
from hfsoup.soups.base import Mixing
from hfsoup.soups.engine import BlockPool, _mix_blocks, merged_tensor
from hfsoup.testing.reference import max_relative_deviation, reference_average


def awkward_floats(n: int = 200_000, seed: int = 0) -> torch.Tensor:
    """Normal values across many magnitudes, plus the cases rounding gets wrong: ties, subnormals, huge, inf, NaN."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, generator=g) * torch.exp2(torch.randint(-130, 120, (n,), generator=g).float())
    bf16_ties = (torch.randint(0, 1 << 16, (1000,), generator=g, dtype=torch.int32) << 16) | 0x8000
    special = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, float("inf"), float("-inf"), float("nan")])
    return torch.cat([values, bf16_ties.view(torch.float32), special])


def test_narrow_to_bfloat16_rounds_exactly_like_torch():
    values = awkward_floats()
    ours = kernels.narrow(values.numpy(), "BF16")
    theirs = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    finite = np.isfinite(values.numpy())
    assert np.array_equal(ours[finite], theirs[finite])
    nan = np.isnan(values.numpy())
    assert np.array_equal(ours[~finite & ~nan], theirs[~finite & ~nan])  # the infinities
    assert (ours[nan] == 0x7FC0).all()  # a NaN stays a NaN


@pytest.mark.parametrize("code", ["BF16", "F16", "F32", "F64"])
def test_widen_is_exact(code):
    torch_dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}[code]
    stored = awkward_floats(seed=1).to(torch_dtype)
    raw = stored.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[stored.element_size()]).numpy()
    raw = raw.view({"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F64": np.float64}[code])
    ours = kernels.widen(raw, code, np.dtype(np.float64))
    assert np.array_equal(ours, stored.double().numpy(), equal_nan=True)


def test_narrow_to_float16_matches_torch():
    values = awkward_floats(seed=2)
    ours = kernels.narrow(values.numpy(), "F16")
    theirs = values.to(torch.float16).numpy()
    nan = np.isnan(values.numpy())
    assert np.array_equal(ours[~nan].view(np.uint16), theirs[~nan].view(np.uint16))  # overflow to inf included
    assert np.isnan(ours[nan]).all()  # NaN payloads may differ


def test_weighted_sum_adds_in_the_order_given():
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal(10_000).astype(np.float32) for _ in range(4)]
    weights = [0.1, 0.2, 0.3, 0.4]
    got = kernels.weighted_sum(blocks, weights)
    expected = blocks[0] * np.float32(0.1)
    for block, weight in zip(blocks[1:], weights[1:], strict=True):
        expected = expected + block * np.float32(weight)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    exact = sum(np.float64(w) * b.astype(np.float64) for w, b in zip(weights, blocks, strict=True))
    assert np.abs(got - exact).max() / np.abs(exact).max() < 1e-6


def test_equal_weights_are_summed_then_scaled_exactly_as_the_weighted_terms():
    """The uniform soup's fast path: for 4 ingredients (weight 1/4, a power of two) the bits are the term-by-term
    sum's; for 3 (weight 1/3) within float32 rounding of the exact mean."""
    rng = np.random.default_rng(5)
    blocks = [rng.standard_normal(10_000).astype(np.float32) for _ in range(4)]
    assert np.array_equal(
        kernels.weighted_sum(blocks, [0.25] * 4, sum_first=True), kernels.weighted_sum(blocks, [0.25] * 4)
    )
    got = kernels.weighted_sum(blocks[:3], [1 / 3] * 3, sum_first=True)
    exact = sum(b.astype(np.float64) for b in blocks[:3]) / 3
    assert np.abs(got - exact).max() <= 2e-7 * np.abs(exact).max()


def test_a_uniform_soup_of_huge_finite_values_does_not_overflow():
    """Summing first would overflow float32 (4 x 3e38); the engine sees the non-finite sum and weighs the terms."""
    huge = np.full((3, kernels.BLOCK + 5), 3e38, np.float32)
    huge[0, 0] = -1.0
    got = merged_tensor("enc.weight", [huge] * 4, Mixing((0.25,) * 4))
    assert np.isfinite(got).all() and np.array_equal(got, huge)


def test_a_nan_is_still_found_when_the_sum_stands_for_the_element_checks():
    """The engine skips the meter's per-element pass when the weighted sum is finite: a NaN in any ingredient makes
    it non-finite, so the NaN is still reported, and written as bfloat16's canonical NaN."""
    meter = SimilarityMeter(["a", "b"])
    a = np.ones(kernels.BLOCK + 9, np.float32)
    b = a.copy()
    b[kernels.BLOCK + 3] = np.nan
    blocks = list(
        _mix_blocks("enc.weight", [a, b], ["F32", "F32"], [0.5, 0.5], "BF16", meter, None, kernels.weighted_sum)
    )
    out = np.concatenate(blocks)
    assert meter.non_finite == {"b": ["enc.weight"]}
    assert out[kernels.BLOCK + 3] == 0x7FC0 and (np.delete(out, kernels.BLOCK + 3) == 0x3F80).all()


def big_checkpoint(folder, seed, dtype):
    """Tensors of several blocks, with a length that is not a multiple of the block, so block edges are crossed."""
    g, base = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(99)
    shape = (kernels.BLOCK // 1000 * 2 + 7, 1000)
    tensors = {
        "big.weight": (torch.randn(shape, generator=base) + 0.2 * torch.randn(shape, generator=g)).to(dtype),
        "big.bias": (torch.randn(shape[0], generator=base) + 0.2 * torch.randn(shape[0], generator=g)).to(dtype),
        "head.weight": (torch.randn(3, 1000, generator=base) + 0.2 * torch.randn(3, 1000, generator=g)).to(dtype),
    }
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    return folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_multi_block_tensors_match_the_float64_reference(tmp_path, dtype):
    folders = [big_checkpoint(tmp_path / f"ft{i}", i, dtype) for i in range(3)]
    result = hfsoup.soup(folders, tmp_path / "out", device="cpu")
    reference = reference_average(folders)
    if dtype == torch.float32:
        assert max_relative_deviation(result.output_dir, reference) < 1e-6
    else:  # averaged in float32, written as bfloat16: the float64 mean rounded once to bfloat16, give or take 1 ulp
        with CheckpointReader(result.output_dir) as soup:
            for name, ref in reference.items():
                got = soup.get(name)
                assert got.dtype == torch.bfloat16
                # One bfloat16 ulp, plus float32's rounding where the mean cancels to nearly 0.
                tolerance = torch.finfo(torch.bfloat16).eps * ref.abs() + 1e-6 * ref.abs().max()
                assert ((got.double() - ref).abs() <= tolerance).all(), name
                # Round to nearest: nearly all are the float64 mean rounded once (truncating would match about half).
                assert (got == ref.to(torch.bfloat16)).double().mean() > 0.99


def test_meter_blocks_add_up_to_the_whole_tensor_figures():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((SAMPLE_ELEMENTS + 123,)).astype(np.float32).reshape(-1, 1)
    tensors = [(base + 0.3 * rng.standard_normal(base.shape)).astype(np.float32) for _ in range(3)]
    whole = SimilarityMeter(["a", "b", "c"])
    whole.update("enc.weight", tensors)
    blocked = SimilarityMeter(["a", "b", "c"])
    blocked.start("enc.weight", 2, None)
    flats = [t.reshape(-1) for t in tensors]
    for start in range(0, flats[0].size, 1000):
        blocked.block([f[start : start + 1000] for f in flats])
    blocked.finish()
    stacked = np.stack(flats).astype(np.float64)
    norms = np.linalg.norm(stacked, axis=1)
    exact = stacked @ stacked.T / norms[:, None] / norms[None, :]
    assert np.allclose(blocked.result().body_cosine, exact, atol=1e-6)
    # One block larger than SAMPLE_ELEMENTS is measured on its strided sample: close, not exact.
    assert np.allclose(whole.result().body_cosine, exact, atol=5e-3)


def test_meter_finds_nan_even_where_the_sum_of_squares_overflows():
    meter = SimilarityMeter(["ok", "huge", "nan"])
    ok = np.ones((4, 4), np.float32)
    huge = np.full((4, 4), 3e38, np.float32)  # its squares overflow to inf, yet every value is finite
    nan = ok.copy()
    nan[1, 2] = np.nan
    meter.update("enc.weight", [ok, huge, nan])
    assert meter.non_finite == {"nan": ["enc.weight"]}


class FullDisk:
    """A file whose every write fails as on a full disk."""

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        pass


def test_writer_error_on_its_thread_reaches_the_caller_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr("hfsoup.io.checkpoint.open", lambda *args, **kwargs: FullDisk(), raising=False)
    writer = SafetensorsStreamWriter(tmp_path / "model.safetensors", [("w", TensorMeta("F32", (1000, 1000)))])
    writer.begin("w", "F32", (1000, 1000))
    with pytest.raises(OSError, match="No space left"):
        for _ in range(10):
            writer.write(np.zeros(100_000, np.float32))
        writer.end()
        writer.close()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_blocks_that_do_not_fit_the_plan(tmp_path):
    writer = SafetensorsStreamWriter(tmp_path / "m.safetensors", [("w", TensorMeta("BF16", (4,)))])
    with pytest.raises(RuntimeError, match="does not match the planned"):
        writer.begin("w", "F32", (4,))
    writer.begin("w", "BF16", (4,))
    with pytest.raises(RuntimeError, match="does not fit"):
        writer.write(np.zeros(4, np.float32))  # float32 values in a bfloat16 slot
    writer.write(np.zeros(3, np.uint16))
    with pytest.raises(RuntimeError, match="ended incomplete"):
        writer.end()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_the_gpu_accumulator_computes_the_same_sum_through_torch():
    """`TorchAccumulator` is what a GPU soup uses; on the CPU device it must agree with the numpy kernel."""
    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]
    blocks[0].setflags(write=False)  # like a memory-mapped input
    got = kernels.TorchAccumulator("cpu")(blocks, [0.5, 0.25, 0.25])
    assert got.dtype == np.float32
    assert np.allclose(got, kernels.weighted_sum(blocks, [0.5, 0.25, 0.25]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("code", ["F32", "BF16"])
@pytest.mark.parametrize("weights", [(0.25, 0.25, 0.25, 0.25), (0.5, 0.0, 0.3, 0.2)])
def test_the_block_pool_gives_the_one_thread_loops_bytes_and_figures(code, weights):
    """Several threads compute a tensor's blocks: the same output bytes and the same meter sums as one thread,
    with a base measured, a weight of 0, and a NaN in a middle block (found, and written as the canonical NaN)."""
    rng = np.random.default_rng(7)
    n = 3 * BlockPool.CHUNK_BLOCKS * kernels.sum_block() + 1234  # three jobs' chunks of blocks, and a tail
    base = rng.standard_normal(n).astype(np.float32)
    arrays = [(base + 0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(4)]
    arrays[2][kernels.sum_block() + 77] = np.nan
    if code == "BF16":
        stored = [kernels.narrow(a, "BF16") for a in arrays]
        base_in = (kernels.narrow(base, "BF16"), "BF16")
    else:
        stored, base_in = arrays, (base, "F32")
    runs = []
    pool = BlockPool(3)
    try:
        for use in (None, pool):
            meter = SimilarityMeter(["a", "b", "c", "d"], base="base")
            out = _mix_blocks(
                "enc.weight", [s.reshape(-1, 2) for s in stored], [code] * 4, list(weights), code, meter,
                (base_in[0].reshape(-1, 2), base_in[1]), kernels.weighted_sum, pool=use,
            )  # fmt: skip
            runs.append((np.concatenate(list(out)), meter.state()))
    finally:
        pool.close()
    (one, one_meter), (many, many_meter) = runs
    assert one.tobytes() == many.tobytes()
    assert json.dumps(one_meter) == json.dumps(many_meter)  # NaN-aware: the NaN is in a measured sample
    assert one_meter["non_finite"] == {"c": ["enc.weight"]}
    assert one_meter["body_tensors"] == 1 and one_meter["body"][0][1] > 0


def test_a_soup_on_three_threads_writes_the_bytes_of_one(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3 * BlockPool.CHUNK_BLOCKS * kernels.sum_block() // 1000 + 7, 1000, generator=g)
    folders = []
    for i in range(3):
        folder = tmp_path / f"ft{i}"
        folder.mkdir()
        tensors = {"enc.weight": (base + 0.1 * torch.randn(base.shape, generator=g)).to(torch.bfloat16)}
        save_file(tensors, folder / "model.safetensors")
        (folder / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
        folders.append(folder)
    outputs = []
    for threads in ("1", "3"):
        monkeypatch.setenv("HFSOUP_NUM_THREADS", threads)
        result = hfsoup.soup(folders, tmp_path / f"out{threads}", device="cpu")
        outputs.append(result.output_dir)
    first, second = ((o / "model.safetensors").read_bytes() for o in outputs)
    assert first == second
    report = [json.loads((o / "hfsoup.json").read_text())["compatibility"]["similarity"] for o in outputs]
    assert report[0] == report[1]


def test_hfsoup_num_threads_chooses_the_pool_and_a_bad_value_is_a_usage_error(monkeypatch):
    from hfsoup.errors import InvalidSoupArgumentsError

    monkeypatch.setenv("HFSOUP_NUM_THREADS", "1")
    assert BlockPool.create() is None  # one thread: the one-thread loop, no pool
    monkeypatch.setenv("HFSOUP_NUM_THREADS", "3")
    pool = BlockPool.create()
    assert pool is not None and pool.threads == 3
    pool.close()
    monkeypatch.setenv("HFSOUP_NUM_THREADS", "1000000")  # bounded: not a million threads
    pool = BlockPool.create()
    assert pool is not None and pool.threads == engine.MAX_THREADS
    pool.close()
    monkeypatch.setenv("HFSOUP_NUM_THREADS", "many")
    with pytest.raises(InvalidSoupArgumentsError, match="HFSOUP_NUM_THREADS"):
        BlockPool.create()


@pytest.mark.parametrize("weights", [(0.25, 0.25, 0.25, 0.25), (0.5, 0.125, 0.3, 0.2)])
def test_paired_bfloat16_blocks_give_the_element_by_element_bytes_and_figures(monkeypatch, weights):
    """bfloat16 soups take the paired kernels (`kernels.widen_bf16_pairs`): the output bytes and the meter's sums
    are those of widening and narrowing element by element, on one thread and on the pool, with a NaN in a block, an
    odd-sized tail, and inputs whose memory is not 4-byte aligned (a tensor at an odd offset in its file)."""
    rng = np.random.default_rng(11)
    n = 3 * BlockPool.CHUNK_BLOCKS * kernels.sum_block() + 1239  # odd, and 3 columns
    base = rng.standard_normal(n).astype(np.float32)
    stored = []
    for _ in range(4):
        values = (base + 0.1 * rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))).astype(np.float32)
        raw = np.frombuffer(b"\0\0" + kernels.narrow(values, "BF16").tobytes(), np.uint16)[1:]  # 2-byte aligned
        stored.append(raw)
    assert stored[0].ctypes.data % 4 == 2
    stored[1] = stored[1].copy()
    stored[1][kernels.sum_block() * 3 + 5] = 0x7FC1  # a NaN
    base_in = (kernels.narrow(base, "BF16").reshape(-1, 3), "BF16")
    runs = {}
    pool = BlockPool(2)
    try:
        for paired in (False, True):
            monkeypatch.setattr(kernels, "PAIRS", paired)
            for use in (None, pool):
                meter = SimilarityMeter(["a", "b", "c", "d"], base="base")
                out = _mix_blocks(
                    "enc.weight", [s.reshape(-1, 3) for s in stored], ["BF16"] * 4, list(weights), "BF16", meter,
                    base_in, kernels.weighted_sum, pool=use,
                )  # fmt: skip
                runs[paired, use is not None] = (np.concatenate(list(out)), json.dumps(meter.state()))
    finally:
        pool.close()
    reference, reference_meter = runs[False, False]
    assert reference[kernels.sum_block() * 3 + 5] == 0x7FC0  # the canonical NaN
    for key, (out, meter_state) in runs.items():
        assert out.tobytes() == reference.tobytes(), key
        assert meter_state == reference_meter, key
    assert json.loads(reference_meter)["non_finite"] == {"b": ["enc.weight"]}
