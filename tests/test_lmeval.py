"""Selection through EleutherAI's lm-eval harness (`--task lm-eval:TASKS`), on tiny local tasks.

The ingredients are the tiny Llama fine-tunes of `hfsoup.testing.llama` (one trained on shuffled text); the tasks
are lm-eval YAML files whose documents are local JSON-lines files: the bits per byte of reviews in rolling windows,
and a multiple choice between a review's real continuation and one with two words swapped. The greedy soup is checked
against an independent transcription of the paper's algorithm scored by lm-eval itself (`simple_evaluate` on the
held-out rows, carved as the rule says); the refusals (lm-eval missing, an unknown task, a learned soup) come before
any request to the Hub. Tests that run the harness skip when lm-eval is not installed (`pip install
"hfsoup[lm-eval]"`; the test extra holds it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hfsoup.cli import main
from hfsoup.publish.card import build_card, read_soup_folder
from hfsoup.testing.families import publish_folder
from hfsoup.testing.llama import (
    REVIEW_BITS_TASK,
    WORD_ORDER_TASK,
    build_llama_family,
    write_review_bits_task,
    write_word_order_task,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = 80
HINT = "(Set HFSOUP_DEBUG=1 to see the traceback.)"


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> dict[str, Path]:
    return build_llama_family(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    write_review_bits_task(folder, n=DOCS)
    write_word_order_task(folder, n=DOCS)
    return folder


@pytest.fixture(scope="module")
def manager(tasks):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks))


def harness_metrics(folder: Path, state: dict, manager, names: list[str], rows: list[int]) -> dict:
    """lm-eval's own results for the model of `folder` with weights `state`, on documents `rows` of each task."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder).eval()
    model.load_state_dict(state, strict=False)
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(folder), batch_size=4)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=names,
        task_manager=manager,
        samples={name: list(rows) for name in names},
        bootstrap_iters=0,
        log_samples=False,
    )
    return out["results"]


def held_rows(n: int, *, fraction: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """The held-out rule, transcribed: a seeded permutation of the rows, its first share held out."""
    order = np.random.default_rng(seed).permutation(n)
    k = round(n * fraction)
    return sorted(order[:k].tolist()), sorted(order[k:].tolist())


def _average(states: list[dict]) -> dict:
    return {name: (sum(s[name].double() for s in states) / len(states)).float() for name in states[0]}


def test_greedy_soup_through_lm_eval_drops_the_shuffled_one_as_the_paper_would(llama, tasks, manager, tmp_path):
    names = ["ft0", "shuffled", "ft1", "ft2"]
    out = tmp_path / "soup"
    args = ["-q", "soup", *(str(llama[n]) for n in names), "-o", str(out), "--method", "greedy"]
    args += ["--task", f"lm-eval:{REVIEW_BITS_TASK}", "--lm-eval-include", str(tasks)]
    args += ["--no-plot", "--compare", "uniform", "--batch-size", "8"]
    assert main(args) == 0
    provenance = json.loads((out / "hfsoup.json").read_text())

    # The paper's greedy soup, transcribed, on the held-out documents, scored by lm-eval itself: best first by
    # held-out score (minus bits per byte), keep a candidate when the trial soup's score does not fall.
    held, report = held_rows(DOCS)
    states = [load_file(llama[n] / "model.safetensors") for n in names]

    def score(state: dict, rows: list[int]) -> float:
        found = harness_metrics(llama["ft0"], state, manager, [REVIEW_BITS_TASK], rows)
        return -found[REVIEW_BITS_TASK]["bits_per_byte,none"]

    alone = [score(s, held) for s in states]
    order = sorted(range(len(names)), key=lambda i: -alone[i])
    kept, best = [order[0]], alone[order[0]]
    for i in order[1:]:
        trial = score(_average([states[j] for j in [*kept, i]]), held)
        if trial >= best:
            kept, best = [*kept, i], trial

    specs = [i["spec"] for i in provenance["ingredients"]]
    assert set(provenance["greedy"]["kept"]) == {specs[i] for i in kept}
    assert specs[1] not in provenance["greedy"]["kept"] and provenance["weights"][1] == 0.0
    assert len(kept) >= 2  # a real soup, not only the best ingredient
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for i, spec in enumerate(specs):
        assert rows[spec]["held_out"]["lm_eval_score"] == pytest.approx(alone[i], rel=1e-4)
    greedy = rows["greedy soup"]
    assert greedy["held_out"]["lm_eval_score"] == pytest.approx(best, rel=1e-4)
    assert greedy["held_out"][f"{REVIEW_BITS_TASK}/bits_per_byte"] == pytest.approx(-best, rel=1e-4)
    # The reported figure is the other documents' (disjoint from the held-out ones), and the provenance says so.
    assert not set(held) & set(report) and len(held) + len(report) == DOCS
    soup = _average([states[i] for i in kept])
    assert greedy["report"]["lm_eval_score"] == pytest.approx(score(soup, report), rel=1e-4)
    evaluation = provenance["evaluation"]
    assert evaluation["metric"] == "lm_eval_score" and evaluation["metric_module"]["source"] == "lm-eval"
    assert evaluation["held_out"]["description"] == f"{REVIEW_BITS_TASK}: seeded 50% of test (seed 0, 40 rows)"
    assert evaluation["report"]["description"] == f"{REVIEW_BITS_TASK}: the other 50% of test (40 rows)"
    assert evaluation["tasks"] == [
        {"name": REVIEW_BITS_TASK, "split": "test", "metric": "bits_per_byte", "held_out_rows": 40, "report_rows": 40}
    ]
    assert "ensemble" not in rows and "uniform soup" in rows
    card = str(build_card(read_soup_folder(out)))
    assert f"Task `lm-eval:{REVIEW_BITS_TASK}`" in card and "EleutherAI's lm-eval harness" in card, card
    assert "seeded 50% of test" in card and "the other 50% of test" in card, card
    recipe = (out / "recipe.yaml").read_text()
    assert f"task: lm-eval:{REVIEW_BITS_TASK}" in recipe and "lm_eval_include:" in recipe


def test_several_tasks_average_their_first_metrics_on_the_slices_given(llama, tasks, manager, tmp_path):
    """Two tasks, held out and reported on slices: the score is the mean of each task's first metric (accuracy,
    and minus bits per byte), each on its own slice of documents, as lm-eval computes them."""
    out = tmp_path / "soup"
    args = ["-q", "soup", str(llama["ft0"]), str(llama["ft2"]), "-o", str(out), "--method", "uniform"]
    args += ["--task", f"lm-eval:{WORD_ORDER_TASK},{REVIEW_BITS_TASK}", "--lm-eval-include", str(tasks)]
    args += ["--held-out", "test[:25%]", "--report", "test[50%:]", "--no-plot", "--compare", "none"]
    assert main(args) == 0
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    provenance = json.loads((out / "hfsoup.json").read_text())
    state = load_file(llama["ft0"] / "model.safetensors")
    found = harness_metrics(llama["ft0"], state, manager, [WORD_ORDER_TASK, REVIEW_BITS_TASK], range(DOCS // 2, DOCS))
    accuracy, bits = found[WORD_ORDER_TASK]["acc,none"], found[REVIEW_BITS_TASK]["bits_per_byte,none"]
    reported = rows[provenance["ingredients"][0]["spec"]]["report"]
    assert reported[f"{WORD_ORDER_TASK}/acc"] == pytest.approx(accuracy)
    assert reported["lm_eval_score"] == pytest.approx((accuracy - bits) / 2, rel=1e-5)
    evaluation = provenance["evaluation"]
    assert [t["held_out_rows"] for t in evaluation["tasks"]] == [DOCS // 4, DOCS // 4]
    assert "test[:25%]" in evaluation["held_out"]["description"]


def _refused(args: list[str], capsys) -> str:
    """The one-paragraph refusal of `args` (exit 1, no traceback)."""
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = err.rstrip("\n").splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error:") and lines[1] == HINT, err
    return lines[0]


@pytest.fixture
def on_hub(local_hub, llama) -> list[str]:
    return [publish_folder(llama[n], f"hfsoup-testing/llama-{n}") for n in ("ft0", "ft1")]


def test_without_lm_eval_the_refusal_names_the_install_before_any_download(
    on_hub, local_hub, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` then raises ImportError
    local_hub.traffic.clear()
    out = tmp_path / "soup"
    message = _refused(["soup", *on_hub, "-o", str(out), "--method", "greedy", "--task", "lm-eval:hellaswag"], capsys)
    assert 'pip install "hfsoup[lm-eval]"' in message
    assert not local_hub.traffic and not out.exists()


def test_an_unknown_task_is_refused_with_how_to_list_tasks(on_hub, local_hub, tasks, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    local_hub.traffic.clear()
    args = ["soup", *on_hub, "-o", str(tmp_path / "soup"), "--method", "greedy", "--no-plot"]
    message = _refused([*args, "--task", "lm-eval:no_such_task", "--lm-eval-include", str(tasks)], capsys)
    assert "'no_such_task'" in message and "lm-eval ls tasks" in message and "--lm-eval-include" in message
    assert not local_hub.traffic
    # hfsoup eval does not run the harness: it says how to.
    message = _refused(["eval", str(tasks), "--task", f"lm-eval:{REVIEW_BITS_TASK}"], capsys)
    assert "lm-eval run --model hf" in message


def test_learned_soups_are_refused_with_lm_eval_tasks_before_any_download(on_hub, local_hub, tmp_path, capsys):
    local_hub.traffic.clear()
    args = ["soup", *on_hub, "-o", str(tmp_path / "soup"), "--no-plot", "--task", f"lm-eval:{REVIEW_BITS_TASK}"]
    message = _refused([*args, "--method", "learned"], capsys)
    assert "learned" in message and "differentiable" in message and "--method greedy" in message
    message = _refused([*args, "--method", "greedy", "--compare", "uniform,learned,fisher"], capsys)
    assert "learned, fisher" in message
    base = ["soup", *on_hub, "-o", str(tmp_path / "soup"), "--no-plot", "--method", "greedy"]
    message = _refused([*base, "--task", "sst2", "--lm-eval-include", str(tmp_path)], capsys)
    assert "not an lm-eval one" in message and "--task lm-eval:NAME" in message
    assert not local_hub.traffic


def test_a_split_the_task_does_not_evaluate_is_refused(llama, tasks, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    args = ["-q", "soup", str(llama["ft0"]), str(llama["ft1"]), "-o", str(tmp_path / "soup"), "--method", "greedy"]
    args += ["--task", f"lm-eval:{REVIEW_BITS_TASK}", "--lm-eval-include", str(tasks), "--no-plot"]
    message = _refused([*args, "--report", "train"], capsys)
    assert "evaluates its test split (80 documents)" in message and "reads its 'train' split" in message
    assert not (tmp_path / "soup").exists()


def test_the_weights_scored_are_the_candidates_and_the_loaded_model_keeps_its_parameters(llama):
    """The harness calls the model itself: a candidate is copied into the loaded model's own tensors (the same
    storage, so the harness's model sees it), every tensor of it."""
    pytest.importorskip("lm_eval")
    from transformers import LlamaForCausalLM

    from hfsoup.selection.harness import HarnessScorer

    model = LlamaForCausalLM.from_pretrained(llama["ft0"]).eval()
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    scorer = HarnessScorer(None, model, [], [])
    state = load_file(llama["shuffled"] / "model.safetensors")
    scorer._load(state)
    for name, parameter in model.named_parameters():
        assert parameter.data_ptr() == pointers[name]
        assert torch.equal(parameter.detach(), state[name]), name


def test_a_task_dataset_asking_for_remote_code_is_refused_before_datasets_sees_it(tasks):
    """lm-eval drops a YAML's trust_remote_code itself with datasets 4 and later (which run no scripts); with
    datasets 3 it would pass it on: while hfsoup loads lm-eval tasks, such a load is refused."""
    import datasets

    from hfsoup.errors import EvaluationError
    from hfsoup.evaluation.harness import no_remote_code

    data = str(next(tasks.glob("*.jsonl")))
    with no_remote_code(), pytest.raises(EvaluationError, match="never runs remote code"):
        datasets.load_dataset("json", data_files={"test": data}, trust_remote_code=True)
    with no_remote_code():
        assert len(datasets.load_dataset("json", data_files={"test": data})["test"]) == DOCS
    assert datasets.load_dataset.__name__ == "load_dataset"  # put back


def test_a_model_that_is_not_a_causal_lm_is_refused(tasks):
    pytest.importorskip("lm_eval")
    from transformers import BertConfig, BertForSequenceClassification

    from hfsoup.errors import EvaluationError
    from hfsoup.selection.harness import harness_selection
    from hfsoup.selection.options import Selection

    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    selection = Selection(task=f"lm-eval:{REVIEW_BITS_TASK}", lm_eval_include=str(tasks))
    with pytest.raises(EvaluationError, match="score causal language models; the ingredients are BertForSequence"):
        harness_selection(selection, BertForSequenceClassification(config), None)


def _copy_tasks(tasks: Path, folder: Path) -> Path:
    import shutil

    shutil.copytree(tasks, folder)
    return folder


def test_task_files_that_would_run_code_or_leave_the_include_folder_are_refused_before_lm_eval_reads_them(
    on_hub, local_hub, tasks, tmp_path, capsys
):
    """An include path is data: a task naming Python to run (`!function`, which lm-eval imports and calls), or an
    include leading out of the folder (absolute, `..`, a link), is refused before any download, and nothing runs."""
    pytest.importorskip("lm_eval")
    marker = tmp_path / "ran"
    evil = _copy_tasks(tasks, tmp_path / "evil")
    (evil / "utils.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef docs(d):\n    return d\n")
    yaml_file = evil / f"{REVIEW_BITS_TASK}.yaml"
    yaml_file.write_text(yaml_file.read_text() + "process_docs: !function utils.docs\n")
    args = ["soup", *on_hub, "-o", str(tmp_path / "soup"), "--method", "greedy", "--no-plot"]
    args += ["--task", f"lm-eval:{REVIEW_BITS_TASK}"]
    local_hub.traffic.clear()
    message = _refused([*args, "--lm-eval-include", str(evil)], capsys)
    assert "!function" in message and "runs no code" in message
    outside = tmp_path / "outside.yaml"
    outside.write_text("output_type: loglikelihood_rolling\n")
    for name, include in (("absolute", str(outside)), ("dotdot", "../outside.yaml")):
        folder = _copy_tasks(tasks, tmp_path / name)
        (folder / "extra.yaml").write_text(f"task: extra_{name}\ninclude: {include}\n")
        message = _refused([*args, "--lm-eval-include", str(folder)], capsys)
        assert "inside the include folder" in message or "leads outside" in message, message
    linked = _copy_tasks(tasks, tmp_path / "linked")
    (linked / "link.yaml").symlink_to(outside)
    assert "leads outside" in _refused([*args, "--lm-eval-include", str(linked)], capsys)
    assert not marker.exists() and not local_hub.traffic and not (tmp_path / "soup").exists()


def test_task_templates_render_in_a_sandbox_that_refuses_pythons_internals():
    """lm-eval renders prompts with a plain Jinja environment, where `{{ cycler.__init__.__globals__ }}` reaches
    os and everything else; while hfsoup loads and evaluates tasks the sandbox refuses it, and ordinary templates
    (lm-eval's own filters included) render as before."""
    pytest.importorskip("lm_eval")
    from jinja2.exceptions import SecurityError
    from lm_eval import utils

    from hfsoup.evaluation.harness import sandboxed_templates

    probe = "{{ cycler.__init__.__globals__.__name__ }}"
    assert utils.apply_template(probe, {}) == "jinja2.utils"  # unsandboxed, the template reaches a module
    plain = "Review: {{ text | regex_replace('o', '0') }}"
    with sandboxed_templates():
        with pytest.raises(SecurityError):
            utils.apply_template(probe, {})
        assert utils.apply_template(plain, {"text": "good"}) == "Review: g00d"
    assert utils.apply_template(probe, {}) == "jinja2.utils"  # put back


def test_lm_eval_splits_a_part_over_the_processes_only_when_each_has_a_document():
    """lm-eval cannot aggregate a task that a process has no document of: such a part is scored whole by every
    process (as with one), the others split; the model's rank and world size are one process's in between."""
    from hfsoup.evaluation.harness import _split

    class Model:
        _hfsoup_processes = (1, 2)  # what `share_across_processes` records: rank 1 of 2

    lm = Model()
    with _split(lm, [[3], [1, 2]]) as split:
        assert not split and (lm._rank, lm._world_size) == (0, 1)
    with _split(lm, [[3, 4], [1, 2]]) as split:
        assert split and (lm._rank, lm._world_size) == (1, 2)
    assert (lm._rank, lm._world_size) == (0, 1)
