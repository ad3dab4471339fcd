"""The compatibility report over the tiny families: what passes, what is refused, and when (before any download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hfsoup
from hfsoup.cli import main
from hfsoup.compat import MIN_BODY_COSINE
from hfsoup.errors import IncompatibleIngredientsError
from hfsoup.io.checkpoint import CheckpointReader
from hfsoup.testing.families import publish_folder
from hfsoup.testing.reference import max_relative_deviation, reference_average

ORG = "compat"


def publish(folder, name):
    return publish_folder(folder, f"{ORG}/{name}")


def weights_downloaded(hub) -> list[str]:
    """Weight files the local Hub sent whole (header reads are 206 Range answers and do not count)."""
    return [
        path
        for method, path, status, _ in hub.traffic
        if method == "GET" and path.endswith(".safetensors") and status == 200
    ]


def cached_weights() -> list[str]:
    from huggingface_hub import constants

    return [p.name for p in Path(constants.HF_HUB_CACHE).rglob("*.safetensors")]


class LazyRepos(dict):
    """Member name -> repo id, publishing each member to the test's Hub the first time it is asked for."""

    def __init__(self, folders):
        super().__init__()
        self.folders = folders

    def __missing__(self, name):
        self[name] = publish(self.folders[name], f"bert-{name}")
        return self[name]


@pytest.fixture
def bert_repos(local_hub, families):
    return LazyRepos(families["bert"].folders())


def test_true_siblings_pass_with_figures(bert_repos):
    report = hfsoup.check([bert_repos["ft0"], bert_repos["ft1"], bert_repos["ft2"]], base=bert_repos["base"])
    assert report.ok, report.format_table()
    s = report.similarity
    assert min(min(row) for row in s.body_cosine) > 0.95
    assert min(s.body_cosine_to_base) > 0.95
    assert min(min(row) for row in s.head_cosine) > 0.9
    assert "OK: these ingredients can be souped." in report.format_table()


def test_impostor_is_refused_with_its_similarity(bert_repos, tmp_path, capsys):
    specs = [bert_repos["ft0"], bert_repos["impostor"], bert_repos["ft1"]]  # the impostor is not first: still caught
    report = hfsoup.check(specs)
    assert not report.ok
    (finding,) = [f for f in report.errors if f.check == "shared-init"]
    assert finding.ingredient == bert_repos["impostor"]
    assert "body cosine similarity" in finding.message and "relative L2 distance" in finding.message
    impostor_cos = report.similarity.body_cosine[0][1]
    assert abs(impostor_cos) < MIN_BODY_COSINE / 2
    assert f"{impostor_cos:.3f}" in finding.message
    # The soup refuses too, after streaming, and leaves nothing behind.
    out = tmp_path / "out"
    assert main(["soup", *specs, "-o", str(out)]) == 1
    assert "does not share an initialization" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_impostor_against_base(bert_repos):
    report = hfsoup.check([bert_repos["ft0"], bert_repos["impostor"]], base=bert_repos["base"])
    messages = [f.message for f in report.errors]
    assert any(f"was not fine-tuned from {bert_repos['base']}" in m for m in messages), messages


@pytest.mark.parametrize(
    ("other", "check", "fragment"),
    [
        ("t5:ft0", "architecture", "model_type is 't5'"),
        ("arch_mismatch", "tensors", "has 16 tensors"),
        ("num_labels", "labels", "has 3 labels"),
        ("other_tokenizer", "tokenizer", "vocabulary"),
    ],
)
def test_refused_before_any_weight_download(local_hub, families, bert_repos, other, check, fragment, capsys):
    if other.startswith("t5:"):
        other_repo = publish(families["t5"].finetunes[0], "t5-ft0")
    else:
        other_repo = bert_repos[other]
    ft0, ft1 = bert_repos["ft0"], bert_repos["ft1"]
    local_hub.traffic.clear()
    report = hfsoup.check([ft0, ft1, other_repo])
    assert not report.ok
    assert {f.check for f in report.errors} >= {check}
    assert all(f.ingredient == other_repo for f in report.errors if f.check == check)
    assert any(fragment in f.message for f in report.errors), report.format_table()
    assert not report.weights_checked and report.similarity is None
    assert weights_downloaded(local_hub) == [] and cached_weights() == []
    # The CLI prints the table and exits 1.
    assert main(["check", bert_repos["ft0"], other_repo]) == 1
    assert "REFUSED" in capsys.readouterr().out


def test_num_labels_shape_and_label_messages_together(bert_repos):
    report = hfsoup.check([bert_repos["ft0"], bert_repos["num_labels"], bert_repos["arch_mismatch"]])
    by_ingredient = {f.ingredient for f in report.errors}
    # Every mismatch of every ingredient is listed at once, grouped per ingredient.
    assert by_ingredient == {bert_repos["num_labels"], bert_repos["arch_mismatch"]}
    shapes = [f for f in report.errors if f.ingredient == bert_repos["num_labels"] and f.check == "tensors"]
    assert shapes and "classifier.weight [3, 32] vs [2, 32]" in shapes[0].message


def test_permuted_labels_are_aligned(bert_repos, families, tmp_path):
    bert = families["bert"]
    report = hfsoup.check([bert_repos["ft1"], bert_repos["permuted_labels"]])
    assert report.ok and report.label_alignment == {bert_repos["permuted_labels"]: [1, 0]}
    assert any(f.check == "labels" and "reordered" in f.message for f in report.findings)

    aligned = hfsoup.soup([bert_repos["ft1"], bert_repos["permuted_labels"]], tmp_path / "aligned")
    # permuted_labels is ft0 with rows swapped: the aligned soup must equal the soup of ft1 and ft0 in order.
    assert max_relative_deviation(aligned.output_dir, reference_average([bert.finetunes[1], bert.finetunes[0]])) < 1e-6
    provenance = json.loads(aligned.provenance_path.read_text())
    assert provenance["compatibility"]["label_alignment"] == {bert_repos["permuted_labels"]: [1, 0]}

    from transformers import AutoModelForSequenceClassification

    ordered = hfsoup.soup([bert_repos["ft1"], bert_repos["ft0"]], tmp_path / "ordered")
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.inference_mode():
        got = AutoModelForSequenceClassification.from_pretrained(aligned.output_dir)(**batch).logits
        want = AutoModelForSequenceClassification.from_pretrained(ordered.output_dir)(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_no_align_labels_refuses(bert_repos, tmp_path):
    report = hfsoup.check([bert_repos["ft1"], bert_repos["permuted_labels"]], align_labels=False)
    assert not report.ok and "another order" in report.errors[0].message
    with pytest.raises(IncompatibleIngredientsError, match="label alignment is off"):
        hfsoup.soup([bert_repos["ft1"], bert_repos["permuted_labels"]], tmp_path / "out", align_labels=False)


def test_fp16_with_fp32_passes_and_is_upcast(bert_repos, families, tmp_path):
    specs = [bert_repos["ft0"], bert_repos["fp16-ft1"]]
    report = hfsoup.check(specs)
    assert report.ok
    assert any(f.check == "dtypes" and "upcast" in f.message for f in report.findings)
    result = hfsoup.soup(specs, tmp_path / "out")
    folders = [families["bert"].finetunes[0], families["bert"].troublemakers["fp16"][1]]
    assert max_relative_deviation(result.output_dir, reference_average(folders)) < 1e-6
    with CheckpointReader(result.output_dir) as reader:
        assert {m.dtype for m in reader.structure.values() if m.is_float} == {"F32"}  # the first ingredient's


def test_sharded_copy_passes(bert_repos):
    report = hfsoup.check([bert_repos["ft0"], bert_repos["sharded-ft1"], bert_repos["ft2"]])
    assert report.ok, report.format_table()


def test_force_soups_anyway_and_records_it(bert_repos, tmp_path):
    result = hfsoup.soup([bert_repos["ft0"], bert_repos["impostor"]], tmp_path / "out", force=True)
    compatibility = json.loads(result.provenance_path.read_text())["compatibility"]
    assert compatibility["forced"] is True and compatibility["ok"] is False
    assert any(f["check"] == "shared-init" for f in compatibility["findings"])


def test_five_remote_ingredients_before_download_phase(local_hub, bert_repos, capsys, tmp_path):
    specs = [bert_repos[n] for n in ("ft0", "ft1", "ft2", "sharded-ft0", "fp16-ft2")]
    local_hub.traffic.clear()
    assert main(["check", *specs, "--skip-weights", "--json", str(tmp_path / "report.json")]) == 0
    weight_gets = [
        (p, status, n) for method, p, status, n in local_hub.traffic if method == "GET" and p.endswith(".safetensors")
    ]
    # Headers only: every weight-file read was a Range request, and far less than the files themselves.
    assert weight_gets and all(status == 206 for _, status, _ in weight_gets)
    total = sum(p.stat().st_size for p in Path(local_hub.root).rglob("*") if p.is_file())
    assert sum(n for _, _, n in weight_gets) < total
    assert cached_weights() == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is True and report["weights_checked"] is False and len(report["ingredients"]) == 5
    assert "not measured" in capsys.readouterr().out


def test_check_json_to_stdout_and_usage_error(bert_repos, capsys):
    assert main(["check", bert_repos["ft0"], bert_repos["ft1"], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and len(data["similarity"]["body_cosine"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2


def test_independent_heads_are_flagged(tmp_path, families):
    """Same body, heads re-initialized per fine-tune (common on the Hub): refused with advice."""
    from safetensors.torch import load_file, save_file

    folders = []
    for i, source in enumerate(families["bert"].finetunes[:2]):
        folder = tmp_path / f"fresh-head-{i}"
        folder.mkdir()
        for f in source.iterdir():
            if f.is_file():
                (folder / f.name).write_bytes(f.read_bytes())
        tensors = load_file(folder / "model.safetensors")
        g = torch.Generator().manual_seed(100 + i)
        tensors["classifier.weight"] = torch.randn(tensors["classifier.weight"].shape, generator=g)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        folders.append(folder)
    report = hfsoup.check(folders)
    (finding,) = [f for f in report.errors if f.check == "head"]
    assert "initialized independently" in finding.message and "Fine-tune every ingredient" in finding.fix


def test_tied_copies_stored_by_one_ingredient_only(tmp_path, families):
    """One T5 checkpoint stores the tied lm_head/embed_tokens copies, the other does not: same structure."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSeq2SeqLM

    t5 = families["t5"]
    explicit = tmp_path / "explicit"
    shutil.copytree(t5.finetunes[1], explicit)
    tensors = load_file(explicit / "model.safetensors")
    for name in ("lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        tensors[name] = tensors["shared.weight"].clone()
    save_file(tensors, explicit / "model.safetensors", metadata={"format": "pt"})

    report = hfsoup.check([t5.finetunes[0], explicit])
    assert report.ok, report.format_table()
    assert any("tied copies" in f.message for f in report.findings)
    result = hfsoup.soup([t5.finetunes[0], explicit], tmp_path / "out")
    assert max_relative_deviation(result.output_dir, reference_average(t5.finetunes[:2])) < 1e-6
    model = AutoModelForSeq2SeqLM.from_pretrained(result.output_dir)
    assert torch.equal(model.lm_head.weight, model.shared.weight)
