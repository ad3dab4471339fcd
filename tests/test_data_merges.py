"""The data-dependent merges (issue 17, items 7-8): Fisher merging and RegMean, from the CLI, against float64
transcriptions of their definitions.

The statistics are computed here independently of hfsoup: the model loaded by plain `transformers`, one held-out
example at a time (no padding), the Fisher diagonal from `backward()` on the log-likelihood of the model's own
prediction, the Gram matrices from forward hooks on every `nn.Linear`; the merge is `hfsoup.testing.reference`'s.
The soup hfsoup writes must equal it within float32 rounding: on three tiny BERT fine-tunes (sst2 rows from a local
CSV) and on the trained tiny CLIP digit classifiers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hfsoup
from hfsoup.cli import main
from hfsoup.testing.glue import build_glue_finetunes, write_glue_csv
from hfsoup.testing.reference import reference_fisher_merge, reference_regmean_merge

pytestmark = pytest.mark.usefixtures("one_thread")

#: The largest deviation allowed, relative to each tensor's largest magnitude: float32 statistics computed batched
#: (hfsoup) and one example at a time (here) round apart, most in tensors whose gradients nearly vanish.
TOLERANCE = 2e-3

SPLITS = ["--held-out", "validation[:50%]", "--report", "validation[50%:]"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-merges")


@pytest.fixture(scope="module")
def dev_csv(root) -> Path:
    return write_glue_csv(root / "dev.csv", "sst2", 24)


@pytest.fixture(scope="module")
def bert(root, families) -> list[str]:
    return [str(p) for p in build_glue_finetunes(families["bert"].base, "sst2", root / "bert", n_finetunes=3)]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def bert_rows(dev_csv: Path) -> list[str]:
    import csv

    with dev_csv.open() as f:
        rows = list(csv.DictReader(f))
    return [r["sentence"] for r in rows[: len(rows) // 2]]  # validation[:50%]


def bert_inputs(folder: str, sentences: list[str]) -> list[dict]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return [dict(tokenizer(s, return_tensors="pt", truncation=True)) for s in sentences]


def clip_inputs(folder: str, rows: list[dict]) -> list[dict]:
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    pixels = [processor(images=r["image"].convert("RGB"), return_tensors="pt").pixel_values for r in rows]
    return [{"pixel_values": p} for p in pixels]


def load(folder: str):
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(folder)
    image = "Image" in config.architectures[0]
    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    return auto.from_pretrained(folder).eval()


def fisher_of(folder: str, inputs: list[dict]) -> dict[str, torch.Tensor]:
    """The mean over examples of the squared gradient of `log p(argmax | x)`, one example at a time."""
    model = load(folder)
    stored = load_file(Path(folder) / "model.safetensors")
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items() if name in stored}
    for x in inputs:
        model.zero_grad()
        log_p = torch.log_softmax(model(**x).logits[0].float(), dim=-1)
        log_p[int(log_p.argmax())].backward()
        for name in total:
            if params[name].grad is not None:
                total[name] += params[name].grad.double() ** 2
    return {name: t / len(inputs) for name, t in total.items()}


def grams_of(folder: str, inputs: list[dict]) -> dict[str, torch.Tensor]:
    """Per `nn.Linear` whose weight is stored, the sum over every example's positions of `x x^T` of its inputs."""
    model = load(folder)
    stored = load_file(Path(folder) / "model.safetensors")
    grams: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args, output):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            grams[name] = grams.get(name, 0) + x.T @ x

        return record

    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and f"{module_name}.weight" in stored:
            module.register_forward_hook(hook(f"{module_name}.weight"))
    with torch.no_grad():
        for x in inputs:
            model(**x)
    return grams


def deviation(folder: Path, reference: dict[str, torch.Tensor]) -> float:
    soup = load_file(folder / "model.safetensors")
    worst = 0.0
    for name, ref in reference.items():
        scale = max(float(ref.abs().max()), 1e-12)
        worst = max(worst, float((soup[name].double() - ref).abs().max()) / scale)
    return worst


def soup(ingredients: list[str], out: Path, method: str, *extra: str) -> dict:
    args = ["-q", "soup", *ingredients, "-o", str(out), "--method", method, *SPLITS, "--no-plot", *extra]
    assert main(args) == 0
    return read_json(out / "hfsoup.json")


def bert_soup(bert: list[str], dev_csv: Path, out: Path, method: str, *extra: str) -> tuple[dict, list, list]:
    """The soup's provenance, the held-out inputs one by one, and the ingredients' tensors."""
    task = ["--task", "sst2", "--data-files", f"validation={dev_csv}"]
    provenance = soup(bert, out, method, *task, *extra)
    states = [load_file(Path(f) / "model.safetensors") for f in bert]
    return provenance, bert_inputs(bert[0], bert_rows(dev_csv)), states


def test_fisher_soup_of_bert_is_the_fisher_weighted_average(bert, dev_csv, tmp_path):
    out = tmp_path / "fisher"
    extra = ["--compare", "uniform,regmean", "--fisher-examples", "1000", "--fisher-floor", "1e-8"]
    provenance, inputs, states = bert_soup(bert, dev_csv, out, "fisher", *extra)
    reference = reference_fisher_merge(states, [fisher_of(f, inputs) for f in bert], floor=1e-8)
    # Float32 gradients of near-invariant tensors (attention biases) round differently batched and one by one.
    assert deviation(out, reference) < TOLERANCE
    assert deviation(out, reference_fisher_merge(states, [{} for _ in bert])) > 10 * TOLERANCE  # not the mean
    assert provenance["fisher"]["examples_used"] == len(inputs)
    assert provenance["fisher"]["fisher_floor"] == 1e-8
    # Compared beside it, and named in the card.
    rows = {r["name"] for r in read_json(out / "results.json")["rows"]}
    assert {"fisher soup", "uniform soup", "regmean soup"} <= rows
    card = str(hfsoup.build_card(hfsoup.read_soup_folder(out), repo_id="me/fisher"))
    assert "Fisher" in card and "--fisher-floor" in card


def test_regmean_soup_of_bert_is_the_least_squares_merge(bert, dev_csv, tmp_path):
    out = tmp_path / "regmean"
    extra = ["--compare", "uniform", "--regmean-examples", "1000", "--regmean-alpha", "0.5"]
    provenance, inputs, states = bert_soup(bert, dev_csv, out, "regmean", *extra)
    reference = reference_regmean_merge(states, [grams_of(f, inputs) for f in bert], alpha=0.5)
    assert provenance["regmean"]["layers"] > 0
    assert deviation(out, reference) < TOLERANCE
    # Not the plain mean: the Gram matrices moved the linear layers.
    uniform = reference_regmean_merge(states, [{} for _ in bert], alpha=0.5)
    assert deviation(out, uniform) > 10 * TOLERANCE


def test_a_recipe_chooses_regmean_alpha_on_held_out_data(bert, dev_csv, tmp_path):
    recipe = {
        "ingredients": bert,
        "method": {"name": "regmean", "regmean_alpha": [0.1, 0.9]},
        "evaluation": {"task": "sst2", "data_files": {"validation": [str(dev_csv)]}, "plot": False},
        "output": {"dir": str(tmp_path / "cooked")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    assert main(["-q", "cook", str(path)]) == 0
    record = read_json(tmp_path / "cooked" / "hfsoup.json")["regmean"]
    assert [c["options"] for c in record["candidates"]] == [{"regmean_alpha": 0.1}, {"regmean_alpha": 0.9}]
    assert record["chosen"]["regmean_alpha"] == record["regmean_alpha"]
    card = str(hfsoup.build_card(hfsoup.read_soup_folder(tmp_path / "cooked"), repo_id="me/regmean"))
    assert "RegMean" in card


def _held_out(folder: Path, split: str = "validation") -> list[dict]:
    import datasets

    [path] = sorted(folder.rglob(f"{split}-*.parquet"))
    rows = datasets.Dataset.from_parquet(str(path))
    return [rows[i] for i in range(len(rows) // 2)]


def test_fisher_and_regmean_soups_of_clip_match_their_transcriptions(trained, trained_hub, tmp_path):
    ids = trained_hub.good("clip-digits")
    folders = [str(trained_hub.folders[i]) for i in ids]
    task = ["--task", "image-classification", "--dataset", trained_hub.digits_dataset, "--compare", "uniform"]
    inputs = clip_inputs(folders[0], _held_out(trained.digits))
    states = [load_file(Path(f) / "model.safetensors") for f in folders]
    soup(ids, tmp_path / "fisher", "fisher", *task, "--fisher-examples", "1000")
    reference = reference_fisher_merge(states, [fisher_of(f, inputs) for f in folders])
    assert deviation(tmp_path / "fisher", reference) < TOLERANCE
    soup(ids, tmp_path / "regmean", "regmean", *task, "--regmean-examples", "1000")
    reference = reference_regmean_merge(states, [grams_of(f, inputs) for f in folders], alpha=0.9)
    assert deviation(tmp_path / "regmean", reference) < TOLERANCE


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--method", "fisher", "--task", "sst2", "--fisher-examples", "0"], "fisher_examples"),
        (["--method", "regmean", "--task", "sst2", "--regmean-alpha", "1.5"], "regmean_alpha"),
        (["--method", "fisher"], "needs a task"),
    ],
)
def test_bad_input_is_refused_before_any_download(args, says, tmp_path, capsys):
    code = main(["soup", "nobody/a", "nobody/b", "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code != 0 and says in err and "Traceback" not in err


def test_fisher_and_regmean_soups_of_t5_run_and_move_the_weights(trained_hub, tmp_path):
    """T5 text-to-text: the log-likelihoods of the label words give the Fisher; its every linear layer a Gram."""
    ids = trained_hub.good("t5-sst2")
    task = ["--task", "sst2", "--dataset", trained_hub.sentiment_dataset, "--compare", "uniform"]
    states = [load_file(trained_hub.folders[i] / "model.safetensors") for i in ids]
    mean = reference_fisher_merge(states, [{} for _ in ids])
    fisher = soup(ids, tmp_path / "fisher", "fisher", *task, "--fisher-examples", "16")
    assert fisher["fisher"]["examples_used"] == 16
    assert deviation(tmp_path / "fisher", mean) > 10 * TOLERANCE
    regmean = soup(ids, tmp_path / "regmean", "regmean", *task)
    assert regmean["regmean"]["layers"] > 0
    assert deviation(tmp_path / "regmean", mean) > 10 * TOLERANCE
