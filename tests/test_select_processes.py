"""A greedy soup selected by 2 processes (torchrun, CPU, gloo) is the one process's: same decisions, same scores, same
bytes; and each process scored only its share of the batches.

Five BERT fine-tunes whose predictions vary from example to example (`build_glue_finetunes`), so that the greedy
search keeps some, drops others and stops some trials early; 40 local rows, batches of 4: the held-out part's 5
batches split 3 and 2. The learned soup is compared too: its gradient is summed in the same order whatever the number
of processes, so even its weights are equal, not close. Then the tiny T5 family (text to text, label words scored by
decoder passes), in batches of 20: one batch per part, so the second process has none to score.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hfsoup.cli import main
from hfsoup.testing.glue import build_glue_finetunes, write_glue_csv
from hfsoup.testing.llama import REVIEW_BITS_TASK, build_llama_family, write_review_bits_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Where the ingredients and the data live, and where both runs start (so they name the ingredients alike)."""
    return tmp_path_factory.mktemp("processes")


@pytest.fixture(scope="module")
def dev_csv(root) -> Path:
    """40 rows of the tiny GLUE's sst2 sentences with random labels, as a local CSV."""
    return write_glue_csv(root / "dev.csv", "sst2", 40)


@pytest.fixture(scope="module")
def bert(root, families) -> list[str]:
    return [str(p) for p in build_glue_finetunes(families["bert"].base, "sst2", root / "bert", n_finetunes=5)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soup_args(specs: list[str], data: Path, out: Path, batch_size: int) -> list[str]:
    return [
        *("-v", "soup", *specs, "--method", "greedy", "--task", "sst2", "--data-files", f"validation={data}"),
        *("--batch-size", str(batch_size), "--compare", "uniform,learned,ensemble", "--no-plot", "-o", str(out)),
    ]


def one_and_two(specs, data, root, tmp_path, monkeypatch, capsys, *, batch_size, make_args=soup_args):
    """The soup by one process (in this one) and by two (torchrun); the two folders and the torchrun run.
    `make_args(specs, data, out, batch_size)` gives the `hfsoup` arguments (`soup_args`: greedy on sst2)."""
    monkeypatch.chdir(root)
    single = tmp_path / "single"
    assert main(make_args(specs, data, single, batch_size)) == 0
    capsys.readouterr()
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}",  # nothing listens: no request can leave loopback
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",  # as this process scores (conftest): the same kernels, the same bits
    }
    for key in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_EVALUATE_CACHE", "HF_TOKEN_PATH"):
        env.pop(key, None)
    double = tmp_path / "double"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"),
        *(f"--master_port={_free_port()}", "-m", "hfsoup.cli", *make_args(specs, data, double, batch_size)),
    ]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return single, double, done


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_same_soup(single: Path, double: Path) -> dict:
    """Every file alike, hfsoup.json but for its time of creation; returns the single run's provenance."""
    files = sorted(p.name for p in single.iterdir())
    assert files == sorted(p.name for p in double.iterdir())
    for name in files:
        if name != "hfsoup.json":
            assert (single / name).read_bytes() == (double / name).read_bytes(), name
    one, two = read_json(single / "hfsoup.json"), read_json(double / "hfsoup.json")
    one.pop("created_at"), two.pop("created_at")
    assert one == two  # the greedy record (order, kept, decisions, bounds), the learned weights, the scores
    return one


def test_two_processes_select_the_greedy_soup_of_one(bert, dev_csv, root, tmp_path, monkeypatch, capsys):
    single, double, done = one_and_two(bert, dev_csv, root, tmp_path, monkeypatch, capsys, batch_size=4)
    provenance = assert_same_soup(single, double)
    assert {"model.safetensors", "results.json", "results.csv"} <= {p.name for p in double.iterdir()}

    # The search had decisions to make: kept ones, dropped ones, and trials stopped early on a bound.
    decisions = provenance["greedy"]["decisions"]
    assert len(decisions) == 4
    assert any(d["kept"] for d in decisions) and not all(d["kept"] for d in decisions)
    assert any(d["trial"] is None for d in decisions)
    learned = provenance["baselines"]["learned"]
    assert learned["loss"] < learned["uniform_loss"] and learned["best_step"] > 0  # the learned soup moved
    rows = read_json(single / "results.json")["rows"]
    assert len({r["held_out"]["accuracy"] for r in rows}) > 1  # the scores differ from model to model

    # Each process scored its share of each part's 5 batches (held-out and reported: two lines each) ...
    for rank, share in ((0, 3), (1, 2)):
        assert done.stderr.count(f"process {rank}/2: {share} of the 5 batches of validation (20 rows)") == 2
    # ... and one of them told the rest, printed the summary and wrote the files.
    assert done.stdout.count("held-out accuracy") == 1  # the results table's header: one table, from rank 0
    assert done.stderr.count("greedy soup: starting from") == 1
    assert done.stdout.count("greedy soup of 5 ingredients written to") == 1


def test_two_processes_select_the_t5_soup_of_one_with_a_process_idle(
    families, dev_csv, root, tmp_path, monkeypatch, capsys
):
    specs = [str(p) for p in families["t5"].finetunes]
    single, double, done = one_and_two(specs, dev_csv, root, tmp_path, monkeypatch, capsys, batch_size=20)
    provenance = assert_same_soup(single, double)
    assert len(provenance["greedy"]["decisions"]) == len(specs) - 1
    assert done.stderr.count("process 1/2: 0 of the 1 batches of validation (20 rows)") == 2
    assert done.stderr.count("process 0/2: 1 of the 1 batches of validation (20 rows)") == 2


def lm_eval_args(tasks: Path):
    def make(specs: list[str], data: Path, out: Path, batch_size: int) -> list[str]:
        return [
            *("-v", "soup", *specs, "--method", "greedy", "--task", f"lm-eval:{REVIEW_BITS_TASK}"),
            *("--lm-eval-include", str(tasks), "--batch-size", str(batch_size), "--compare", "uniform"),
            *("--no-plot", "-o", str(out)),
        ]

    return make


@pytest.mark.slow
def test_two_processes_split_the_lm_eval_documents_and_select_the_soup_of_one(root, tmp_path, monkeypatch, capsys):
    """Greedy over four tiny Llama fine-tunes (one trained on shuffled text) scored by a local lm-eval task: with two
    processes each scores half of every part's documents, and the soup, its decisions and its scores are one
    process's (the scores to rounding: the gathered documents are summed in another order)."""
    pytest.importorskip("lm_eval")
    llama = build_llama_family(root / "llama")
    tasks = root / "lm-eval-tasks"
    tasks.mkdir(exist_ok=True)
    write_review_bits_task(tasks, n=40)
    specs = [str(llama[n]) for n in ("ft0", "shuffled", "ft1", "ft2")]
    single, double, done = one_and_two(
        specs, tasks, root, tmp_path, monkeypatch, capsys, batch_size=8, make_args=lm_eval_args(tasks)
    )
    assert (single / "model.safetensors").read_bytes() == (double / "model.safetensors").read_bytes()
    one, two = read_json(single / "hfsoup.json"), read_json(double / "hfsoup.json")
    assert one["greedy"]["kept"] == two["greedy"]["kept"] and one["weights"] == two["weights"]
    assert specs[1] not in one["greedy"]["kept"]  # the shuffled one is dropped, by both
    assert [d["kept"] for d in one["greedy"]["decisions"]] == [d["kept"] for d in two["greedy"]["decisions"]]
    rows = {r["name"]: r for r in read_json(single / "results.json")["rows"]}
    for row in read_json(double / "results.json")["rows"]:
        for part in ("held_out", "report"):
            assert row[part]["lm_eval_score"] == pytest.approx(rows[row["name"]][part]["lm_eval_score"], rel=1e-6)
    # Each process scored half of the 20 held-out and of the 20 reported documents, for every model it scored.
    for rank in (0, 1):
        assert done.stderr.count(f"lm-eval: process {rank}/2 scores 10 of the 20 documents") >= 2
    assert "of the 20 documents" in done.stderr and "scores 20 of the 20" not in done.stderr
