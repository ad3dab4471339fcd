"""The data-free merge methods (issue 17): task arithmetic, TIES, DARE, SLERP, Model Stock and WiSE-FT.

Each soup is compared with a float64 transcription of the method's definition written here, from the README's
formulas, with numpy and torch only (none of hfsoup's kernels), on the tiny BERT, T5 and CLIP families: every float
tensor within float32 rounding. DARE is random: its outputs are checked for what the definition promises (each entry
of a single task vector is 0 or `delta / density`, the kept share within 3 standard deviations of `density`), and
for the documented seeding (`SeedSequence([seed, i, sha256(name)[:8]])`), fixed bytes for a fixed seed, and the same
bytes from two processes as from one. Bad input is refused in one paragraph, exit 1, before any weights download.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import InvalidSoupArgumentsError, RecipeError
from hfsoup.recipe import parse_recipe
from hfsoup.testing.reference import dare_keep as reference_dare_keep
from hfsoup.testing.reference import elect_mean, merge_reference

from .test_engine_runs import _free_port
from .test_soup_hub import _assert_clean_failure, publish

KINDS = ("bert", "t5", "clip")
#: float32 arithmetic against a float64 transcription, relative to each tensor's largest entry.
TOLERANCE = 1e-5


# ---- the float64 transcriptions ----------------------------------------------------------------------------------


def weights_of(folder: Path) -> dict[str, np.ndarray]:
    """Every float tensor of a single-file checkpoint, as float64."""
    return {n: t.astype(np.float64) for n, t in load_file(folder / "model.safetensors").items() if t.dtype.kind == "f"}


def ref_task_arithmetic(base, thetas, weights=None, scale=1.0):
    weights = weights or [1.0] * len(thetas)
    return {n: base[n] + scale * sum(w * (t[n] - base[n]) for w, t in zip(weights, thetas, strict=True)) for n in base}


def ref_wise_ft(base, thetas, alpha):
    return {n: (1 - alpha) * base[n] + alpha * sum(t[n] for t in thetas) / len(thetas) for n in base}


def _topk_mask(delta: np.ndarray, density: float) -> np.ndarray:
    k = int(density * delta.size)
    mask = torch.zeros(delta.size, dtype=torch.bool)
    if k:
        mask[torch.topk(torch.from_numpy(np.abs(delta).ravel()), k).indices] = True
    return mask.numpy().reshape(delta.shape)


def ref_ties(base, thetas, density=0.2, scale=1.0):
    out = {}
    for n in base:
        deltas = [t[n] - base[n] for t in thetas]
        trimmed = [np.where(_topk_mask(d, density), d, 0.0) for d in deltas]
        out[n] = base[n] + scale * elect_mean(trimmed)
    return out


def dare_keep(seed: int, name: str, i: int, shape, density: float) -> np.ndarray:
    """The documented mask (`hfsoup.testing.reference.dare_keep`: raw PCG64 words, two 32-bit words each)."""
    return reference_dare_keep(seed, name, i, int(np.prod(shape)), density).reshape(shape)


def ref_dare(base, thetas, density, seed, *, ties, weights=None, scale=1.0):
    out = {}
    for n in base:
        dropped = [
            np.where(dare_keep(seed, n, i, base[n].shape, density), (t[n] - base[n]) / density, 0.0)
            for i, t in enumerate(thetas)
        ]
        merged = (
            elect_mean(dropped)
            if ties
            else sum(w * d for w, d in zip(weights or [1.0] * len(thetas), dropped, strict=True))
        )
        out[n] = base[n] + scale * merged
    return out


def ref_slerp(a, b, t):
    out = {}
    for n in a:
        x, y = a[n].ravel(), b[n].ravel()
        cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
        if abs(cos) > 0.9995:
            out[n] = (1 - t) * a[n] + t * b[n]
        else:
            omega = math.acos(cos)
            out[n] = (math.sin((1 - t) * omega) * a[n] + math.sin(t * omega) * b[n]) / math.sin(omega)
    return out


def ref_model_stock(base, thetas):
    return {n: merge_reference("model-stock", base[n], [t[n] for t in thetas], n) for n in base}


def deviation(folder: Path, reference: dict[str, np.ndarray]) -> float:
    """max |soup - ref| / max |ref| over every float tensor (the soup must hold exactly the reference's)."""
    got = weights_of(folder)
    assert set(got) == set(reference)
    return max(float(np.abs(got[n] - r).max()) / (float(np.abs(r).max()) or 1.0) for n, r in reference.items())


# ---- each method against its definition ----------------------------------------------------------------------------


CASES = {
    "task-arithmetic": ({"weights": [1.0, 0.5, -0.25], "scale": 0.8}, ref_task_arithmetic),
    "ties": ({"density": 0.3, "scale": 1.5}, ref_ties),
    "model-stock": ({}, ref_model_stock),
    "wise-ft": ({"alpha": 0.3}, ref_wise_ft),
    "dare-linear": ({"density": 0.4, "seed": 7, "weights": [1.0, 0.5, 2.0], "scale": 0.9}, None),
    "dare-ties": ({"density": 0.4, "seed": 3}, None),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", list(CASES))
def test_method_matches_its_float64_definition(families, tmp_path, kind, method):
    family = families[kind]
    options, reference = CASES[method]
    result = hfsoup.soup(family.finetunes, tmp_path / "soup", method=method, options=options, base=family.base)
    base, thetas = weights_of(family.base), [weights_of(f) for f in family.finetunes]
    if method.startswith("dare"):
        expected = ref_dare(base, thetas, ties=method == "dare-ties", **options)
    else:
        expected = reference(base, thetas, **options)
    assert deviation(result.output_dir, expected) < TOLERANCE
    # Not the uniform soup: the transcription tells the methods apart.
    uniform = {n: sum(t[n] for t in thetas) / len(thetas) for n in base}
    assert deviation(result.output_dir, uniform) > 100 * TOLERANCE
    provenance = json.loads((result.output_dir / "hfsoup.json").read_text())
    assert provenance["method"] == method and provenance["base"]["folder"] == "base"
    if options:
        assert provenance[method] == {**hfsoup.soups.SOUPS[method]().options.__dict__, **options}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_slerp_matches_its_definition(families, tmp_path, kind, t):
    a, b = families[kind].finetunes[:2]
    result = hfsoup.soup([a, b], tmp_path / "soup", method="slerp", options={"t": t})
    expected = ref_slerp(weights_of(a), weights_of(b), t)
    assert deviation(result.output_dir, expected) < TOLERANCE
    if 0 < t < 1:  # the fine-tunes are not parallel: the great circle is not the chord
        chord = {n: (1 - t) * weights_of(a)[n] + t * weights_of(b)[n] for n in expected}
        assert deviation(result.output_dir, chord) > 10 * TOLERANCE


def test_slerp_falls_back_to_linear_when_parallel(families, tmp_path):
    # A fine-tune and its float16 copy are parallel to within float16 rounding: the linear interpolation is used.
    a, b = families["bert"].finetunes[0], families["bert"].troublemakers["fp16"][0]
    result = hfsoup.soup([a, b], tmp_path / "soup", method="slerp", options={"t": 0.4}, dtype="float32")
    wa, wb = weights_of(a), weights_of(b)
    assert deviation(result.output_dir, {n: 0.6 * wa[n] + 0.4 * wb[n] for n in wa}) < TOLERANCE


def test_slerp_layer_schedule(families, tmp_path):
    a, b = families["t5"].finetunes[:2]
    schedule = [0.0, 1.0]
    result = hfsoup.soup([a, b], tmp_path / "soup", method="slerp", options={"t": 0.5, "t_schedule": schedule})
    wa, wb = weights_of(a), weights_of(b)
    got = weights_of(result.output_dir)
    stacks: dict[str, int] = {}
    for n in wa:  # T5: encoder.block.N. and decoder.block.N., each its own stack
        if ".block." in n:
            stack, index = n.split(".block.")[0], int(n.split(".block.")[1].split(".")[0])
            stacks[stack] = max(stacks.get(stack, 0), index + 1)
    assert set(stacks) == {"encoder", "decoder"} and min(stacks.values()) >= 2
    for n in wa:
        if ".block." in n:
            stack, index = n.split(".block.")[0], int(n.split(".block.")[1].split(".")[0])
            t = index / (stacks[stack] - 1)
        else:
            t = 0.5
        expected = ref_slerp({n: wa[n]}, {n: wb[n]}, t)[n]
        assert np.abs(got[n] - expected).max() / np.abs(expected).max() < TOLERANCE, n
    # The first layer of each stack is the first ingredient's, the last the second's.
    assert np.array_equal(
        got["encoder.block.0.layer.0.SelfAttention.q.weight"], wa["encoder.block.0.layer.0.SelfAttention.q.weight"]
    )


def test_wise_ft_of_one_fine_tune(families, tmp_path, capsys):
    # The usual WiSE-FT: one fine-tuned CLIP and the zero-shot model it came from.
    family = families["clip"]
    out = tmp_path / "soup"
    args = ["soup", str(family.finetunes[0]), "-o", str(out), "--method", "wise-ft", "--base", str(family.base)]
    assert main([*args, "--alpha", "0.4"]) == 0
    expected = ref_wise_ft(weights_of(family.base), [weights_of(family.finetunes[0])], 0.4)
    assert deviation(out, expected) < TOLERANCE
    capsys.readouterr()
    assert main(["soup", str(family.finetunes[0]), "-o", str(tmp_path / "alone")]) == 1
    assert "at least two ingredients; got 1" in capsys.readouterr().err


def test_a_base_leaves_the_uniform_soup_alone_and_is_measured(families, tmp_path):
    family = families["t5"]
    plain = hfsoup.soup(family.finetunes, tmp_path / "plain")
    based = hfsoup.soup(family.finetunes, tmp_path / "based", base=family.base)
    assert (plain.output_dir / "model.safetensors").read_bytes() == (
        based.output_dir / "model.safetensors"
    ).read_bytes()
    similarity = based.report.similarity
    assert similarity.base and len(similarity.body_cosine_to_base) == 3
    assert min(similarity.body_cosine_to_base) > 0.9  # fine-tunes of this base
    assert json.loads((based.output_dir / "hfsoup.json").read_text())["base"]["folder"] == "base"


def _correlated(root: Path, n: int = 3) -> tuple[Path, list[Path]]:
    """A base and fine-tunes whose task vectors share a direction (cosine about 0.5): Model Stock's t is far from 0."""
    rng = np.random.default_rng(0)
    shapes = {"encoder.weight": (40, 30), "encoder.bias": (40,), "head.weight": (2, 40)}
    base = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    shared = {k: rng.normal(size=s) * 0.1 for k, s in shapes.items()}

    def save(folder: Path, tensors):
        folder.mkdir(parents=True)
        save_file({**tensors, "position_ids": np.arange(6)}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
        return folder

    fts = [
        save(
            root / f"ft{i}",
            {k: (v + shared[k] + rng.normal(size=v.shape) * 0.1).astype(np.float32) for k, v in base.items()},
        )
        for i in range(n)
    ]
    return save(root / "base", base), fts


def test_model_stock_with_agreeing_task_vectors(tmp_path):
    base, fts = _correlated(tmp_path)
    result = hfsoup.soup(fts, tmp_path / "soup", method="model-stock", base=base)
    wb, thetas = weights_of(base), [weights_of(f) for f in fts]
    assert deviation(result.output_dir, ref_model_stock(wb, thetas)) < TOLERANCE
    # t = 3 cos / (1 + 2 cos) with cos near 0.5: about 0.75 of the way from the base to the fine-tunes' mean.
    got, mean = weights_of(result.output_dir), sum(t["encoder.weight"] for t in thetas) / 3
    t = float(np.sum((got["encoder.weight"] - wb["encoder.weight"]) * (mean - wb["encoder.weight"])))
    t /= float(np.sum((mean - wb["encoder.weight"]) ** 2))
    assert 0.6 < t < 0.9


def test_a_bare_base_maps_names_and_the_head_is_averaged(families, tmp_path):
    # A base saved as a bare BertModel: no `bert.` prefix and no classifier.
    family = families["bert"]
    bare = tmp_path / "bare"
    shutil.copytree(family.base, bare)
    tensors = load_file(family.base / "model.safetensors")
    stripped = {n.split(".", 1)[1]: t for n, t in tensors.items() if n.startswith("bert.")}
    save_file(stripped, str(bare / "model.safetensors"))
    result = hfsoup.soup(family.finetunes, tmp_path / "soup", method="task-arithmetic", base=bare)
    base, thetas = weights_of(family.base), [weights_of(f) for f in family.finetunes]
    expected = ref_task_arithmetic(base, thetas)
    for n in base:
        if not n.startswith("bert."):  # the classifier: the ingredients' mean
            expected[n] = sum(t[n] for t in thetas) / 3
    assert any(not n.startswith("bert.") for n in base)
    assert deviation(result.output_dir, expected) < TOLERANCE
    provenance = json.loads((result.output_dir / "hfsoup.json").read_text())
    assert provenance["base"]["missing_tensors"] == sorted(n for n in base if not n.startswith("bert."))


# ---- DARE: what the definition promises, and its seeding ----------------------------------------------------------


@pytest.mark.parametrize("method", ["dare-linear", "dare-ties"])
def test_dare_entries_are_dropped_or_rescaled(families, tmp_path, method):
    # A single task vector: ft0 and the base itself (whose task vector is zero).
    family, density = families["bert"], 0.3
    result = hfsoup.soup(
        [family.finetunes[0], family.base],
        tmp_path / "soup",
        method=method,
        options={"density": density},
        base=family.base,
    )
    base, theta, got = weights_of(family.base), weights_of(family.finetunes[0]), weights_of(result.output_dir)
    kept = total = 0
    for n in base:
        delta, change = theta[n] - base[n], got[n] - base[n]
        scale = np.abs(delta).max() / density
        dropped = change == 0
        rescaled = np.abs(change - delta / density) <= 1e-6 * scale + 1e-6 * np.abs(base[n])
        assert np.all(dropped | rescaled), n
        kept += int((~dropped & (delta != 0)).sum())
        total += int((delta != 0).sum())
    sd = math.sqrt(total * density * (1 - density))
    assert abs(kept - density * total) < 3 * sd, (kept, total)


def test_dare_fixed_seed_gives_fixed_bytes(families, tmp_path):
    family = families["clip"]
    runs = [
        hfsoup.soup(
            family.finetunes, tmp_path / f"run{i}", method="dare-ties", options={"seed": seed}, base=family.base
        )
        for i, seed in enumerate([5, 5, 6])
    ]
    first, again, other = ((r.output_dir / "model.safetensors").read_bytes() for r in runs)
    assert first == again and first != other


def test_dare_two_processes_give_the_same_bytes_as_one(families, tmp_path):
    family = families["bert"]
    args = [*map(str, family.finetunes), "--method", "dare-linear", "--base", str(family.base), "--dare-seed", "11"]
    args += ["--max-shard-size", "40KB"]
    assert main(["-q", "soup", *args, "-o", str(tmp_path / "single")]) == 0
    single = tmp_path / "single"
    assert len(list(single.glob("*.safetensors"))) >= 3
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "hfsoup.cli",
        "-q",
        "soup",
        *args,
        "-o",
        str(tmp_path / "double"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HFSOUP_DEBUG": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for shard in sorted(single.glob("*.safetensors")):
        assert (tmp_path / "double" / shard.name).read_bytes() == shard.read_bytes(), shard.name


# ---- the command line, recipes and the card ------------------------------------------------------------------------


def test_shared_flags_reach_the_chosen_method(families, tmp_path, capsys):
    family = families["bert"]
    out = tmp_path / "soup"
    args = ["soup", *map(str, family.finetunes), "-o", str(out), "--base", str(family.base)]
    assert main([*args, "--method", "task-arithmetic", "--weights", "1,0.5,-0.25", "--scale", "0.8"]) == 0
    assert "  base    base  (local folder base)" in capsys.readouterr().out
    base, thetas = weights_of(family.base), [weights_of(f) for f in family.finetunes]
    assert deviation(out, ref_task_arithmetic(base, thetas, [1.0, 0.5, -0.25], 0.8)) < TOLERANCE
    card = str(hfsoup.build_card(hfsoup.read_soup_folder(out), repo_id="me/ta"))
    assert "--method task-arithmetic" in card and "--base ./base" in card and "--weights 1,0.5,-0.25" in card
    assert "--scale 0.8" in card and hfsoup.soups.SOUPS["task-arithmetic"].description in card
    capsys.readouterr()
    # A shared flag is still refused for a method that does not have it.
    assert main([*args, "-o", str(tmp_path / "bad"), "--density", "0.5"]) == 1
    assert "--density is an option of the ties method, not uniform" in capsys.readouterr().err


def test_recipe_with_a_base(families, tmp_path, capsys):
    family = families["bert"]
    recipe = {
        "ingredients": [str(f) for f in family.finetunes],
        "base": str(family.base),
        "method": {"name": "ties", "density": 0.5},
        "output": {"dir": str(tmp_path / "cooked")},
    }
    path = tmp_path / "ties.yaml"
    path.write_text(json.dumps(recipe))
    assert main(["cook", str(path)]) == 0
    base, thetas = weights_of(family.base), [weights_of(f) for f in family.finetunes]
    assert deviation(tmp_path / "cooked", ref_ties(base, thetas, density=0.5)) < TOLERANCE
    with pytest.raises(RecipeError) as info:
        parse_recipe({k: v for k, v in recipe.items() if k != "base"}, source=path)
    assert info.value.problems[0].startswith("base: the ties method merges task vectors")
    with pytest.raises(RecipeError) as info:
        parse_recipe({**recipe, "method": {"name": "slerp"}}, source=path)
    assert info.value.problems == ["method.method: slerp interpolates exactly 2 ingredients, got 3"]
    # Scored on a task (tests/test_merge_select.py cooks one): the recipe is valid.
    assert parse_recipe({**recipe, "evaluation": {"task": "sst2"}}, source=path).evaluation.task == "sst2"


# ---- bad input: one paragraph, exit 1, nothing downloaded ----------------------------------------------------------


def _weights_downloaded(local_hub) -> int:
    from huggingface_hub import constants

    cached = [p for p in Path(constants.HF_HUB_CACHE).rglob("*.safetensors") if p.is_file()]
    return len(cached)


@pytest.fixture
def bert_repos(local_hub, families):
    bert = families["bert"]
    return {
        "ft": [publish(f, f"bert-ft{i}") for i, f in enumerate(bert.finetunes)],
        "base": publish(bert.base, "bert-base"),
        "other_shape": publish(bert.troublemakers["num_labels"], "bert-3-labels"),
    }


@pytest.mark.parametrize(
    ("extra", "n", "fragments"),
    [
        (
            ["--method", "ties"],
            2,
            ["A ties soup is defined relative to the pretrained model", "--base org/pretrained"],
        ),
        (
            ["--method", "model-stock", "--base", "{other_shape}"],
            2,
            ["has tensor 'classifier.bias' of shape [3], where the ingredients' 'classifier.bias' has shape [2]"],
        ),
        (["--method", "slerp"], 3, ["slerp interpolates exactly 2 ingredients, got 3"]),
        (["--method", "ties", "--base", "{base}", "--density", "0"], 2, ["expected a number above 0 and at most 1"]),
        (["--method", "dare-ties", "--base", "{base}", "--density", "1.5"], 2, ["got 1.5", "--density 0.2"]),
    ],
)
def test_bad_input_is_refused_before_any_download(
    bert_repos, local_hub, families, tmp_path, capsys, extra, n, fragments
):
    out = tmp_path / "out"
    start = len(local_hub.traffic)
    args = ["soup", *bert_repos["ft"][:n], "-o", str(out), *(a.format(**bert_repos) for a in extra)]
    code = main(args)
    err = capsys.readouterr().err
    _assert_clean_failure(code, err, out, *fragments)
    assert _weights_downloaded(local_hub) == 0
    if "{other_shape}" not in extra:  # refused from the arguments alone: not one request to the Hub
        assert list(local_hub.traffic)[start:] == []


def test_api_refuses_a_missing_base_before_touching_the_ingredients(tmp_path):
    missing = [tmp_path / "nowhere-a", tmp_path / "nowhere-b"]  # not even there: the base is asked for first
    with pytest.raises(InvalidSoupArgumentsError, match="no base was given"):
        hfsoup.soup(missing, tmp_path / "out", method="task-arithmetic")


def test_merge_baselines_are_refused_where_they_cannot_run(families, tmp_path, capsys):
    """Merges are scored baselines when named (tests/test_merge_select.py), but one relative to a base needs it, and
    SLERP takes two ingredients: both refused before any scoring."""
    family = families["bert"]
    args = ["soup", *map(str, family.finetunes), "-o", str(tmp_path / "out"), "--task", "sst2"]
    assert main([*args, "--method", "greedy", "--compare", "uniform,ties"]) == 1
    assert "The ties baseline merges task vectors" in capsys.readouterr().err
    assert main([*args, "--method", "greedy", "--compare", "uniform,slerp"]) == 1
    assert "Invalid slerp baseline: slerp interpolates exactly 2 ingredients" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


GPU_METHODS = ["task-arithmetic", "ties", "dare-ties", "slerp", "model-stock", "wise-ft"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", GPU_METHODS)
def test_gpu_merge_matches_the_definition(families, tmp_path, method):
    # The linear combinations go through the GPU's accumulator; the result is still the definition's.
    _torch_accumulated(families, tmp_path, method, device="cuda")


@pytest.mark.parametrize("method", GPU_METHODS)
def test_the_torch_accumulator_path_matches_the_definition(families, tmp_path, monkeypatch, method):
    # Where there is no GPU: the same torch accumulator a GPU soup uses, on the CPU device, through every merge.
    from hfsoup.soups import engine, kernels

    calls = []

    class Counted(kernels.TorchAccumulator):
        def __call__(self, blocks, weights):
            calls.append(len(blocks))
            return super().__call__(blocks, weights)

    monkeypatch.setattr(engine, "accumulator", lambda device: Counted("cpu"))
    _torch_accumulated(families, tmp_path, method, device="cpu")
    assert calls  # every final combination went through it


def _torch_accumulated(families, tmp_path, method, *, device):
    family = families["bert"]
    folders = family.finetunes[:2] if method == "slerp" else family.finetunes
    base_arg = None if method == "slerp" else family.base
    result = hfsoup.soup(folders, tmp_path / "soup", method=method, base=base_arg, device=device)
    base, thetas = weights_of(family.base), [weights_of(f) for f in folders]
    expected = {
        "task-arithmetic": lambda: ref_task_arithmetic(base, thetas),
        "ties": lambda: ref_ties(base, thetas),
        "dare-ties": lambda: ref_dare(base, thetas, 0.2, 0, ties=True),
        "slerp": lambda: ref_slerp(thetas[0], thetas[1], 0.5),
        "model-stock": lambda: ref_model_stock(base, thetas),
        "wise-ft": lambda: ref_wise_ft(base, thetas, 0.5),
    }[method]()
    assert deviation(result.output_dir, expected) < TOLERANCE


def test_an_ingredient_not_from_the_base_is_refused(families, tmp_path, capsys):
    # The base is measured against every ingredient, as `hfsoup check --base` does: the impostor is named.
    bert = families["bert"]
    out = tmp_path / "out"
    args = ["soup", str(bert.finetunes[0]), str(bert.troublemakers["impostor"]), "-o", str(out)]
    assert main([*args, "--method", "task-arithmetic", "--base", str(bert.base)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    # The base decides which of the two is the sibling: only the impostor is named, with both findings.
    assert "impostor: does not share an initialization" in err and "was not fine-tuned from" in err, err
    assert "ft0:" not in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("numel", [1, 7, 1000, 3 * (1 << 18) + 5])
@pytest.mark.parametrize("density", [0.01, 0.2, 1.0])
@pytest.mark.parametrize("gather", [None, 1])  # 1: refine digit by digit down to single values
def test_streamed_ties_threshold_is_the_kth_largest_magnitude(numel, density, gather, monkeypatch):
    from hfsoup.soups import kernels, merge

    if gather is not None:
        monkeypatch.setattr(merge, "_GATHER", gather)
    from hfsoup.soups.merge import TensorInputs, magnitude_thresholds

    rng = np.random.default_rng(numel)
    base = rng.standard_normal(numel).astype(np.float32)
    thetas = [base + rng.standard_normal(numel).astype(np.float32) * 1e-3 for _ in range(2)]
    thetas.append(base + np.round(rng.standard_normal(numel) * 4).astype(np.float32))  # many exact ties
    thetas.append(base.copy())  # a zero task vector
    inputs = TensorInputs("t", thetas, ["F32"] * 4, (base, "F32"), np.dtype(np.float32), kernels.weighted_sum)
    got = magnitude_thresholds(inputs, density)
    k = int(density * numel)
    for theta, threshold in zip(thetas, got, strict=True):
        magnitude = np.sort(np.abs(theta.astype(np.float64) - base))[::-1]
        assert threshold == (magnitude[k - 1] if k else math.inf)


def test_float32_sign_election_is_the_float64_one_where_the_task_vectors_cancel():
    """dare-ties elects in float32: where the sum nearly cancels, the float64 sums decide (`merge.elect`)."""
    from hfsoup.soups.merge import elect

    rng = np.random.default_rng(0)
    n = 100_000
    base = rng.standard_normal(n).astype(np.float32)
    a = (base + rng.standard_normal(n)).astype(np.float32)
    # b's and c's task vectors nearly cancel a's: the float32 sum rounds to 0 or to the other sign in many entries.
    b = (base - (a.astype(np.float64) - base) * 0.5 + rng.standard_normal(n) * 1e-7).astype(np.float32)
    c = (2 * base.astype(np.float64) - b).astype(np.float32)
    c[::3] = (base[::3] + np.float32(2.0) ** -24).astype(np.float32)
    thetas = [a, b, c, b]
    exact = [t.astype(np.float64) - base.astype(np.float64) for t in thetas]
    reference = elect_mean(exact)

    def float32_election(check: bool) -> np.ndarray:
        deltas = [np.subtract(t, base) for t in thetas]
        total = (lambda where: sum(d[where] for d in exact)) if check else None
        return elect(deltas, total).astype(np.float64)

    scale = np.abs(reference).max()
    assert np.abs(float32_election(True) - reference).max() <= 1e-6 * scale
    # Without the float64 sums the float32 election picks other signs here: the check is what makes it exact.
    assert np.abs(float32_election(False) - reference).max() > 1e-2 * scale


def test_slerp_decides_near_the_parallel_threshold_in_float64(monkeypatch):
    """SLERP's cosine is float32 products summed in float64; near the fallback's threshold float64 decides."""
    from hfsoup.soups import kernels, slerp
    from hfsoup.soups.merge import TensorInputs

    rng = np.random.default_rng(0)
    a = rng.standard_normal(5000)
    noise = rng.standard_normal(5000)
    noise -= (noise @ a) / (a @ a) * a  # orthogonal to a: cos(a, a + s noise) is set by s alone
    target = 1 - slerp.PARALLEL + 1e-6  # just parallel enough for the linear fallback
    s = math.sqrt(1 / target**2 - 1) * np.linalg.norm(a) / np.linalg.norm(noise)
    b = a + s * noise
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert abs(cos - target) < 1e-9
    dtypes = []
    real_dots = slerp._dots
    monkeypatch.setattr(slerp, "_dots", lambda inputs, dtype: dtypes.append(dtype) or real_dots(inputs, dtype))
    pair = [a.astype(np.float32), b.astype(np.float32)]
    inputs = TensorInputs("w", pair, ["F32"] * 2, None, np.dtype(np.float32), kernels.weighted_sum)
    out = np.concatenate(list(slerp.SlerpMerge(0.5, None).merge(inputs)))
    assert dtypes == [None, np.float64]
    wide = [p.astype(np.float64) for p in pair]
    assert np.allclose(out, merge_reference("slerp", None, wide, "w", t=0.5), rtol=0, atol=1e-6)
