"""The tiny model families: every member loads and runs, and each troublemaker has exactly its promised defect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from hfsoup.errors import HfsoupError
from hfsoup.testing.families import FAMILIES, ModelFamily, build_family, publish_family

KINDS = list(FAMILIES)
SENTENCE = "The movie was really brilliant, I loved it!"


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, ModelFamily]:
    root = tmp_path_factory.mktemp("families")
    return {kind: build_family(kind, root / kind) for kind in KINDS}


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint, single file or sharded."""
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def body_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Cosine of the flattened weight matrices the two share; vectors (LayerNorms, biases) are left out because
    their constant initialization (ones, zeros) looks alike in unrelated models."""
    names = sorted(n for n in a.keys() & b.keys() if a[n].ndim >= 2 and a[n].shape == b[n].shape)
    flat_a = torch.cat([a[n].float().flatten() for n in names])
    flat_b = torch.cat([b[n].float().flatten() for n in names])
    return torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0).item()


def load_model(kind: str, folder: Path, **kwargs):
    from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    auto = {"bert": AutoModelForSequenceClassification, "t5": AutoModelForSeq2SeqLM, "clip": AutoModel}[kind]
    return auto.from_pretrained(folder, **kwargs).eval()


def run_model(kind: str, folder: Path, model) -> torch.Tensor:
    """Tokenize (and for CLIP, process an image) with the folder's own files and run the model once."""
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer, CLIPProcessor

    with torch.no_grad():
        if kind == "clip":
            processor = AutoProcessor.from_pretrained(folder)
            assert isinstance(processor, CLIPProcessor)
            image = Image.new("RGB", (45, 40), color=(200, 30, 90))
            inputs = processor(text=["a photo of a red cat", "a dog"], images=image, return_tensors="pt", padding=True)
            assert inputs["pixel_values"].shape == (1, 3, 30, 30)
            return model(**inputs).logits_per_image
        tokenizer = AutoTokenizer.from_pretrained(folder)
        inputs = tokenizer([SENTENCE, "awful"], return_tensors="pt", padding=True)
        assert (inputs["input_ids"] != tokenizer.unk_token_id).all()
        if kind == "t5":
            return model(**inputs, decoder_input_ids=inputs["input_ids"][:, :3]).logits
        return model(**inputs).logits


def test_layout(families):
    common = ["base", "ft0", "ft1", "ft2", "impostor", "arch_mismatch", "other_tokenizer", "pickle_only", "no_weights"]
    copies = [f"{kind}-ft{i}" for kind in ("fp16", "sharded") for i in range(3)]
    for kind, family in families.items():
        expected = common + copies + (["num_labels", "permuted_labels", "swapped_labels"] if kind == "bert" else [])
        assert sorted(family.folders()) == sorted(expected)
        assert all(path == family.root / name and path.is_dir() for name, path in family.folders().items())
        assert family.finetunes == [family.root / f"ft{i}" for i in range(3)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_member_loads_and_runs(families, kind):
    for name, folder in families[kind].folders().items():
        if name == "no_weights":
            continue
        model = load_model(kind, folder, dtype=torch.float32)
        assert torch.isfinite(run_model(kind, folder, model)).all(), name


@pytest.mark.parametrize("kind", KINDS)
def test_finetunes_share_the_base_init_and_the_impostor_does_not(families, kind):
    family = families[kind]
    base = read_tensors(family.base)
    for name in ["ft0", "ft1", "ft2", "arch_mismatch", "other_tokenizer", "num_labels", "permuted_labels"]:
        if name in family.folders():
            assert body_cosine(base, read_tensors(family.folders()[name])) > 0.99, name
    assert body_cosine(base, read_tensors(family.troublemakers["impostor"])) < 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_every_float_tensor_differs_between_finetunes(families, kind):
    family = families[kind]
    members = [read_tensors(family.base)] + [read_tensors(ft) for ft in family.finetunes]
    for name, tensor in members[0].items():
        assert tensor.is_floating_point()
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                assert not torch.equal(members[i][name], members[j][name]), (name, i, j)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_is_byte_identical_and_another_seed_differs(families, kind, tmp_path):
    rng_state = torch.random.get_rng_state()
    # One fine-tune is enough: every member is seeded by its own name, so `ft0`, `impostor`... do not depend on it.
    again = build_family(kind, tmp_path / "again", n_finetunes=1)
    other = build_family(kind, tmp_path / "other", seed=1, n_finetunes=1)
    assert torch.equal(torch.random.get_rng_state(), rng_state), "building must not move the global RNG"
    for name, folder in again.folders().items():
        for path in sorted(folder.iterdir()):
            assert path.read_bytes() == (families[kind].root / name / path.name).read_bytes(), (name, path.name)
    for name, folder in other.folders().items():
        for path in folder.glob("*.safetensors"):
            assert path.read_bytes() != (families[kind].root / name / path.name).read_bytes(), (name, path.name)


@pytest.mark.parametrize("kind", KINDS)
def test_arch_mismatch_has_extra_tensors(families, kind):
    base = read_tensors(families[kind].base)
    grown = read_tensors(families[kind].troublemakers["arch_mismatch"])
    assert base.keys() < grown.keys()
    assert all(grown[name].shape == tensor.shape for name, tensor in base.items())
    assert any(".2." in name for name in grown.keys() - base.keys())


def test_num_labels_has_a_three_way_head(families):
    folder = families["bert"].troublemakers["num_labels"]
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive", "2": "neutral"}
    assert read_tensors(folder)["classifier.weight"].shape == (3, 32)
    assert read_tensors(families["bert"].base)["classifier.weight"].shape == (2, 32)


def test_permuted_labels_computes_the_same_function(families):
    family = families["bert"]
    ft0 = load_model("bert", family.finetunes[0])
    permuted = load_model("bert", family.troublemakers["permuted_labels"])
    assert ft0.config.id2label == {0: "negative", 1: "positive"}
    assert permuted.config.id2label == {0: "positive", 1: "negative"}
    assert not torch.equal(ft0.classifier.weight, permuted.classifier.weight)
    logits = run_model("bert", family.finetunes[0], ft0)
    permuted_logits = run_model("bert", family.troublemakers["permuted_labels"], permuted)
    order = [ft0.config.label2id[permuted.config.id2label[j]] for j in range(2)]
    torch.testing.assert_close(permuted_logits, logits[:, order])


@pytest.mark.parametrize("kind", KINDS)
def test_other_tokenizer_has_the_same_size_and_another_vocab(families, kind):
    from transformers import AutoTokenizer

    family = families[kind]
    own = AutoTokenizer.from_pretrained(family.base)
    other = AutoTokenizer.from_pretrained(family.troublemakers["other_tokenizer"])
    assert len(own) == len(other) == json.loads((family.base / "config.json").read_text()).get("vocab_size", len(own))
    assert own.get_vocab() != other.get_vocab()
    assert own(SENTENCE)["input_ids"] != other(SENTENCE)["input_ids"]
    assert read_tensors(family.base).keys() == read_tensors(family.troublemakers["other_tokenizer"]).keys()


@pytest.mark.parametrize("kind", KINDS)
def test_fp16_copies_are_float16_and_close(families, kind):
    family = families[kind]
    for ft, half in zip(family.finetunes, family.troublemakers["fp16"], strict=True):
        assert json.loads((half / "config.json").read_text())["dtype"] == "float16"
        full, halved = read_tensors(ft), read_tensors(half)
        assert full.keys() == halved.keys()
        for name, tensor in halved.items():
            assert tensor.dtype == torch.float16, name
            torch.testing.assert_close(tensor.float(), full[name], rtol=1e-3, atol=1e-4)
    assert json.loads((family.finetunes[0] / "config.json").read_text())["dtype"] == "float32"


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_copies_have_an_index_and_the_same_tensors(families, kind):
    family = families[kind]
    for ft, sharded in zip(family.finetunes, family.troublemakers["sharded"], strict=True):
        shards = sorted(sharded.glob("*.safetensors"))
        index = json.loads((sharded / "model.safetensors.index.json").read_text())
        assert len(shards) >= 2 and not (sharded / "model.safetensors").exists()
        assert set(index["weight_map"].values()) == {path.name for path in shards}
        full, parts = read_tensors(ft), read_tensors(sharded)
        assert index["weight_map"].keys() == full.keys() == parts.keys()
        assert all(torch.equal(parts[name], tensor) for name, tensor in full.items())


@pytest.mark.parametrize("kind", KINDS)
def test_pickle_only_and_no_weights(families, kind):
    family = families[kind]
    pickle_only, no_weights = family.troublemakers["pickle_only"], family.troublemakers["no_weights"]
    assert [p.name for p in pickle_only.iterdir() if p.suffix in {".bin", ".safetensors"}] == ["pytorch_model.bin"]
    state = torch.load(pickle_only / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(state[name], tensor) for name, tensor in read_tensors(family.finetunes[0]).items())
    assert not [p for p in no_weights.iterdir() if p.suffix in {".bin", ".safetensors", ".pt", ".pth", ".h5"}]
    assert {"config.json", "tokenizer.json", "README.md"} <= {p.name for p in no_weights.iterdir()}
    with pytest.raises(OSError):
        load_model(kind, no_weights)


@pytest.mark.parametrize("kind", KINDS)
def test_cards_and_extra_files(families, kind):
    for name, folder in families[kind].folders().items():
        data = ModelCard.load(folder / "README.md").data
        assert data.license == "apache-2.0" and data.library_name == "transformers"
        assert kind in data.tags and "hfsoup-testing" in data.tags
        assert data.base_model == (None if name == "base" else f"hfsoup-testing/tiny-{kind}-base")
        assert (folder / "generation_config.json").is_file() == (kind == "t5")
        assert (folder / "preprocessor_config.json").is_file() == (kind == "clip")


def test_build_family_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(HfsoupError, match="Unknown model family 'gpt2'"):
        build_family("gpt2", tmp_path)


def test_publish_family_round_trips_through_the_local_hub(local_hub, tmp_path):
    from huggingface_hub import snapshot_download

    # One fine-tune keeps the upload short and still covers every kind of member (sharded, pickled, no weights).
    family = build_family("bert", tmp_path / "bert", n_finetunes=1)
    # A base that names a real upstream model (as the MiniLM family's does) keeps that name when published.
    base_card = ModelCard.load(family.base / "README.md")
    base_card.data.base_model = "upstream-org/pretrained"
    base_card.save(family.base / "README.md")
    repo_ids = publish_family(family, org="soup-lab")
    assert repo_ids == {name: f"soup-lab/tiny-bert-{name}" for name in family.folders()}
    for name in ["base", "ft0", "sharded-ft0", "pickle_only", "no_weights"]:
        local = Path(snapshot_download(repo_ids[name]))
        # The Hub adds a `.gitattributes` to every new repo; everything else is the folder's.
        published = sorted(p.name for p in local.iterdir() if p.name != ".gitattributes")
        assert published == sorted(p.name for p in family.folders()[name].iterdir())
        expected = read_tensors(family.folders()[name])
        downloaded = read_tensors(local)
        assert expected.keys() == downloaded.keys()
        assert all(torch.equal(downloaded[n], t) for n, t in expected.items())
        card = ModelCard.load(local / "README.md")
        assert card.data.base_model == ("upstream-org/pretrained" if name == "base" else "soup-lab/tiny-bert-base")
    # The local folders keep the default org in their cards.
    assert ModelCard.load(family.finetunes[0] / "README.md").data.base_model == "hfsoup-testing/tiny-bert-base"
    model = load_model("bert", repo_ids["ft0"])
    torch.testing.assert_close(model.classifier.weight, read_tensors(family.finetunes[0])["classifier.weight"])
