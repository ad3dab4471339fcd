"""Contracts that must survive a restructure (issue 14): what hfsoup 0.1.0 writes on disk and how its CLI behaves.

Each golden value below was captured from hfsoup 0.1.0's own output and pasted here as a literal: the literal is the
contract, so none of it is computed by the code under test. Soups, recipes and interrupted runs made before an
upgrade must still be read, reused and resumed after it. The tests go through the CLI and the files on disk; the
few internal helpers they need are imported in the one block below, so that a move repoints them there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hfsoup
from hfsoup.cli import main

# ---- the only internal imports of this file: repoint these when modules move ------------------------------------
from hfsoup.io.checkpoint import CheckpointReader
from hfsoup.soups.engine import plan_soup

from .test_attack_outputs import tree
from .test_recipes import MALFORMED, write_recipe
from .test_soup_local import make_checkpoint

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


def read_json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ingredients")
    return [make_checkpoint(root / f"ft{i}", seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def uniform_soup(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uniform") / "soup"
    assert main(["-q", "soup", *map(str, folders), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def greedy_soup(families, tmp_path_factory) -> Path:
    """A greedy soup of the tiny BERT fine-tunes scored on an 8-row local csv: the cheapest --task setup."""
    root = tmp_path_factory.mktemp("greedy")
    data = root / "dev.csv"
    data.write_text("sentence,label\n" + "".join(f"soup number {i},{i % 2}\n" for i in range(8)))
    specs = [str(families["bert"].folders()[f"ft{i}"]) for i in range(3)]
    out = root / "soup"
    args = ["-q", "soup", *specs, "-o", str(out), "--method", "greedy", "--task", "sst2"]
    args += ["--compare", "uniform,learned,ensemble"]  # the learned soup is compared when named
    assert main([*args, "--data-files", f"validation={data}", "--no-plot"]) == 0
    return out


# ---- 1. hfsoup.json ---------------------------------------------------------------------------------------------

PROVENANCE_KEYS = {
    "hfsoup_version", "created_at", "method", "weights", "dtype", "ingredients", "config_from", "compatibility",
    "files",
    "hfsoup_install",  # added by issue 16 (how hfsoup was installed, for the card's install line): readers ignore it
}  # fmt: skip
LOCAL_INGREDIENT_KEYS = {"spec", "folder", "weights_format", "checksums"}
COMPATIBILITY_KEYS = {"findings", "label_alignment", "similarity", "weights_checked", "ok", "forced"}
SIMILARITY_KEYS = {
    "names", "body_cosine", "body_rel_l2", "head_cosine", "head_rel_l2", "base", "body_cosine_to_base",
    "body_rel_l2_to_base",
}  # fmt: skip
EVALUATION_KEYS = {"task", "dataset", "dataset_config", "dataset_sha", "metric", "metric_module", "held_out", "report"}
METRIC_MODULE_KEYS = {"name", "config", "source", "hfsoup_version"}
PART_KEYS = {"split", "description", "metrics"}
GREEDY_KEYS = {"accept", "order", "kept", "score", "decisions", "examples_scored", "examples_full"}
DECISION_KEYS = {"name", "alone", "before", "trial", "bound", "kept", "examples"}
BASELINES = {
    "uniform": {"held_out_loss"},
    "learned": {"by_layer", "weights", "per_tensor", "uniform_loss", "loss", "history", "best_step", "held_out_loss"},
}


def test_uniform_soup_provenance_keys(uniform_soup):
    provenance = read_json(uniform_soup / "hfsoup.json")
    assert set(provenance) == PROVENANCE_KEYS
    assert provenance["method"] == "uniform" and len(provenance["ingredients"]) == 3
    for ingredient in provenance["ingredients"]:
        assert set(ingredient) == LOCAL_INGREDIENT_KEYS
        assert {k: set(v) for k, v in ingredient["checksums"].items()} == {
            "model.safetensors": {"size", "header_sha256"}
        }
    assert set(provenance["compatibility"]) == COMPATIBILITY_KEYS
    assert set(provenance["compatibility"]["similarity"]) == SIMILARITY_KEYS
    # recipe.yaml: added by issue 16, the recipe that remakes the soup (pushed with it).
    assert provenance["files"] == ["config.json", "model.safetensors", "recipe.yaml", "tokenizer.json"]


def test_greedy_soup_provenance_keys(greedy_soup):
    provenance = read_json(greedy_soup / "hfsoup.json")
    # local_data_files: added by issue 16, the local csv by name, sha256 and rows (it is not pushed).
    assert set(provenance) == PROVENANCE_KEYS | {"evaluation", "greedy", "baselines", "local_data_files"}
    for ingredient in provenance["ingredients"]:  # the family's local folders have a card: its metadata is kept
        assert set(ingredient) == LOCAL_INGREDIENT_KEYS | {"card"}
        assert set(ingredient["card"]) == {"license", "base_model", "pipeline_tag"}
    evaluation = provenance["evaluation"]
    assert set(evaluation) == EVALUATION_KEYS and set(evaluation["metric_module"]) == METRIC_MODULE_KEYS
    assert set(evaluation["held_out"]) == PART_KEYS and set(evaluation["report"]) == PART_KEYS
    greedy = provenance["greedy"]
    assert set(greedy) == GREEDY_KEYS and len(greedy["decisions"]) == 2
    for decision in greedy["decisions"]:
        assert set(decision) == DECISION_KEYS
    assert {name: set(record) for name, record in provenance["baselines"].items()} == BASELINES
    assert set(provenance["compatibility"]) == COMPATIBILITY_KEYS


# ---- 2. results.json and results.csv ------------------------------------------------------------------------------

RESULTS_KEYS = {"metric", "held_out", "report", "best_individual", "rows", "metric_module"}
ROW_KEYS = {"name", "kind", "method", "sha", "kept", "held_out", "report"}
ROWS = [  # a greedy soup with --compare uniform,learned,ensemble (the learned soup's record is pinned too)
    ("ft0", "ingredient", None),
    ("ft1", "ingredient", None),
    ("ft2", "ingredient", None),
    ("uniform soup", "soup", "uniform"),
    ("greedy soup", "soup", "greedy"),
    ("learned soup", "soup", "learned"),
    ("ensemble", "ensemble", None),
]
CSV_HEADER = "name,kind,method,sha,kept,held_out/accuracy,report/accuracy"


def test_results_table_files(greedy_soup):
    results = read_json(greedy_soup / "results.json")
    assert set(results) == RESULTS_KEYS and set(results["metric_module"]) == METRIC_MODULE_KEYS
    assert [(r["name"], r["kind"], r["method"]) for r in results["rows"]] == ROWS
    for row in results["rows"]:
        assert set(row) == ROW_KEYS and set(row["held_out"]) == set(row["report"]) == {"accuracy"}
    lines = (greedy_soup / "results.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER and [line.split(",")[0] for line in lines[1:]] == [r[0] for r in ROWS]
    assert {"results.json", "results.csv"} <= set(read_json(greedy_soup / "hfsoup.json")["files"])


# ---- 3. a finished soup of a recipe is reused: hfsoup.json's `recipe` against the recipe's to_dict() ----------

GREEDY_RECIPE = {
    "name": "contract-greedy",
    "ingredients": ["ft0", "ft1", "ft2"],
    "method": {"name": "greedy"},
    "evaluation": {"task": "sst2", "data_files": {"validation": "dev.csv"}, "batch_size": 8, "compare": ["uniform"]},
    "output": {"dir": "soup"},
}
# What hfsoup 0.1.0 wrote as hfsoup.json's `recipe` for GREEDY_RECIPE (`Recipe.to_dict()`), pasted verbatim.
GREEDY_RECIPE_RECORD = {
    "ingredients": [{"id": "ft0", "revision": None}, {"id": "ft1", "revision": None}, {"id": "ft2", "revision": None}],
    "output": {"dir": "soup", "dtype": "auto", "max_shard_size": "5GB", "overwrite": False},
    "name": "contract-greedy",
    "method": {
        "name": "greedy", "weights": None, "accept": "ge", "early_stop": True, "by_layer": False, "steps": 20,
        "lr": 0.05,
    },
    "evaluation": {
        "task": "sst2", "report": "validation", "held_out": None, "fraction": 0.5, "size": None, "seed": 0,
        "dataset": None, "data_files": {"validation": ["dev.csv"]}, "batch_size": 8, "max_length": None,
        "compare": ["uniform"], "plot": True, "force": False,
    },
    "force": False,
}  # fmt: skip
UNIFORM_RECIPE = {
    "name": "contract-uniform",
    "ingredients": ["ft0", "ft1", "ft2"],
    "method": {"name": "uniform", "weights": [0.5, 0.3, 0.2]},
    "output": {"dir": "soup"},
}
# What hfsoup 0.1.0 wrote as hfsoup.json's `recipe` for UNIFORM_RECIPE, pasted verbatim.
UNIFORM_RECIPE_RECORD = {
    "ingredients": [{"id": "ft0", "revision": None}, {"id": "ft1", "revision": None}, {"id": "ft2", "revision": None}],
    "output": {"dir": "soup", "dtype": "auto", "max_shard_size": "5GB", "overwrite": False},
    "name": "contract-uniform",
    "method": {
        "name": "uniform", "weights": [0.5, 0.3, 0.2], "accept": "ge", "early_stop": True, "by_layer": False,
        "steps": 20, "lr": 0.05,
    },
    "force": False,
}  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "record", "method"),
    [(GREEDY_RECIPE, GREEDY_RECIPE_RECORD, "greedy"), (UNIFORM_RECIPE, UNIFORM_RECIPE_RECORD, "uniform")],
    ids=["greedy", "uniform"],
)
def test_cook_reuses_a_soup_cooked_by_0_1_0(folders, uniform_soup, tmp_path, capsys, recipe, record, method):
    kitchen = tmp_path / "kitchen"
    for folder in folders:
        shutil.copytree(folder, kitchen / folder.name)
    (kitchen / "dev.csv").write_text("sentence,label\na,0\nb,1\n")
    path = write_recipe(kitchen / "recipe.yaml", recipe)
    # A finished soup whose hfsoup.json holds the recipe record as 0.1.0 wrote it.
    out = shutil.copytree(uniform_soup, kitchen / "soup")
    provenance = read_json(out / "hfsoup.json")
    provenance.update(method=method, recipe=record)
    (out / "hfsoup.json").write_text(json.dumps(provenance, indent=2) + "\n")
    before = tree(kitchen)

    assert main(["cook", str(path)]) == 0
    assert "already holds this recipe's soup" in capsys.readouterr().out
    assert tree(kitchen) == before  # nothing written, moved or staged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitchen"]


# ---- 4. the soup plan fingerprint and the progress records: --resume of a soup interrupted before the upgrade ----

FIXED_SHAPES = {f"layer.{i}.weight": [64, 48] for i in range(5)} | {"head.weight": [2, 64]}
MTIME_NS = 1_700_000_000_000_000_000  # local ingredients are pinned by their files' sizes and mtimes


def fixed_checkpoint(folder: Path, seed: int) -> Path:
    """A checkpoint whose every byte and mtime is fixed: the safetensors file is written by hand (float32 values
    from integer arithmetic only), so no library version can change what the fingerprint sees."""
    import numpy as np

    header, blobs, offset = {}, [], 0
    for name, shape in FIXED_SHAPES.items():
        index = np.arange(int(np.prod(shape)), dtype=np.int64)
        base, noise = (index * 31) % 101 / 101.0 - 0.5, ((index * 7 + seed * 13) % 11 / 11.0 - 0.5) * 0.02
        values = (base + noise).astype("<f4").tobytes()  # a shared "base" plus a little seeded "fine-tuning"
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(values)]}
        blobs.append(values)
        offset += len(values)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))
    (folder / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}\n')
    for path in folder.iterdir():
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return folder


# Captured from hfsoup 0.1.0: the plan of two fixed checkpoints in 30 KB shards with a fixed identity ...
FIXED_IDENTITY = [["ft0", "pinned"], ["ft1", "pinned"], "uniform", [0.5, 0.5], None, {"alignment": {}}]
PLAN_FINGERPRINT = "5a99de39a10d913e0a8df7aa26bdcc4de8a8057111373a23318378ce71aba7d5"
# ... and the one `hfsoup soup ft0 ft1 ft2 -o out --max-shard-size 30KB` records for them (run from their folder).
SOUP_FINGERPRINT = "1549d56795ee8664e6af99065b164a918cbf808de4e05061e180ec513f7695b3"
SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]
STAGING = ".out.hfsoup-tmp-partial"  # the staging folder beside `out`, and its progress records' folder
PROGRESS = ".hfsoup-progress"
# The records of 0.1.0 also gave each shard's sha256 (see the legacy test below); nothing trusted it (resume compares
# a recomputation with the staged bytes), and it cost 1.3 s of CPU per 2.2 GB written, so the writer dropped it.
RECORD_KEYS = {"fingerprint", "file", "meter"}
METER_KEYS = {"body", "body_tensors", "head", "head_tensors", "non_finite", "unequal_buffers"}


def test_plan_fingerprint(tmp_path):
    readers = [CheckpointReader(fixed_checkpoint(tmp_path / f"ft{i}", seed=i)) for i in range(2)]
    plan = plan_soup(readers, dtype=None, max_shard_size=30_000, identity=FIXED_IDENTITY)
    for reader in readers:
        reader.close()
    assert list(plan.files) == SHARDS
    assert plan.fingerprint == PLAN_FINGERPRINT


def soup_cli(*args: str, out: str = "out") -> list[str]:
    command = [sys.executable, "-m", "hfsoup.cli", "soup", "ft0", "ft1", "ft2", "-o", out, "--max-shard-size", "30KB"]
    return command + list(args)


def test_interrupted_soup_records_and_resume(tmp_path):
    for i in range(3):
        fixed_checkpoint(tmp_path / f"ft{i}", seed=i)
    env = {**os.environ, "HFSOUP_FAULT": "shard-written:2"}
    killed = subprocess.run(soup_cli(), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert killed.returncode == 77, killed.stderr
    assert not (tmp_path / "out").exists()
    progress = tmp_path / STAGING / PROGRESS
    assert sorted(p.name for p in progress.iterdir()) == [f"{s}.json" for s in SHARDS[:2]]
    for shard in SHARDS[:2]:
        record = read_json(progress / f"{shard}.json")
        assert set(record) == RECORD_KEYS and record["file"] == shard and set(record["meter"]) == METER_KEYS
        assert record["fingerprint"] == SOUP_FINGERPRINT

    env["HFSOUP_FAULT"] = ""
    resumed = subprocess.run(soup_cli("--resume"), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused 2 completed shards" in resumed.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("model-*")) == SHARDS


# The progress records of the first two shards as hfsoup 0.1.0 wrote them for the fixed checkpoints (the shards'
# sha256 are those of the shards' bytes, given below by a clean run).
LEGACY_METERS = {
    SHARDS[0]: {
        "body": [
            [523.3712072372437, 523.1622915267944, 523.0542001724243],
            [523.1622915267944, 523.3265314102173, 523.1356048583984],
            [523.0542001724243, 523.1356048583984, 523.3182468414307],
        ],
        "body_tensors": 3, "head": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "head_tensors": 0,
        "non_finite": {}, "unequal_buffers": [],
    },
    SHARDS[1]: {
        "body": [
            [512.5091552734375, 512.3213500976562, 512.1981811523438],
            [512.3213500976562, 512.4989013671875, 512.2946166992188],
            [512.1981811523438, 512.2946166992188, 512.4563598632812],
        ],
        "body_tensors": 2, "head": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "head_tensors": 0,
        "non_finite": {}, "unequal_buffers": [],
    },
}  # fmt: skip


def test_resume_accepts_a_staging_folder_left_by_0_1_0(tmp_path):
    """A soup interrupted before the upgrade: its staging folder, laid out and recorded as 0.1.0 did, by hand."""
    for i in range(3):
        fixed_checkpoint(tmp_path / f"ft{i}", seed=i)
    env = {**os.environ, "HFSOUP_FAULT": ""}
    clean = subprocess.run(soup_cli(out="clean"), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert clean.returncode == 0, clean.stderr
    staging = tmp_path / STAGING
    (staging / PROGRESS).mkdir(mode=0o700, parents=True)
    staging.chmod(0o700)
    for shard in SHARDS[:2]:
        data = (tmp_path / "clean" / shard).read_bytes()
        (staging / shard).write_bytes(data)
        record = {"fingerprint": SOUP_FINGERPRINT, "file": shard, "sha256": hashlib.sha256(data).hexdigest()}
        (staging / PROGRESS / f"{shard}.json").write_text(json.dumps({**record, "meter": LEGACY_METERS[shard]}))

    resumed = subprocess.run(soup_cli("--resume"), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused 2 completed shards" in resumed.stderr
    for shard in SHARDS:
        assert (tmp_path / "out" / shard).read_bytes() == (tmp_path / "clean" / shard).read_bytes()
    assert not staging.exists()


# ---- 5. the model card --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("soup", ["uniform", "greedy", "reproducible"])
def test_model_card_text(tmp_path, soup):
    """A soup folder holding a literal hfsoup.json (and results) gets exactly the card in tests/data/card_contract/
    (`hfsoup push OUT me/x --dry-run` prints the same card). Local ingredients: their card metadata is recorded, so
    the card needs no Hub. `uniform` and `greedy` are soups of hfsoup 0.1.0 before issue 16 (no recipe.yaml, no
    install record); `reproducible` is one since, with its recipe.yaml and a git install record."""
    folder = shutil.copytree(DATA / "card_contract" / soup, tmp_path / "soup")
    (folder / "model.safetensors").write_bytes(b"")  # listed in `files`; the card does not read the weights
    card = str(hfsoup.build_card(hfsoup.read_soup_folder(folder), repo_id="me/x"))
    # The card names the hfsoup that wrote it; a version bump alone is not a change of contract.
    expected = (DATA / "card_contract" / f"{soup}.md").read_text()
    expected = expected.replace(
        "this card was written by hfsoup 0.1.0", f"this card was written by hfsoup {hfsoup.__version__}"
    )
    assert card == expected


# ---- 6. CLI behaviour: exit codes, one-paragraph errors, -q/-v, --json - ------------------------------------------
# Already pinned elsewhere: a soup of one ingredient exits 1 with a traceback only under HFSOUP_DEBUG=1
# (test_soup_local.py::test_traceback_only_with_debug), a missing -o exits 2 (::test_cli_usage_error_exits_2), an
# incompatible soup prints exactly the paragraph and the hint (test_errors.py::test_the_cli_prints_one_paragraph_and_
# the_exit_code), a malformed recipe exits 1 (test_recipes.py::test_validate_cli), `check` of incompatible Hub models
# exits 1 (test_compat.py::test_refused_before_any_weight_download), bare `--json` prints JSON
# (test_compat.py::test_check_json_to_stdout_and_usage_error).

HINT = "(Set HFSOUP_DEBUG=1 to see the traceback.)"


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    """An ingredient with other tensor shapes than `folders`: refused by `check`."""
    return make_checkpoint(tmp_path_factory.mktemp("odd") / "odd", seed=9, shapes={"encoder.weight": (8, 7)})


def test_refusals_are_one_paragraph_and_exit_1(folders, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MALFORMED)
    for args, items in (
        (["soup", str(folders[0]), "-o", str(tmp_path / "out")], 0),
        (["validate", str(bad)], 11),  # a recipe's problems follow the paragraph, one per line
    ):
        assert main(args) == 1, args
        captured = capsys.readouterr()
        lines = captured.err.rstrip("\n").splitlines()
        assert [line for line in lines if line.startswith("Error:")] == [lines[0]], args
        assert lines[1:-1] == [line for line in lines[1:-1] if line.startswith("  - ")] and len(lines) == items + 2
        assert lines[-1] == HINT and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(folders, tmp_path, capsys):
    def exit_code(args: list[str]) -> int | str | None:
        try:
            return main(args)  # no verb at all: the help, and 2
        except SystemExit as e:  # argparse's usage errors
            return e.code

    for args in (["soup", *map(str, folders), "-o", str(tmp_path / "out"), "--method", "stew"], ["stew"], []):
        assert exit_code(args) == 2, args
        assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_check_refusal_exits_1_with_the_report(folders, odd, capsys):
    assert main(["check", str(folders[0]), str(odd), "--skip-weights"]) == 1
    captured = capsys.readouterr()
    assert "REFUSED" in captured.out and "Traceback" not in captured.err


def test_check_json_to_stdout_is_the_report_alone(folders, odd, capsys):
    assert main(["check", str(folders[0]), str(folders[1]), "--skip-weights", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["weights_checked"] is False
    assert main(["check", str(folders[0]), str(odd), "--skip-weights", "--json", "-"]) == 1
    refused = json.loads(capsys.readouterr().out)
    assert refused["ok"] is False and refused["findings"]
    assert {"level", "check", "ingredient", "message", "fix"} <= set(refused["findings"][0])


def test_quiet_prints_errors_only_and_verbose_prints_info(folders, tmp_path):
    def run(*flags: str) -> subprocess.CompletedProcess:
        out = tmp_path / f"out{len(flags)}{flags[:1]}"
        command = [sys.executable, "-m", "hfsoup.cli", *flags, "soup", *map(str, folders), "-o", str(out)]
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}  # bars as users see them
        return subprocess.run(command, capture_output=True, text=True, env=env)

    quiet, default, verbose = run("-q"), run(), run("-v")
    assert quiet.returncode == default.returncode == verbose.returncode == 0
    assert quiet.stderr == ""
    # A line per stage, no INFO lines (bars show once a step has run a second: tests/test_progress.py)
    assert "Writing the uniform soup" in default.stderr and "INFO" not in default.stderr
    assert "INFO hfsoup" in verbose.stderr
    assert "uniform soup of 3 ingredients" in quiet.stdout


def test_quiet_scored_soup_prints_no_bars(families, tmp_path):
    """Scoring loads models and data through transformers and datasets, which draw bars of their own."""
    data = tmp_path / "dev.csv"
    data.write_text("sentence,label\n" + "".join(f"soup number {i},{i % 2}\n" for i in range(8)))
    specs = [str(families["bert"].folders()[f"ft{i}"]) for i in range(2)]
    command = [sys.executable, "-m", "hfsoup.cli", "-q", "soup", *specs, "-o", str(tmp_path / "out"), "--method"]
    command += ["greedy", "--task", "sst2", "--data-files", f"validation={data}", "--compare", "none", "--no-plot"]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "greedy soup of 2 ingredients" in run.stdout


# ---- 7. import weight -----------------------------------------------------------------------------------------------
# Already pinned: a CPU soup through the Python API (test_soup_local.py::test_cpu_soup_path_imports_neither_torch_
# nor_transformers) and `import hfsoup` with every error class (test_errors.py::test_every_error_class_is_exported_
# and_documented).

HEAVY = ("torch", "transformers", "datasets", "evaluate", "accelerate")


def test_cli_start_up_paths_import_neither_torch_nor_transformers(folders, tmp_path):
    """One fresh process runs each verb in turn and says, after each, which heavy modules it has loaded."""
    steps = [
        ["--help"],
        ["--version"],
        ["validate", str(REPO / "recipes" / "glue-bert-base-mrpc.yaml")],
        ["-q", "soup", *map(str, folders), "-o", str(tmp_path / "out"), "--device", "cpu"],
        ["check", *map(str, folders), "--skip-weights"],
    ]
    code = (
        "import json, sys\n"
        "import hfsoup.cli\n"
        f"heavy = {HEAVY!r}\n"
        "seen = {'import hfsoup.cli': sorted(m for m in heavy if m in sys.modules)}\n"
        f"for args in {steps!r}:\n"
        "    try:\n"
        "        code = hfsoup.cli.main(args)\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "    assert code in (0, None), (args, code)\n"
        "    seen[' '.join(args[:2])] = sorted(m for m in heavy if m in sys.modules)\n"
        "print('SEEN ' + json.dumps(seen))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.rsplit("SEEN ", 1)[1])
    assert len(seen) == 1 + len(steps) and all(loaded == [] for loaded in seen.values()), seen
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_import_hfsoup_cli_loads_no_third_party_package_but_numpy():
    """`import hfsoup.cli` (what `hfsoup --help` pays for) stays fast because it loads the standard library, numpy and
    hfsoup alone. Asserted on what is loaded rather than on a timing, which a busy machine would make flaky: a wall
    clock limit of 0.5 s failed under load although nothing had changed."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import hfsoup.cli\n"
        "top = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(json.dumps(sorted(m for m in top if m not in sys.stdlib_module_names and not m.startswith('_'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(run.stdout) == ["hfsoup", "numpy"]
