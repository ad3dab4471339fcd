"""Decoder LLMs through every stage: checked before download, scored by perplexity, souped greedily.

The ingredients are tiny Llama-shaped fine-tunes of one seeded base on real drug reviews, and one trained on the
same reviews with their bytes shuffled (`hfsoup.testing.llama`). Perplexity is checked against transformers' own
loss text by text; the greedy soup against an independent transcription of the paper's algorithm, scored the same
independent way; `hfsoup check` must name each difference of vocabulary, chat template, head tying and generation
config without downloading any weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM

import hfsoup
from hfsoup.cli import main
from hfsoup.evaluation.evaluator import evaluate_model
from hfsoup.testing.families import publish_folder
from hfsoup.testing.llama import build_llama_family, llama_variant, review_texts, write_review_texts
from tests.test_select_processes import assert_same_soup, one_and_two

pytestmark = pytest.mark.usefixtures("one_thread")

HELD, REPORT = 40, 40


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> dict[str, Path]:
    return build_llama_family(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("texts")
    held = write_review_texts(root / "held.jsonl", split="test", n=HELD, field="body")
    rows = review_texts("test", HELD + REPORT)[HELD:]
    report = root / "report.jsonl"
    report.write_text("".join(json.dumps({"body": t}) + "\n" for t in rows), encoding="utf-8")
    return {"validation": held, "test": report}


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["body"] for line in path.read_text(encoding="utf-8").splitlines()]


def reference_perplexity(folder: Path, state: dict | None, texts: list[str]) -> float:
    """Token-level perplexity, text by text with no padding (truncated to the tokenizer's maximum, as hfsoup does),
    from transformers' own mean loss: an independent
    transcription of what `--task perplexity` computes."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = LlamaForCausalLM.from_pretrained(folder).eval()
    if state is not None:
        model.load_state_dict(state, strict=False)
    nll = tokens = 0.0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]])
            n = ids.shape[1] - 1
            nll += float(model(input_ids=ids, labels=ids).loss.double()) * n
            tokens += n
    return math.exp(nll / tokens)


def test_perplexity_is_transformers_token_level_loss_in_any_batching(llama, texts):
    expected = reference_perplexity(llama["ft0"], None, _texts(texts["validation"]))
    files = {"validation": [str(texts["validation"])]}
    for batch_size in (1, 7):
        metrics = evaluate_model(
            str(llama["ft0"]), "perplexity", data_files=files, text_field="body", batch_size=batch_size
        ).metrics()
        assert metrics["perplexity"] == pytest.approx(expected, rel=1e-4)
        assert metrics["neg_perplexity"] == -metrics["perplexity"]
    # The shuffled fine-tune models real text worse than the base's real fine-tunes.
    shuffled = evaluate_model(str(llama["shuffled"]), "perplexity", data_files=files, text_field="body").metrics()
    assert shuffled["perplexity"] > 1.3 * expected


def test_perplexity_without_data_or_on_a_classification_task_says_what_to_pass(llama, tmp_path):
    with pytest.raises(hfsoup.EvaluationError, match="no data of its own"):
        evaluate_model(str(llama["ft0"]), "perplexity")
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    with pytest.raises(hfsoup.EvaluationError, match="causal language model"):
        evaluate_model(str(llama["ft0"]), "text-classification", data_files={"validation": [str(labelled)]})


def _average(states: list[dict]) -> dict:
    return {name: sum(s[name].double() for s in states) / len(states) for name in states[0]}


def test_greedy_soup_by_perplexity_drops_the_shuffled_one_as_the_paper_would(llama, texts, tmp_path):
    names = ["ft0", "shuffled", "ft1", "ft2"]  # the bad one among the good, not last
    out = tmp_path / "soup"
    args = ["-q", "soup", *(str(llama[n]) for n in names), "-o", str(out), "--method", "greedy"]
    args += ["--task", "perplexity", "--text-field", "body", "--no-plot", "--compare", "uniform,learned"]
    args += ["--data-files", f"validation={texts['validation']}", f"test={texts['test']}"]
    args += ["--held-out", "validation", "--report", "test", "--batch-size", "8"]
    assert main(args) == 0
    provenance = json.loads((out / "hfsoup.json").read_text())

    # The paper's greedy soup, transcribed: best first by held-out perplexity, keep when it does not rise.
    held = _texts(texts["validation"])
    states = [load_file(llama[n] / "model.safetensors") for n in names]
    alone = [reference_perplexity(llama["ft0"], s, held) for s in states]
    order = sorted(range(len(names)), key=lambda i: alone[i])
    kept, best = [order[0]], alone[order[0]]
    for i in order[1:]:
        trial = reference_perplexity(llama["ft0"], _average([states[j] for j in [*kept, i]]), held)
        if trial <= best:
            kept, best = [*kept, i], trial

    specs = [i["spec"] for i in provenance["ingredients"]]
    assert set(provenance["greedy"]["kept"]) == {specs[i] for i in kept}
    assert specs[1] not in provenance["greedy"]["kept"] and provenance["weights"][1] == 0.0
    assert len(kept) >= 2  # a real soup, not only the best ingredient
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    for i, spec in enumerate(specs):
        assert rows[spec]["held_out"]["perplexity"] == pytest.approx(alone[i], rel=1e-4)
    assert rows["greedy soup"]["held_out"]["perplexity"] == pytest.approx(best, rel=1e-4)
    assert math.isfinite(rows["learned soup"]["held_out"]["perplexity"])
    assert "ensemble" not in rows  # likelihood sums have no label set to average over
    # The soup is a causal LM with the first ingredient's tokenizer, chat template and generation config.
    for name in ("tokenizer.json", "generation_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (llama["ft0"] / name).read_bytes()
    assert reference_perplexity(out, None, held) == pytest.approx(best, rel=1e-4)


def _perplexity_args(specs: list[str], data: Path, out: Path, batch_size: int) -> list[str]:
    return [
        *("-v", "soup", *specs, "--method", "greedy", "--task", "perplexity", "--text-field", "body"),
        *("--data-files", f"validation={data}", "--batch-size", str(batch_size)),
        *("--compare", "uniform,learned", "--no-plot", "-o", str(out)),
    ]


@pytest.mark.slow
def test_two_processes_select_the_perplexity_soup_of_one(llama, texts, tmp_path, monkeypatch, capsys):
    """Under torchrun each process scores its share of the batches; the decisions, scores and bytes are one
    process's (the learned soup's summed log-likelihood gradient too)."""
    specs = [str(llama[n]) for n in ("ft0", "shuffled", "ft1", "ft2")]
    root = texts["validation"].parent
    single, double, done = one_and_two(
        specs, texts["validation"], root, tmp_path, monkeypatch, capsys, batch_size=4, make_args=_perplexity_args
    )
    provenance = assert_same_soup(single, double)
    assert specs[1] not in provenance["greedy"]["kept"]
    # 20 held-out rows in 5 batches, split 3 and 2 (the reported part likewise).
    for rank, share in ((0, 3), (1, 2)):
        assert done.stderr.count(f"process {rank}/2: {share} of the 5 batches of validation (20 rows)") == 2


CHANGES = {
    "added": ({"added_tokens": ("<|tool|>",)}, "error", "adds '<|tool|>'"),
    "chat": ({"chat_template": "{{ messages }}"}, "warning", "chat template differs"),
    "tied": ({"tie_word_embeddings": True}, "error", "ties its output head"),
    "generation": ({"max_new_tokens": 64}, "warning", "generation_config.json differs"),
}


def test_check_names_each_llm_difference_before_any_weight_download(local_hub, llama, tmp_path, capsys):
    first = publish_folder(llama["ft0"], "hfsoup-testing/llama-ft0")
    others = {
        name: publish_folder(llama_variant(llama["ft1"], tmp_path / name, **change), f"hfsoup-testing/llama-{name}")
        for name, (change, _, _) in CHANGES.items()
    }
    local_hub.traffic.clear()
    report = hfsoup.check([first, *others.values()])
    for name, (_, level, fragment) in CHANGES.items():
        found = [f for f in report.findings if f.ingredient == others[name] and fragment in f.message]
        assert found and found[0].level == level, report.format_table()
    assert not report.weights_checked
    assert not [p for m, p, s, _ in local_hub.traffic if m == "GET" and p.endswith(".safetensors") and s == 200]
    assert main(["check", first, others["chat"]]) == 0  # a warning alone does not refuse
    assert "chat template differs" in capsys.readouterr().out


def test_shared_init_measure_samples_large_tensors_and_still_reads_every_element():
    """An LLM-sized projection is measured on a sample: its cosines are the whole tensors' (float64), at a
    fraction of the products, and a NaN off the sample is still found."""
    from hfsoup.compat.similarity import SAMPLE_ELEMENTS, SimilarityMeter

    rng = np.random.default_rng(0)
    base = rng.standard_normal((2048, 1024)).astype(np.float32)  # 2M elements: 8x the sample
    arrays = [base + 0.1 * rng.standard_normal(base.shape).astype(np.float32) for _ in range(2)]
    arrays.append(rng.standard_normal(base.shape).astype(np.float32))  # a stranger
    assert base.size > 4 * SAMPLE_ELEMENTS
    meter = SimilarityMeter(["a", "b", "stranger"])
    meter.update("model.layers.0.mlp.up_proj.weight", arrays)
    cosine = meter.result().body_cosine
    flat = [a.astype(np.float64).ravel() for a in arrays]
    for i in range(3):
        for j in range(3):
            exact = flat[i] @ flat[j] / np.linalg.norm(flat[i]) / np.linalg.norm(flat[j])
            assert cosine[i][j] == pytest.approx(exact, abs=5e-3)
    poisoned = [a.copy() for a in arrays]
    poisoned[1][40, 1] = np.nan  # element 40961 is off the sample (the first 1/8 of every 2^18 elements)
    meter = SimilarityMeter(["a", "b", "stranger"])
    meter.update("model.layers.0.mlp.up_proj.weight", poisoned)
    assert meter.non_finite == {"b": ["model.layers.0.mlp.up_proj.weight"]}
