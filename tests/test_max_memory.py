"""`--max-memory` (issue 19 item 4): each method's memory estimated from the safetensors headers, measured against
what its tensors really hold, and a run over the limit refused before any weight is downloaded."""

from __future__ import annotations

import json
import logging
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import MemoryLimitError
from hfsoup.io.checkpoint import read_safetensors_header
from hfsoup.soups import SOUPS, FisherSoup, GreedySoup, LearnedSoup, RegMeanSoup, UniformSoup, kernels
from hfsoup.soups.memory import MemoryContext, estimate, human_size
from hfsoup.testing.families import publish_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bert(sst2_finetunes) -> list[str]:
    return sst2_finetunes


@pytest.fixture
def dev_csv(sst2_dev_csv) -> Path:
    return sst2_dev_csv


def context_of(folder: str, **kwargs) -> MemoryContext:
    structure = read_safetensors_header(Path(folder) / "model.safetensors")
    config = json.loads((Path(folder) / "config.json").read_text())
    return MemoryContext(structure, 2, config=config, **kwargs)


class LiveTensorBytes(TorchDispatchMode):
    """The peak bytes of the tensors torch ops create while active (forward and backward), each counted from its
    creation until it is freed: a measure independent of the estimate, which reads only headers."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def _free(self, ptr: int, nbytes: int) -> None:
        self.seen.discard(ptr)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
            if nbytes == 0 or ptr in self.seen:  # a view of a tensor already counted
                continue
            self.seen.add(ptr)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, ptr, nbytes)
        return out


def test_the_estimate_reads_the_headers(bert):
    from transformers import AutoModelForSequenceClassification

    context = context_of(bert[0])

    counted = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(bert[0]).parameters())
    assert context.float_elements == counted  # every float tensor the checkpoint stores is a parameter here
    # Streamed, a few blocks per ingredient whatever the model; scored, model-sized.
    streamed = UniformSoup().memory_needed(context)
    blocks = kernels.BLOCK * 8 * (2 + 2)
    assert blocks <= streamed <= 4 * blocks
    scored = context_of(bert[0], scored=True, batch_size=4, max_length=16)
    sizes = {name: cls().memory_needed(scored) for name, cls in SOUPS.items() if not cls.needs_base}
    assert sizes["fisher"] > sizes["greedy"] > sizes["uniform"] >= 3 * context.params
    assert LearnedSoup().memory_needed(scored) >= (2 + 3) * context.params  # both ingredients held at once
    # RegMean's Gram matrices are d_in^2 per linear layer, from the shapes alone.
    grams = sum(8 * m.shape[1] ** 2 for n, m in context.structure.items() if n in context.linear_layers())
    assert RegMeanSoup().memory_parts(scored)[0].total == 2 * grams
    # The worst of the methods a run makes: greedy scored beside fisher does not hide fisher's need.
    assert estimate([GreedySoup(), FisherSoup()], scored).method == "fisher"


@pytest.mark.parametrize("cls", [FisherSoup, GreedySoup, LearnedSoup, RegMeanSoup], ids=lambda c: c.name)
def test_a_methods_estimate_matches_what_its_tensors_hold(bert, dev_csv, tmp_path, monkeypatch, cls):
    """A method's own tensors (Fisher's float64 sums and diagonals and a gradient, greedy's running sum and trial,
    the learned soup's mixed weights, RegMean's Grams; the activations) measured while it runs, against its
    `memory_parts`: within a factor of two either way."""
    measured = {}
    run = cls.run

    def measuring(self, context):
        with LiveTensorBytes() as mode:
            outcome = run(self, context)
        measured["peak"] = mode.peak
        return outcome

    monkeypatch.setattr(cls, "run", measuring)
    selection = hfsoup.Selection(
        task="sst2", data_files={"validation": [str(dev_csv)]}, compare=[], plot=False, batch_size=4, max_length=16
    )
    hfsoup.soup(bert, tmp_path / cls.name, method=cls.name, selection=selection)
    context = context_of(bert[0], scored=True, batch_size=4, max_length=16)
    estimated = sum(p.total for p in cls().memory_parts(context))
    assert measured["peak"] > 0
    assert 0.5 < estimated / measured["peak"] < 2, (human_size(estimated), human_size(measured["peak"]))


def weights_downloaded(hub) -> list[str]:
    """Weight files the local Hub sent whole (header reads are 206 Range answers and do not count)."""
    return [
        p for method, p, status, _ in hub.traffic if method == "GET" and p.endswith(".safetensors") and status == 200
    ]


def test_refused_before_any_weight_download(local_hub, bert, dev_csv, tmp_path, capsys):
    repos = [publish_folder(folder, f"mem/bert-{i}") for i, folder in enumerate(bert)]
    local_hub.traffic.clear()
    out = tmp_path / "soup"
    task = ["--task", "sst2", "--data-files", f"validation={dev_csv}", "--no-plot"]
    code = main(["-q", "soup", *repos, "-o", str(out), "--method", "fisher", *task, "--max-memory", "100kB"])
    err = capsys.readouterr().err
    assert code == 1
    assert weights_downloaded(local_hub) == [] and not out.exists()
    assert "Traceback (most recent" not in err and err.startswith("Error: "), err
    assert len([line for line in err.splitlines() if not line.startswith("(Set HFSOUP_DEBUG")]) == 1, err
    assert "fisher soup needs about" in err and "float64 running sums" in err
    assert "--max-memory allows 100 kB" in err and "--max-memory" in err.split("allows")[1]  # the fix names it
    with pytest.raises(MemoryLimitError):
        hfsoup.soup(
            repos, tmp_path / "api", method="fisher", selection=hfsoup.Selection(task="sst2"), max_memory="100kB"
        )


def test_a_limit_above_the_need_runs_and_v_logs_the_estimate(bert, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hfsoup"):
        assert main(["-v", "soup", *bert, "-o", str(tmp_path / "soup"), "--max-memory", "1GB"]) == 0
    assert "memory: the uniform soup needs about" in caplog.text
    assert main(["-q", "soup", *bert, "-o", str(tmp_path / "none"), "--max-memory", "none"]) == 0
    # A size that is no size is the usage error argparse gives (exit 2), naming the flag.
    with pytest.raises(SystemExit) as exit_info:
        main(["soup", *bert, "-o", str(tmp_path / "bad"), "--max-memory", "lots"])
    assert exit_info.value.code == 2


def test_a_recipe_sets_max_memory(bert, dev_csv, tmp_path, capsys):
    recipe = {
        "ingredients": bert,
        "method": {"name": "greedy"},
        "evaluation": {"task": "sst2", "data_files": {"validation": [str(dev_csv)]}, "plot": False},
        "output": {"dir": str(tmp_path / "cooked"), "max_memory": "10kB"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    assert main(["cook", str(path)]) == 1
    assert "greedy soup needs about" in capsys.readouterr().err
    assert not (tmp_path / "cooked").exists()
    # `hfsoup cook --max-memory` overrides the recipe's; `none` lifts it.
    assert main(["-q", "cook", str(path), "--max-memory", "1kB"]) == 1
    assert "allows 1.0 kB" in capsys.readouterr().err
    assert main(["-q", "cook", str(path), "--max-memory", "none"]) == 0
    assert (tmp_path / "cooked" / "model.safetensors").is_file()
    recipe["output"]["max_memory"] = "lots"
    path.write_text(json.dumps(recipe))
    assert main(["validate", str(path)]) != 0
    assert "output.max_memory" in capsys.readouterr().err
