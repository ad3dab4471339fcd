"""The soup engine on local folders: arithmetic, dtypes, shards, argument errors and atomic output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import (
    DiskFullError,
    IncompatibleIngredientsError,
    IngredientNotFoundError,
    InvalidSoupArgumentsError,
    MissingWeightsError,
    OutputExistsError,
)
from hfsoup.io.checkpoint import CheckpointReader
from hfsoup.testing.reference import max_relative_deviation, reference_average


def make_checkpoint(folder, seed, *, dtype=torch.float32, extra=None, shapes=None, base_seed=1234):
    """A "fine-tune": a shared random base (`base_seed`) plus 10% noise seeded by `seed`."""
    shapes = shapes or {"encoder.weight": (8, 6), "encoder.bias": (8,), "head.weight": (2, 8)}
    base, noise = torch.Generator().manual_seed(base_seed), torch.Generator().manual_seed(seed)
    tensors = {
        n: (torch.randn(*s, generator=base) * 3 + 1 + 0.3 * torch.randn(*s, generator=noise)).to(dtype)
        for n, s in shapes.items()
    }
    tensors["position_ids"] = torch.arange(6)
    tensors.update(extra or {})
    folder.mkdir(parents=True)
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (folder / "tokenizer.json").write_text(json.dumps({"seed": seed}))
    return folder


@pytest.fixture
def ingredients(tmp_path):
    return [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(3)]


def test_uniform_soup_matches_float64_reference(tmp_path, ingredients):
    result = hfsoup.soup(ingredients, tmp_path / "out")
    assert max_relative_deviation(result.output_dir, reference_average(ingredients)) < 1e-6
    with CheckpointReader(result.output_dir) as soup:
        assert torch.equal(soup.get("position_ids"), torch.arange(6))  # integer buffers copied, not averaged
    # Non-weight files come from the first ingredient, always.
    assert json.loads((result.output_dir / "tokenizer.json").read_text()) == {"seed": 0}
    provenance = json.loads(result.provenance_path.read_text())
    assert provenance["method"] == "uniform" and provenance["weights"] == pytest.approx([1 / 3] * 3)
    # Published with the soup: a local ingredient by its folder name and checksums, never its absolute path.
    assert [i["folder"] for i in provenance["ingredients"]] == [p.name for p in ingredients]
    assert str(ingredients[0].parent) not in result.provenance_path.read_text()
    assert provenance["hfsoup_version"] == hfsoup.__version__


def test_weighted_soup(tmp_path, ingredients):
    weights = [0.5, 0.3, 0.2]
    result = hfsoup.soup(ingredients, tmp_path / "out", options={"weights": weights})
    assert result.weights == tuple(weights)
    assert max_relative_deviation(result.output_dir, reference_average(ingredients, weights)) < 1e-6
    # ... and it really differs from the uniform soup.
    assert max_relative_deviation(result.output_dir, reference_average(ingredients)) > 1e-3


def test_output_dtype_and_sharding(tmp_path, ingredients):
    result = hfsoup.soup(ingredients, tmp_path / "out", dtype="bfloat16", max_shard_size="100B")
    with CheckpointReader(result.output_dir) as soup:
        assert soup.structure["encoder.weight"].dtype == "BF16" and soup.structure["position_ids"].dtype == "I64"
        assert soup.weight_map is not None and len(set(soup.weight_map.values())) >= 2
        reference = reference_average(ingredients)
        for name, ref in reference.items():
            assert torch.equal(soup.get(name), ref.to(torch.bfloat16))


def test_fp16_ingredients_stay_fp16(tmp_path):
    folders = [make_checkpoint(tmp_path / f"h{i}", seed=i, dtype=torch.float16) for i in range(2)]
    result = hfsoup.soup(folders, tmp_path / "out")
    with CheckpointReader(result.output_dir) as soup:
        for name, ref in reference_average(folders).items():
            assert soup.structure[name].dtype == "F16"
            assert torch.equal(soup.get(name), ref.to(torch.float16))


def test_structure_mismatches_are_all_listed(tmp_path, ingredients):
    odd = make_checkpoint(tmp_path / "odd", seed=9, shapes={"encoder.weight": (8, 7), "extra.weight": (2,)})
    with pytest.raises(IncompatibleIngredientsError) as info:
        hfsoup.soup([*ingredients, odd], tmp_path / "out")
    message = str(info.value)
    for fragment in ("encoder.bias", "head.weight", "extra.weight", "encoder.weight [8, 7] vs [8, 6]"):
        assert fragment in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("weights", "match"),
    [([0.5, 0.5], "2 weights"), ([0.5, 0.3, 0.3], "sums to 1.1"), ([1.2, -0.1, -0.1], "non-negative")],
)
def test_bad_weights(tmp_path, ingredients, weights, match):
    with pytest.raises(InvalidSoupArgumentsError, match=match):
        hfsoup.soup(ingredients, tmp_path / "out", options={"weights": weights})
    assert not (tmp_path / "out").exists()


def test_fewer_than_two_ingredients(tmp_path, ingredients):
    with pytest.raises(InvalidSoupArgumentsError, match="at least two"):
        hfsoup.soup(ingredients[:1], tmp_path / "out")


def test_existing_output_is_kept_unless_overwrite(tmp_path, ingredients):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        hfsoup.soup(ingredients, out)
    assert (out / "precious.txt").read_text() == "mine"
    # --overwrite replaces only what hfsoup wrote: this folder is the user's (issue 13).
    with pytest.raises(OutputExistsError, match="not written by hfsoup"):
        hfsoup.soup(ingredients, out, overwrite=True)
    assert (out / "precious.txt").read_text() == "mine"
    (out / "precious.txt").unlink()
    hfsoup.soup(ingredients, out, overwrite=True)  # an empty folder holds nothing to lose
    hfsoup.soup(ingredients[:2], out, overwrite=True)  # and a soup is replaced by another
    assert len(json.loads((out / "hfsoup.json").read_text())["ingredients"]) == 2


def test_failure_midway_leaves_nothing(tmp_path, ingredients, monkeypatch):
    from hfsoup.soups import engine

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine, "SafetensorsStreamWriter", broken)
    out = tmp_path / "deep" / "out"
    with pytest.raises(DiskFullError, match="No space left on the device"):
        hfsoup.soup(ingredients, out)
    assert not (tmp_path / "deep").exists()  # neither the output nor the parents this call created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft0", "ft1", "ft2"]


def test_pickle_only_needs_allow_pickle(tmp_path, ingredients):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    with CheckpointReader(ingredients[2]) as reader:
        torch.save({n: reader.get(n) for n in reader.structure}, pickled / "pytorch_model.bin")
    (pickled / "config.json").write_text((ingredients[2] / "config.json").read_text())
    with pytest.raises(MissingWeightsError, match="--allow-pickle"):
        hfsoup.soup([*ingredients[:2], pickled], tmp_path / "out")
    result = hfsoup.soup([*ingredients[:2], pickled], tmp_path / "out", allow_pickle=True)
    assert max_relative_deviation(result.output_dir, reference_average(ingredients)) < 1e-6


def test_missing_local_folder(tmp_path, ingredients):
    with pytest.raises(IngredientNotFoundError, match="no such folder"):
        hfsoup.soup([ingredients[0], "./does/not/exist"], tmp_path / "out")


def test_cli_prints_one_paragraph_and_exits_1(tmp_path, ingredients, capsys):
    out = tmp_path / "out"
    code = main(["soup", *map(str, ingredients), "-o", str(out), "--weights", "0.5,0.5"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Error: Got 2 weights") and "Traceback" not in err
    assert "HFSOUP_DEBUG=1" in err and not out.exists()


def test_cli_success_lists_pinned_ingredients(tmp_path, ingredients, capsys):
    assert main(["soup", *map(str, ingredients), "-o", str(tmp_path / "out"), "--weights", "0.2,0.3,0.5"]) == 0
    stdout = capsys.readouterr().out
    assert "uniform soup of 3 ingredients" in stdout and "0.5000" in stdout


def test_cli_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["soup", "a", "b"])  # no -o
    assert info.value.code == 2


def test_traceback_only_with_debug(tmp_path, ingredients):
    cmd = [sys.executable, "-m", "hfsoup.cli", "soup", str(ingredients[0]), "-o", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k != "HFSOUP_DEBUG"}
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env)
    loud = subprocess.run(cmd, capture_output=True, text=True, env={**env, "HFSOUP_DEBUG": "1"})
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr and "at least two" in quiet.stderr
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "InvalidSoupArgumentsError" in loud.stderr


def test_nan_or_inf_in_an_ingredient_is_refused(tmp_path, ingredients):
    bad = make_checkpoint(tmp_path / "bad", seed=7, extra={"nan.weight": torch.tensor([[1.0, float("nan")]])})
    fine = [make_checkpoint(tmp_path / f"ok{i}", seed=i, extra={"nan.weight": torch.ones(1, 2)}) for i in range(2)]
    with pytest.raises(IncompatibleIngredientsError, match="NaN or Inf values in 1 tensors, e.g. nan.weight"):
        hfsoup.soup([*fine, bad], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_cpu_soup_path_imports_neither_torch_nor_transformers(tmp_path, ingredients):
    """Start-up matters for souping (issue 4): a CPU soup runs on numpy, safetensors and huggingface_hub alone;
    importing torch would cost more than the soup of a BERT-base."""
    code = (
        "import sys, hfsoup; "
        f"hfsoup.soup({[str(p) for p in ingredients]!r}, {str(tmp_path / 'out')!r}, device='cpu'); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'evaluate', 'accelerate') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, ingredients):
    with pytest.raises(InvalidSoupArgumentsError, match="torch sees no CUDA GPU") as info:
        hfsoup.soup(ingredients, tmp_path / "out", device="cuda")
    assert "--device cpu" in info.value.fix
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_soup_matches_the_cpu_soup(tmp_path, ingredients):
    on_cpu = hfsoup.soup(ingredients, tmp_path / "cpu", device="cpu")
    on_gpu = hfsoup.soup(ingredients, tmp_path / "gpu", device="cuda")
    assert max_relative_deviation(on_gpu.output_dir, reference_average(ingredients)) < 1e-6
    with CheckpointReader(on_cpu.output_dir) as cpu, CheckpointReader(on_gpu.output_dir) as gpu:
        for name in cpu.structure:
            assert torch.allclose(cpu.get(name).double(), gpu.get(name).double(), rtol=0, atol=1e-6), name
