"""End to end through the local Hub over real HTTP: publish tiny families, soup them by Hub ID, load the soup.

Each soup is checked against an independent float64 average of the published folders (every tensor within 1e-6
relative), and the loaded model's outputs against a model built from that reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

import hfsoup
from hfsoup.cli import main
from hfsoup.io.checkpoint import CheckpointReader
from hfsoup.testing.families import publish_folder
from hfsoup.testing.output import error_after_stages
from hfsoup.testing.reference import max_relative_deviation, reference_average, ulp_error

ORG = "soup-tests"


def publish(folder, name: str) -> str:
    return publish_folder(folder, f"{ORG}/{name}")


def build_reference_model(model_cls, template_folder, reference):
    """A model whose float weights are the float64 reference (rounded once to float32)."""
    model = model_cls.from_pretrained(template_folder).eval()
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in reference.items()}, strict=False)
    assert not unexpected
    # Only tied weights may be absent from a checkpoint (T5's embeddings and lm_head share `shared.weight`).
    state = model.state_dict(keep_vars=True)
    loaded = {state[k].data_ptr() for k in reference if k in state}
    assert all(state[k].data_ptr() in loaded for k in missing), missing
    return model


def test_bert_soup_by_hub_id_with_a_pinned_sha(local_hub, families, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    family = families["bert"]
    repos = [publish(folder, f"bert-ft{i}") for i, folder in enumerate(family.finetunes)]
    pinned_sha = HfApi().model_info(repos[2]).sha
    # Move main on: only the pinned SHA still holds the third fine-tune, so pinning must really be honoured.
    HfApi().upload_file(
        path_or_fileobj=str(family.finetunes[0] / "model.safetensors"),
        path_in_repo="model.safetensors",
        repo_id=repos[2],
        commit_message="replace weights",
    )
    assert HfApi().model_info(repos[2]).sha != pinned_sha

    result = hfsoup.soup([repos[0], repos[1], f"{repos[2]}@{pinned_sha}"], tmp_path / "soup")

    reference = reference_average(family.finetunes)
    assert max_relative_deviation(result.output_dir, reference) < 1e-6
    assert [i["sha"] for i in result.ingredients][2] == pinned_sha
    provenance = json.loads(result.provenance_path.read_text())
    assert provenance["ingredients"][2] == {
        "spec": f"{repos[2]}@{pinned_sha}",
        "repo_id": repos[2],
        "revision": pinned_sha,
        "sha": pinned_sha,
        "weights_format": "safetensors",
    }
    assert all(len(i["sha"]) == 40 for i in provenance["ingredients"])

    souped = AutoModelForSequenceClassification.from_pretrained(result.output_dir).eval()
    expected = build_reference_model(AutoModelForSequenceClassification, family.finetunes[0], reference)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    batch = tokenizer(["the soup is good", "weights averaged well today"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        torch.testing.assert_close(souped(**batch).logits, expected(**batch).logits, rtol=1e-5, atol=1e-6)


def test_t5_soup_by_hub_id(local_hub, families, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    family = families["t5"]
    repos = [publish(folder, f"t5-ft{i}") for i, folder in enumerate(family.finetunes)]
    result = hfsoup.soup(repos, tmp_path / "soup")
    reference = reference_average(family.finetunes)
    assert max_relative_deviation(result.output_dir, reference) < 1e-6
    assert (result.output_dir / "generation_config.json").is_file()

    souped = AutoModelForSeq2SeqLM.from_pretrained(result.output_dir).eval()
    expected = build_reference_model(AutoModelForSeq2SeqLM, family.finetunes[0], reference)
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "decoder_input_ids": torch.tensor([[0, 8, 9]])}
    with torch.inference_mode():
        torch.testing.assert_close(souped(**inputs).logits, expected(**inputs).logits, rtol=1e-5, atol=1e-6)


def test_clip_soup_by_hub_id(local_hub, families, tmp_path):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    family = families["clip"]
    repos = [publish(folder, f"clip-ft{i}") for i, folder in enumerate(family.finetunes)]
    result = hfsoup.soup(repos, tmp_path / "soup")
    reference = reference_average(family.finetunes)
    assert max_relative_deviation(result.output_dir, reference) < 1e-6

    processor = CLIPProcessor.from_pretrained(result.output_dir)
    image = Image.fromarray((torch.arange(30 * 30 * 3) % 255).reshape(30, 30, 3).to(torch.uint8).numpy())
    inputs = processor(text=["a photo of a cat", "a dog"], images=image, return_tensors="pt", padding=True)
    souped = CLIPModel.from_pretrained(result.output_dir).eval()
    expected = build_reference_model(CLIPModel, family.finetunes[0], reference)
    with torch.inference_mode():
        torch.testing.assert_close(
            souped(**inputs).logits_per_image, expected(**inputs).logits_per_image, rtol=1e-5, atol=1e-5
        )


def test_sharded_ingredients(local_hub, families, tmp_path):
    family = families["bert"]
    sharded = family.troublemakers["sharded"]
    repos = [publish(folder, f"bert-sharded{i}") for i, folder in enumerate(sharded)]
    result = hfsoup.soup(repos, tmp_path / "soup", max_shard_size="20KB")
    assert max_relative_deviation(result.output_dir, reference_average(family.finetunes)) < 1e-6
    with CheckpointReader(result.output_dir) as reader:
        assert reader.weight_map is not None and len(set(reader.weight_map.values())) >= 2


def test_fp16_ingredients(local_hub, families, tmp_path):
    fp16 = families["bert"].troublemakers["fp16"]
    repos = [publish(folder, f"bert-fp16-{i}") for i, folder in enumerate(fp16)]
    reference = reference_average(fp16)

    half = hfsoup.soup(repos, tmp_path / "half")
    with CheckpointReader(half.output_dir) as reader:
        for name, ref in reference.items():
            assert reader.structure[name].dtype == "F16"
            # Correctly rounded to fp16: within half an fp16 ulp of the float64 mean (plus float32 accumulation noise,
            # which can tip an exact tie the other way; a wrong dtype path would be off by whole ulps or more).
            assert ulp_error(reader.get(name), ref) <= 0.5 + 1e-3, name
    config = json.loads((half.output_dir / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float16"

    full = hfsoup.soup(repos, tmp_path / "full", dtype="float32")
    assert max_relative_deviation(full.output_dir, reference) < 1e-6
    config = json.loads((full.output_dir / "config.json").read_text())
    assert config["dtype"] == "float32"


# --- bad input through the CLI: one paragraph, exit code 1, no traceback, no output folder -------------------


def _run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _assert_clean_failure(code, err, out_dir, *fragments):
    assert code == 1, err
    err = error_after_stages(err)
    assert err.startswith("Error: ") and "Traceback" not in err
    paragraph = err.split("\n(Set HFSOUP_DEBUG=1")[0]
    assert "\n\n" not in paragraph
    for fragment in fragments:
        assert fragment in " ".join(paragraph.split()), (fragment, err)
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}")]


@pytest.fixture
def two_repos(local_hub, families):
    return [publish(folder, f"bert-ft{i}") for i, folder in enumerate(families["bert"].finetunes[:2])]


def test_unknown_repo(two_repos, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run_cli(["soup", two_repos[0], f"{ORG}/does-not-exist", "-o", str(out)], capsys)
    _assert_clean_failure(code, err, out, f"'{ORG}/does-not-exist' was not found", "hf auth login")


def test_unknown_revision(two_repos, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run_cli(["soup", two_repos[0], f"{two_repos[1]}@no-such-branch", "-o", str(out)], capsys)
    _assert_clean_failure(code, err, out, "Revision 'no-such-branch'", "branch, tag or full commit SHA")


def test_repo_without_weights(two_repos, families, tmp_path, capsys):
    empty = publish(families["bert"].troublemakers["no_weights"], "bert-no-weights")
    out = tmp_path / "out"
    code, err = _run_cli(["soup", *two_repos, empty, "-o", str(out)], capsys)
    _assert_clean_failure(code, err, out, "holds no model weights", "model.safetensors")


def test_pickle_only_repo(two_repos, families, tmp_path, capsys):
    pickled = publish(families["bert"].troublemakers["pickle_only"], "bert-pickle")
    out = tmp_path / "out"
    code, err = _run_cli(["soup", *two_repos, pickled, "-o", str(out)], capsys)
    _assert_clean_failure(code, err, out, "only pickle weights", "--allow-pickle", "weights_only=True")
    # With the flag, it is read with weights_only=True and souped like the others.
    assert main(["soup", *two_repos, pickled, "-o", str(out), "--allow-pickle"]) == 0
    folders = [*families["bert"].finetunes[:2], families["bert"].troublemakers["pickle_only"]]
    assert max_relative_deviation(out, reference_average(folders, allow_pickle=True)) < 1e-6


def test_existing_output_folder(two_repos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _run_cli(["soup", *two_repos, "-o", str(out)], capsys)
    assert code == 1 and "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("weights", "fragment"), [("0.2,0.3,0.5", "Got 3 weights"), ("0.7,0.7", "sums to 1.4"), ("1", "Got 1 weights")]
)
def test_wrong_weights(two_repos, tmp_path, capsys, weights, fragment):
    out = tmp_path / "out"
    code, err = _run_cli(["soup", *two_repos, "-o", str(out), "--weights", weights], capsys)
    _assert_clean_failure(code, err, out, fragment)


def test_fewer_than_two_ingredients(two_repos, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run_cli(["soup", two_repos[0], "-o", str(out)], capsys)
    _assert_clean_failure(code, err, out, "at least two ingredients")


def test_architecture_mismatch_is_refused_before_weights_download(local_hub, families, tmp_path, capsys):
    bert = families["bert"]
    repos = [publish(bert.finetunes[0], "bert-ft0"), publish(bert.troublemakers["arch_mismatch"], "bert-arch")]
    out = tmp_path / "out"
    code, err = _run_cli(["soup", *repos, "-o", str(out)], capsys)
    _assert_clean_failure(code, err, out, "must not be souped together", "soup-tests/bert-arch: has 16 tensors")
    # Only small files were fetched: no safetensors weights are in the cache.
    from huggingface_hub import constants

    cached = [p.name for p in Path(constants.HF_HUB_CACHE).rglob("*") if p.is_file()]
    assert not [name for name in cached if name.endswith(".safetensors")], cached


def test_only_needed_files_are_downloaded(local_hub, families, tmp_path):
    import shutil

    bert = families["bert"]
    cluttered = tmp_path / "cluttered"
    shutil.copytree(bert.finetunes[0], cluttered)
    shutil.copy(bert.troublemakers["pickle_only"] / "pytorch_model.bin", cluttered / "pytorch_model.bin")
    (cluttered / "onnx").mkdir()
    (cluttered / "onnx" / "model.onnx").write_bytes(b"\0" * 4096)
    (cluttered / "training_args.bin").write_bytes(b"\0" * 128)
    repos = [publish(cluttered, "bert-cluttered"), publish(bert.finetunes[1], "bert-ft1")]

    result = hfsoup.soup(repos, tmp_path / "soup")

    from huggingface_hub import constants

    snapshot = next(Path(constants.HF_HUB_CACHE).glob("models--soup-tests--bert-cluttered/snapshots/*"))
    fetched = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert not {"pytorch_model.bin", "onnx/model.onnx", "training_args.bin"} & set(fetched), fetched
    assert max_relative_deviation(result.output_dir, reference_average(bert.finetunes[:2])) < 1e-6
