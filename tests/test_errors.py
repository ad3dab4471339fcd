"""Errors keep their structure: a refused soup carries its compatibility report and every mismatch, every error
class is public and documented, fixes name the CLI flag and the Python keyword, and the CLI still prints one
paragraph and the error's exit code."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import hfsoup
from hfsoup import errors
from hfsoup.cli import build_parser, format_error, main
from hfsoup.compat import CompatReport
from hfsoup.errors import (
    IncompatibleIngredientsError,
    InvalidSoupArgumentsError,
    MissingWeightsError,
    NotASoupError,
    OutputExistsError,
    RecipeError,
    option,
)
from hfsoup.testing.families import build_family


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """The tiny BERT family's members by name (`ft0`, `num_labels`, `arch_mismatch`, `impostor`, ...)."""
    return build_family("bert", tmp_path_factory.mktemp("bert"), n_finetunes=2, seed=0).folders()


def finding_line(f) -> str:
    return f"{f.check}: [{f.ingredient}] {f.message}" if f.ingredient else f"{f.check}: {f.message}"


def test_a_refused_soup_carries_its_report_and_every_mismatch(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(bert["ft0"].parent)  # folders named as the soup names them, so both reports read alike
    specs = ["ft0", "num_labels", "arch_mismatch"]
    out = tmp_path / "out"
    with pytest.raises(IncompatibleIngredientsError) as info:
        hfsoup.soup(specs, out)
    error = info.value
    assert isinstance(error.report, CompatReport) and not error.report.ok
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # refused before anything was written
    # The report is the one `hfsoup.check` gives for the same ingredients, finding for finding.
    checked = hfsoup.check(specs, weights=False)
    assert [dataclasses.asdict(f) for f in error.report.findings] == [dataclasses.asdict(f) for f in checked.findings]
    # `problems` lists every mismatch of both ingredients, one line each, and the message names each of them.
    assert error.problems == [finding_line(f) for f in error.report.errors]
    assert len(error.problems) == len(checked.errors) >= 2
    assert {f.ingredient for f in error.report.errors} == {"num_labels", "arch_mismatch"}
    assert {f.check for f in error.report.errors} >= {"labels", "tensors"}
    for f in error.report.errors:
        assert f.message in error.message


def test_a_refusal_after_streaming_carries_the_measured_report(bert, tmp_path):
    with pytest.raises(IncompatibleIngredientsError) as info:
        hfsoup.soup([bert["ft0"], bert["impostor"], bert["ft1"]], tmp_path / "out")
    report = info.value.report
    assert report.weights_checked and report.similarity is not None
    (finding,) = [f for f in report.errors if f.check == "shared-init"]
    assert finding.ingredient == "impostor"
    assert finding_line(finding) in info.value.problems
    assert "--force (force=True)" in info.value.fix


def _checkpoint(folder, ids: torch.Tensor, seed: int):
    base, noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(seed)
    weight = torch.randn(8, 6, generator=base) + 0.01 * torch.randn(8, 6, generator=noise)
    folder.mkdir()
    save_file({"encoder.weight": weight, "position_ids": ids}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return folder


def test_unequal_integer_buffers_met_mid_stream_carry_the_report(tmp_path):
    """The engine finds these while writing, without a report: the error still carries one, with this finding."""
    specs = [_checkpoint(tmp_path / "a", torch.arange(6), 1), _checkpoint(tmp_path / "b", torch.arange(6) + 1, 2)]
    with pytest.raises(IncompatibleIngredientsError, match="'position_ids'") as info:
        hfsoup.soup(specs, tmp_path / "out")
    report = info.value.report
    assert isinstance(report, CompatReport) and not report.ok
    assert [f.check for f in report.errors] == ["dtypes"] and "position_ids" in report.errors[0].message
    assert info.value.problems == [finding_line(report.errors[0])]
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_one_paragraph_and_the_exit_code(bert, tmp_path, capsys):
    code = main(
        ["soup", str(bert["ft0"]), str(bert["num_labels"]), str(bert["arch_mismatch"]), "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == IncompatibleIngredientsError.exit_code == 1
    lines = err.strip().splitlines()
    # The stages that ran (a line each), the paragraph, then the debug hint: the problems are in the paragraph, not
    # listed again under it.
    start = next(i for i, line in enumerate(lines) if line.startswith("Error:"))
    assert [line.split()[0] for line in lines[:start]] == ["Pinning", "Checking"]
    lines = lines[start:]
    assert len(lines) == 2 and lines[0].startswith("Error: The ingredients must not be souped together.")
    assert lines[1] == "(Set HFSOUP_DEBUG=1 to see the traceback.)"
    assert "\n  - " not in err and "Traceback" not in err
    assert "has 3 labels" in lines[0] and "--force (force=True)" in lines[0]
    # A recipe's problems are still listed one per line under its message.
    listed = format_error(RecipeError("The recipe has 2 problems.", problems=["a: bad", "b: worse"]))
    assert listed.splitlines()[1:3] == ["  - a: bad", "  - b: worse"]


def test_a_folder_that_is_not_a_soup_lists_its_problems_in_one_paragraph(tmp_path):
    (tmp_path / "hfsoup.json").write_text(json.dumps({"method": "uniform"}))
    with pytest.raises(NotASoupError) as info:
        hfsoup.read_soup_folder(tmp_path)
    assert len(info.value.problems) >= 3 and all(p in info.value.message for p in info.value.problems)
    assert len(format_error(info.value).splitlines()) == 2


def _error_classes() -> list[type]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.HfsoupError) and cls.__module__ == errors.__name__
    ]


def test_every_error_class_is_exported_and_documented():
    classes = _error_classes()
    assert {"DiskFullError", "CorruptDownloadError", "OutputCollisionError", "UnsafePathError"} <= {
        c.__name__ for c in classes
    }
    for cls in classes:
        assert cls.__name__ in hfsoup.__all__, cls
        assert getattr(hfsoup, cls.__name__) is cls
        doc = cls.__dict__.get("__doc__") or ""  # its own docstring, not its parent's
        assert len(doc.split()) >= 6, f"{cls.__name__} has no docstring of its own"
    # Reached through the lazy table, without torch (the CLI's start-up path imports errors too).
    names = ", ".join(c.__name__ for c in classes)
    code = f"import sys, hfsoup; from hfsoup import {names}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_option_renders_the_flag_and_the_keyword_from_one_name():
    assert option("overwrite") == "--overwrite (overwrite=True)"
    assert option("align_labels", False) == "--no-align-labels (align_labels=False)"
    assert option("dtype", "bf16") == "--dtype bf16 (dtype='bf16')"
    assert option("weights", [0.6, 0.4]) == "--weights 0.6,0.4 (weights=[0.6, 0.4])"
    assert option("dataset", ...) == "--dataset (dataset=...)"
    assert option("output_dir", metavar="DIR", flag="-o") == "-o DIR (output_dir=DIR)"
    assert option("size", 3, flag="--held-out-size", within="Selection") == "--held-out-size 3 (Selection(size=3))"


def _raised(call) -> errors.HfsoupError:
    with pytest.raises(errors.HfsoupError) as info:
        call()
    return info.value


@pytest.fixture
def fixes(tmp_path, bert) -> list[str]:
    """The fixes of real errors raised from the Python API, one per kind of option."""
    from hfsoup.io.checkpoint import CheckpointReader
    from hfsoup.selection.heldout import carve
    from hfsoup.soups.greedy import GreedySoup
    from hfsoup.soups.learned import LearnedSoup

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("not hfsoup's")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"w": torch.zeros(2)}, pickled / "pytorch_model.bin")
    raised = [
        (OutputExistsError, lambda: hfsoup.soup([bert["ft0"], bert["ft1"]], taken)),
        (MissingWeightsError, lambda: CheckpointReader(pickled)),
        (
            InvalidSoupArgumentsError,
            lambda: hfsoup.soup([bert["ft0"], bert["ft1"]], tmp_path / "o", options={"weights": [1, 1]}),
        ),
        (IncompatibleIngredientsError, lambda: hfsoup.soup([bert["ft0"], bert["num_labels"]], tmp_path / "o")),
        (errors.EvaluationError, lambda: carve({"validation": 10}, held_out=None, report="validation", fraction=2)),
        (errors.EvaluationError, lambda: carve({"validation": 10}, held_out=None, report="validation", size=20)),
        (InvalidSoupArgumentsError, lambda: GreedySoup(accept="often")),
        (InvalidSoupArgumentsError, lambda: LearnedSoup(steps=0)),
    ]
    found = []
    for kind, call in raised:
        error = _raised(call)
        assert isinstance(error, kind), error
        found.append(error.fix)
    return found


# `--flag [VALUE] (keyword=...)` or `--flag [VALUE] (Object(keyword=...))`, as `option` writes them.
_PAIR = re.compile(r"(--[a-z][a-z-]*|-o)(?: [^ ()]+)? \((?:(\w+)\()?(\w+)=")


def test_fixes_name_the_flag_and_the_keyword_and_both_exist(fixes):
    soup_flags = {
        s for a in build_parser()._subparsers._group_actions[0].choices["soup"]._actions for s in a.option_strings
    }
    keywords = {
        None: set(inspect.signature(hfsoup.soup).parameters),
        "Selection": {f.name for f in dataclasses.fields(hfsoup.Selection)},
        # Each method's options, named as its class takes them (`GreedySoup(accept="gt")`).
        **{cls.__name__: {f.name for f in dataclasses.fields(cls.Options)} for cls in hfsoup.SOUPS.values()},
    }
    named = set()
    for fix in fixes:
        pairs = _PAIR.findall(fix)
        assert pairs, f"no flag with its keyword in: {fix}"
        for flag, within, keyword in pairs:
            assert flag in soup_flags, (flag, fix)
            assert keyword in keywords[within or None], (keyword, fix)
            named.add(flag)
    # The sample covers switches, values, lists and Selection's options.
    assert {"--overwrite", "--allow-pickle", "--weights", "--force", "--held-out-fraction", "--accept"} <= named
    assert "--weights 0.5,0.5 (UniformSoup(weights=[0.5, 0.5]))" in " ".join(fixes)
