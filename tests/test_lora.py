"""LoRA adapters as soup ingredients (`hfsoup.io.adapter`), checked against peft's own merge.

Every adapter here is made by peft (`get_peft_model`, its B matrices set nonzero, `save_pretrained`), and the
reference of every soup is the float64 mean of peft's `merge_and_unload()` of each ingredient: an independent
implementation of the merge. Bad input is refused with a clear error, exit 1, and no weights downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import IncompatibleIngredientsError, OutputCollisionError
from hfsoup.io.adapter import InvalidAdapterError
from hfsoup.io.soupfolder import read_soup_folder
from hfsoup.publish.card import build_card
from hfsoup.soups import kernels
from hfsoup.testing.families import build_family, publish_folder

peft = pytest.importorskip("peft")

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_family("bert", tmp_path_factory.mktemp("lora-family"), n_finetunes=1, seed=0)


def make_adapter(
    base: Path,
    out: Path,
    *,
    seed: int,
    names_base: str | None = None,
    merged_to: Path | None = None,
    keep_card: bool = False,
    **lora: object,
) -> dict[str, np.ndarray]:
    """Save a peft LoRA adapter of `base` (B random, nonzero) to `out`; return peft's merge of it, in float64 (and
    save that merged model to `merged_to`)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base)
    options = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"], **lora}
    wrapped = peft.get_peft_model(model, peft.LoraConfig(**options))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.05
            if param.requires_grad and "lora_" in name:  # B too: nonzero, as after training
                param.copy_(noise)
            elif param.requires_grad:  # a module to save, a bias: trained from the base's values
                param.add_(noise * 0.1)
    wrapped.save_pretrained(out)
    if not keep_card:  # peft's card names the base by the path given, which the Hub refuses as metadata
        (out / "README.md").unlink()
    if names_base is not None:
        _edit_config(out, base_model_name_or_path=names_base)
    merged = wrapped.merge_and_unload()
    if merged_to is not None:
        merged.save_pretrained(merged_to)
        shutil.copy(base / "tokenizer.json", merged_to)
        shutil.copy(base / "tokenizer_config.json", merged_to)
    return {k: v.detach().double().numpy() for k, v in merged.state_dict().items()}


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def full_state(folder: Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in load_file(folder / "model.safetensors").items()}


def assert_soup_is_mean(out: Path, states: list[dict[str, np.ndarray]]) -> None:
    soup = load_file(out / "model.safetensors")
    floats = {k for k, v in soup.items() if np.issubdtype(v.dtype, np.floating)}
    expected = {k for k, v in states[0].items() if np.issubdtype(v.dtype, np.floating)}
    assert floats == expected
    for name in sorted(floats):
        mean = np.mean([s[name] for s in states], axis=0)
        assert soup[name].shape == mean.shape, name
        err = float(np.max(np.abs(soup[name].astype(np.float64) - mean)))
        assert err <= TOLERANCE, (name, err)


@pytest.fixture
def work(tmp_path, monkeypatch, family):
    """A folder holding a copy of the base (as `base`), made the current folder: adapters name it `base`."""
    shutil.copytree(family.base, tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    # Blocks that end in the middle of a row, and many per tensor: a merged tensor is computed a block's rows at a
    # time, and a tiny model's tensors would otherwise each fit one block.
    monkeypatch.setattr(kernels, "BLOCK", 1000)
    return tmp_path


def test_uniform_soup_of_three_adapters_is_the_mean_of_peft_merges(work):
    states = [make_adapter(work / "base", work / f"lora{i}", seed=i, names_base="base") for i in range(3)]
    result = hfsoup.soup(["lora0", "lora1", "lora2"], work / "out")
    assert_soup_is_mean(result.output_dir, states)
    # The base the configs name is an input: an output inside it is refused, before any work.
    with pytest.raises(OutputCollisionError, match="base"):
        hfsoup.soup(["lora0", "lora1"], work / "base" / "out")
    # The CPU soup path stays torch-free with adapters too.
    script = "import sys, hfsoup; hfsoup.soup(['lora0', 'lora1'], 'cpu'); print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(hfsoup.__file__).parent.parent)}
    assert subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True).stdout == "False\n"
    # The merged model is the base's: its config and tokenizer, loadable as the base loads.
    assert json.loads((result.output_dir / "config.json").read_text()) == json.loads(
        (work / "base" / "config.json").read_text()
    )
    provenance = json.loads((result.output_dir / "hfsoup.json").read_text())
    for record in provenance["ingredients"]:
        assert record["adapter"]["type"] == "lora"
        assert record["adapter"]["base"]["spec"] == "base"
        assert "adapter_model.safetensors" in record["checksums"]


def test_mixed_soup_of_two_adapters_and_a_full_finetune(work, family):
    states = [make_adapter(work / "base", work / f"lora{i}", seed=10 + i, names_base="base") for i in range(2)]
    shutil.copytree(family.finetunes[0], work / "ft0")
    result = hfsoup.soup(["lora0", "ft0", "lora1"], work / "out")
    assert_soup_is_mean(result.output_dir, [states[0], full_state(work / "ft0"), states[1]])
    # `hfsoup check` measures the merged models: they share the base's initialization.
    report = hfsoup.check(["lora0", "ft0"])
    assert report.ok, report.format_table()
    assert report.similarity is not None
    # A greedy or weighted method reads the same expanded tensors: a weighted soup is the weighted mean.
    weighted = hfsoup.soup(["lora0", "ft0"], work / "w", options={"weights": [0.25, 0.75]})
    soup = load_file(weighted.output_dir / "model.safetensors")
    ft = full_state(work / "ft0")
    for name in ("bert.encoder.layer.0.attention.self.query.weight", "classifier.weight"):
        assert np.max(np.abs(soup[name] - (0.25 * states[0][name] + 0.75 * ft[name]))) <= TOLERANCE


def test_merge_methods_see_the_merged_tensors(work):
    """TIES reads whole tensors (its trim and sign election): on adapters it is TIES of peft's merged models."""
    for i in range(2):
        make_adapter(work / "base", work / f"lora{i}", seed=40 + i, names_base="base", merged_to=work / f"m{i}")
    lora = hfsoup.soup(["lora0", "lora1"], work / "a", method="ties", base="base")
    full = hfsoup.soup(["m0", "m1"], work / "b", method="ties", base="base")
    got, want = load_file(lora.output_dir / "model.safetensors"), load_file(full.output_dir / "model.safetensors")
    assert got.keys() == want.keys()
    for name in got:
        assert np.max(np.abs(got[name].astype(np.float64) - want[name])) <= TOLERANCE, name


def test_a_greedy_soup_of_adapters_scores_the_merged_models(work, family):
    """Selection loads the base's model and scores the merged weights: the table and the soup are those of the
    same greedy soup of peft's merged models."""
    from hfsoup.testing.glue import write_glue_csv

    for i in range(2):
        make_adapter(work / "base", work / f"lora{i}", seed=50 + i, names_base="base", merged_to=work / f"m{i}")
    shutil.copytree(family.finetunes[0], work / "ft0")
    csv = write_glue_csv(work / "dev.csv", "sst2", 24)
    selection = hfsoup.Selection(task="sst2", data_files={"validation": [str(csv)]}, plot=False, compare=[])
    lora = hfsoup.soup(["lora0", "ft0", "lora1"], work / "a", method="greedy", selection=selection)
    full = hfsoup.soup(["m0", "ft0", "m1"], work / "b", method="greedy", selection=selection)
    # Accuracies on 12 held-out rows: merged weights 1e-8 apart make the same predictions.
    assert [(r.kind, r.held_out) for r in lora.results.rows] == [(r.kind, r.held_out) for r in full.results.rows]
    assert lora.weights == full.weights
    got, want = load_file(lora.output_dir / "model.safetensors"), load_file(full.output_dir / "model.safetensors")
    for name in got:
        assert np.max(np.abs(got[name].astype(np.float64) - want[name])) <= TOLERANCE, name


@pytest.mark.parametrize(
    "variant",
    [
        {"use_rslora": True, "r": 4, "lora_alpha": 6},
        {"rank_pattern": {"layer.1.attention.self.query": 2}, "alpha_pattern": {"value": 3}},
        {"modules_to_save": ["classifier"], "target_modules": ["query", "word_embeddings", "dense"]},
        {"bias": "lora_only"},
    ],
    ids=["rslora", "rank-alpha-pattern", "modules-to-save-embeddings", "bias"],
)
def test_lora_options_merge_as_peft_merges(work, variant):
    states = [
        make_adapter(work / "base", work / f"lora{i}", seed=20 + i, names_base="base", **variant) for i in range(2)
    ]
    result = hfsoup.soup(["lora0", "lora1"], work / "out")
    assert_soup_is_mean(result.output_dir, states)


def test_fan_in_fan_out_conv1d_gpt2(tmp_path, monkeypatch):
    """GPT-2 stores linear layers as (in, out) (`Conv1D`): c_attn is not square, c_proj is."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=99)).save_pretrained(
        tmp_path / "gpt2"
    )
    monkeypatch.chdir(tmp_path)
    states = []
    for i in range(2):
        model = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
        wrapped = peft.get_peft_model(model, config)
        with torch.no_grad():
            for param in (p for p in wrapped.parameters() if p.requires_grad):
                param.normal_(0, 0.05)
        wrapped.save_pretrained(tmp_path / f"lora{i}")
        (tmp_path / f"lora{i}" / "README.md").unlink()
        _edit_config(tmp_path / f"lora{i}", base_model_name_or_path="gpt2")
        states.append({k: v.double().numpy() for k, v in wrapped.merge_and_unload().state_dict().items()})
    result = hfsoup.soup(["lora0", "lora1"], tmp_path / "out")
    soup = load_file(result.output_dir / "model.safetensors")
    for name, value in soup.items():
        assert np.max(np.abs(value - (states[0][name] + states[1][name]) / 2)) <= TOLERANCE, name


def test_soup_of_adapters_on_the_local_hub(local_hub, tmp_path, family):
    base_id = publish_folder(family.base, "hfsoup-testing/bert-base")
    states, ids = [], []
    for i in range(2):
        states.append(make_adapter(family.base, tmp_path / f"lora{i}", seed=30 + i, names_base=base_id))
        ids.append(publish_folder(tmp_path / f"lora{i}", f"hfsoup-testing/lora{i}"))
    states.append(full_state(family.finetunes[0]))
    ids.append(publish_folder(family.finetunes[0], "hfsoup-testing/ft0"))
    result = hfsoup.soup(ids, tmp_path / "out")
    assert_soup_is_mean(result.output_dir, states)
    from huggingface_hub import HfApi

    base_sha = HfApi().model_info(base_id).sha
    provenance = json.loads((result.output_dir / "hfsoup.json").read_text())
    adapters = [r for r in provenance["ingredients"] if "adapter" in r]
    assert [r["sha"] for r in adapters] == [HfApi().model_info(i).sha for i in ids[:2]]
    assert {r["adapter"]["base"]["sha"] for r in adapters} == {base_sha}
    assert provenance["config_from"] == base_id
    # recipe.yaml pins the adapters' base (their configs name it without a revision), and remakes the same bytes.
    recipe = hfsoup.load_recipe(result.output_dir / "recipe.yaml")
    assert recipe.base == f"{base_id}@{base_sha}"
    again = hfsoup.cook_recipe(recipe, output_dir=tmp_path / "again")
    assert (again.output_dir / "model.safetensors").read_bytes() == (
        result.output_dir / "model.safetensors"
    ).read_bytes()
    card = str(build_card(read_soup_folder(result.output_dir), cards=[None, None, None]))
    assert f"merged into [{base_id}](/{base_id}) at `{base_sha}`" in card


def _downloaded(hf_home: Path) -> list[str]:
    """The weight files in the Hub cache (headers are read with Range requests, never cached)."""
    return sorted(p.name for p in hf_home.rglob("*.safetensors"))


def test_adapters_of_different_bases_are_refused(local_hub, hf_home, tmp_path, family):
    publish_folder(family.base, "hfsoup-testing/bert-base")
    publish_folder(family.troublemakers["impostor"], "hfsoup-testing/other-base")
    make_adapter(family.base, tmp_path / "a", seed=1, names_base="hfsoup-testing/bert-base")
    make_adapter(family.base, tmp_path / "b", seed=2, names_base="hfsoup-testing/other-base")
    ids = [publish_folder(tmp_path / n, f"hfsoup-testing/lora-{n}") for n in ("a", "b")]
    with pytest.raises(IncompatibleIngredientsError, match="different bases"):
        hfsoup.soup(ids, tmp_path / "out")
    assert main(["soup", *ids, "-o", str(tmp_path / "out")]) == 1
    # --base names another repo than the adapter's config: refused too.
    assert main(["soup", ids[0], "hfsoup-testing/bert-base", "-o", str(tmp_path / "o"), "--base",
                 "hfsoup-testing/other-base"]) == 1  # fmt: skip
    assert _downloaded(hf_home) == []
    assert not (tmp_path / "out").exists()


def test_config_rank_its_tensors_do_not_have_is_refused_from_headers(local_hub, hf_home, tmp_path, family):
    base_id = publish_folder(family.base, "hfsoup-testing/bert-base")
    for n in ("a", "b"):
        make_adapter(family.base, tmp_path / n, seed=3, names_base=base_id)
    _edit_config(tmp_path / "b", r=8)
    ids = [publish_folder(tmp_path / n, f"hfsoup-testing/lora-{n}") for n in ("a", "b")]
    with pytest.raises(InvalidAdapterError) as caught:
        hfsoup.soup(ids, tmp_path / "out")
    assert any("names rank 8" in p and "rank 4" in p for p in caught.value.problems)
    assert main(["soup", *ids, "-o", str(tmp_path / "out")]) == 1
    # The compatibility check sees the adapter as its merged model: beside a fine-tune with a 3-label head, the
    # classifier shapes differ, refused from headers too.
    other = publish_folder(family.troublemakers["num_labels"], "hfsoup-testing/three-labels")
    with pytest.raises(IncompatibleIngredientsError, match="classifier"):
        hfsoup.soup([ids[0], other], tmp_path / "out")
    assert _downloaded(hf_home) == []


def test_a_hostile_config_is_refused_with_every_problem():
    from hfsoup.io.adapter import AdapterConfig

    bad = {
        "peft_type": "LORA",
        "r": "4",
        "lora_alpha": float("inf"),
        "rank_pattern": {"(a+)+$": 2, "x" * 600: 2},
        "alpha_pattern": {"query": True},
        "target_modules": ["query", 7],
        "layers_to_transform": "all",
        "use_dora": True,
    }
    with pytest.raises(InvalidAdapterError) as caught:
        AdapterConfig.from_dict(bad, where="lora")
    problems = "\n".join(caught.value.problems)
    for expected in ("r is", "lora_alpha is inf", "repeated group", "at most 512", "alpha_pattern", "target_modules",
                     "layers_to_transform", "use_dora"):  # fmt: skip
        assert expected in problems, expected
    with pytest.raises(InvalidAdapterError, match="LoRA adapters only"):
        AdapterConfig.from_dict({"peft_type": "IA3"}, where="ia3")


def test_dora_is_refused(work):
    make_adapter(work / "base", work / "a", seed=4, names_base="base")
    make_adapter(work / "base", work / "b", seed=5, names_base="base", use_dora=True)
    with pytest.raises(InvalidAdapterError) as caught:
        hfsoup.soup(["a", "b"], work / "out")
    assert any("use_dora" in p and "DoRA" in p for p in caught.value.problems)
    assert main(["soup", "a", "b", "-o", str(work / "out")]) == 1


def test_config_paths_that_leave_the_folder_are_refused_unless_base_is_given(work, monkeypatch):
    states = [
        make_adapter(work / "base", work / n, seed=6, names_base=str(work / "base"), keep_card=n == "b")
        for n in ("a", "b")
    ]
    with pytest.raises(InvalidAdapterError, match="absolute path"):
        hfsoup.soup(["a", "b"], work / "out")
    assert main(["soup", "a", "b", "-o", str(work / "out")]) == 1
    _edit_config(work / "a", base_model_name_or_path="../elsewhere/base")
    with pytest.raises(InvalidAdapterError, match="leaves the current folder"):
        hfsoup.soup(["a", "b"], work / "out")
    # A relative name that is a symlink leading out of the folder is refused as well: it is judged where it leads.
    (work / "base-link").symlink_to(work.parent, target_is_directory=True)
    _edit_config(work / "a", base_model_name_or_path="base-link")
    with pytest.raises(InvalidAdapterError, match="leaves the current folder"):
        hfsoup.soup(["a", "b"], work / "out")
    # The user's --base is trusted, and overrides a path.
    result = hfsoup.soup(["a", "b"], work / "out", base="base")
    assert_soup_is_mean(result.output_dir, states)
    # peft's card in "b" names the base by its absolute path: nothing written names it, from another folder too.
    assert str(work) in (work / "b" / "README.md").read_text()
    (work / "elsewhere").mkdir()
    monkeypatch.chdir(work / "elsewhere")
    result = hfsoup.soup([str(work / "a"), str(work / "b")], "out", base=str(work / "base"))
    for path in result.output_dir.iterdir():
        if path.suffix in (".json", ".yaml", ".md"):
            assert str(work) not in path.read_text(), path.name


def test_hub_adapter_naming_a_local_path_is_refused(local_hub, hf_home, work):
    make_adapter(work / "base", work / "a", seed=7, names_base="./base")
    repo = publish_folder(work / "a", "hfsoup-testing/lora-path")
    with pytest.raises(InvalidAdapterError, match="Hub model only"):
        hfsoup.soup([repo, "base"], work / "out")
    assert _downloaded(hf_home) == []
    assert os.path.isdir(work / "base")
