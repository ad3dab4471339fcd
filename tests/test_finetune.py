"""`hfsoup finetune`: sweeps planned and validated, trained from one shared start, resumed, pushed, and cooked.

A tiny BERT base and a tiny GLUE sst2 on a local Hub (writes need a token); each run trains 3 steps of batch 4.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import SweepError
from hfsoup.finetune import RUN_FILE, START_DIR, Sweep, plan_sweep, run_sweep
from hfsoup.io.checkpoint import file_sha256
from hfsoup.pipeline import cook_recipe
from hfsoup.recipe import load_recipe
from hfsoup.testing.families import publish_family
from hfsoup.testing.glue import build_glue, publish_glue

TOKEN = "hf_FinetuneTestTokenQ8vXp2Lm"
NAMES = ["lr0.001-seed0-wd0.0-ls0.0", "lr0.001-seed1-wd0.0-ls0.0"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, families):
    """One local Hub for the module, refusing writes without a token, holding a tiny GLUE (sst2 only)."""
    from hfsoup.localhub.access import ADMIN
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    root = tmp_path_factory.mktemp("finetune")
    saved_token = os.environ.pop("HF_TOKEN", None)
    with (
        LocalHubServer(root / "store", tokens={TOKEN: ADMIN}) as server,
        use_local_hub(server.url, root / "hf_home"),
    ):
        publish_glue(build_glue(root / "glue", tasks=["sst2"]), api=HfApi(token=TOKEN))
        ids = publish_family(families["bert"], members=["base"], api=HfApi(token=TOKEN))
        yield {"server": server, "root": root, "base": ids["base"]}
    if saved_token is not None:
        os.environ["HF_TOKEN"] = saved_token


@pytest.fixture(scope="module")
def sweep_dir(hub):
    """A 2-run seed sweep of the tiny BERT base (by Hub ID) on sst2, trained once through the CLI."""
    out = hub["root"] / "sweep"
    args = ["finetune", hub["base"], "--task", "sst2", "-o", str(out)]
    args += ["--grid", "learning_rate=1e-3", "seed=0,1", "--max-steps", "3", "--batch-size", "4", "--max-length", "32"]
    assert main(args) == 0
    return out


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_plan_names_runs_deterministically_and_sweeps_every_combination():
    sweep = Sweep("b", "o", task="sst2", grid={"seed": [0, 1], "learning_rate": [1e-5, 2e-5], "epochs": [2, 3]})
    runs = plan_sweep(sweep)
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    assert runs[0].name == "lr1e-05-seed0-wd0.0-ls0.0-ep2.0"  # epochs named only when swept
    assert (runs[-1].learning_rate, runs[-1].seed, runs[-1].epochs) == (2e-5, 1, 3.0)
    assert [r.name for r in plan_sweep(sweep)] == [r.name for r in runs]

    search = {"n": 4, "seed": 7, "learning_rate": [1e-5, 5e-5], "label_smoothing": [0.0, 0.2]}
    drawn = plan_sweep(Sweep("b", "o", task="sst2", random=search))
    assert drawn == plan_sweep(Sweep("b", "o", task="sst2", random=dict(search)))
    assert len({r.seed for r in drawn}) == 4
    assert all(1e-5 <= r.learning_rate <= 5e-5 and 0 <= r.label_smoothing <= 0.2 for r in drawn)
    assert drawn != plan_sweep(Sweep("b", "o", task="sst2", random={**search, "seed": 8}))


def test_bad_grid_lists_every_problem(tmp_path, capsys):
    args = ["finetune", "base", "--task", "sst2", "-o", str(tmp_path / "s"), "--grid", "lr=1e-5", "seed=0,x"]
    code = main([*args, "weight_decay=-1", "label_smoothing=0.1", "oops"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "4 problems" in err
    for expected in (
        "--grid oops: expected NAME=VALUE",
        "--grid lr: unknown hyperparameter",
        "seed[1]",
        "[0]: expected a non",
    ):
        assert expected in err
    with pytest.raises(SweepError) as info:
        plan_sweep(Sweep("b", "o", grid={"seed": [0]}, random={"n": 1}))
    assert [p.split(":")[0] for p in info.value.problems] == ["random", "random.n"]
    assert not (tmp_path / "s").exists()


def test_sweep_trains_runs_from_one_shared_start_that_soup(sweep_dir, hub, families):
    base = weights(families["bert"].base)
    start_sha = file_sha256(sweep_dir / START_DIR / "model.safetensors")
    trained = []
    for name, seed in zip(NAMES, (0, 1), strict=True):
        folder = sweep_dir / name
        record = json.loads((folder / RUN_FILE).read_text())
        assert record["hyperparameters"]["seed"] == seed and record["hyperparameters"]["learning_rate"] == 1e-3
        assert record["start"]["sha256"] == start_sha and record["steps"] == 3 and record["task"] == "sst2"
        assert ModelCard.load(folder / "README.md").data.base_model == hub["base"]
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(folder)
        assert model.config.id2label == {0: "negative", 1: "positive"}
        trained.append(weights(folder))
    moved = lambda a, b: max((a[k] - b[k]).abs().max().item() for k in a)  # noqa: E731
    assert moved(trained[0], base) > 1e-4 and moved(trained[1], base) > 1e-4 and moved(trained[0], trained[1]) > 1e-5

    report = hfsoup.check([str(sweep_dir / n) for n in NAMES])
    assert report.ok and not [f for f in report.findings if f.check == "head"]


def test_rerun_skips_complete_runs_and_resumes_the_rest(sweep_dir, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    shutil.rmtree(copy / NAMES[1])  # as if the sweep had been interrupted during its second run
    kept = (copy / NAMES[0] / "model.safetensors").stat().st_mtime_ns
    sweep = Sweep(str(copy / START_DIR), str(copy), task="sst2", grid={"learning_rate": [1e-3], "seed": [0, 1]})
    sweep.max_steps, sweep.batch_size, sweep.max_length = 3, 4, 32
    assert run_sweep(sweep) == [copy / n for n in NAMES]
    assert (copy / NAMES[0] / "model.safetensors").stat().st_mtime_ns == kept
    # Same start, same seed, same data: the resumed run is the run the uninterrupted sweep made.
    again = weights(copy / NAMES[1])
    assert all(torch.allclose(t, weights(sweep_dir / NAMES[1])[k], atol=1e-6) for k, t in again.items())
    assert not list(copy.glob(".*partial"))


def test_push_publishes_each_run_once(sweep_dir, hub, tmp_path):
    copy = tmp_path / "sst2-sweep"
    shutil.copytree(sweep_dir, copy)
    sweep = Sweep(str(copy / START_DIR), str(copy), task="sst2", grid={"learning_rate": [1e-3], "seed": [0, 1]})
    sweep.max_steps, sweep.push_org = 3, "sweeps"
    ids = run_sweep(sweep, token=TOKEN)
    assert ids == [f"sweeps/sst2-sweep-{n}" for n in NAMES]
    api = HfApi(token=TOKEN)
    for repo_id, name in zip(ids, NAMES, strict=True):
        assert {"model.safetensors", RUN_FILE, "README.md", "config.json"} <= set(api.list_repo_files(repo_id))
        assert json.loads(open(api.hf_hub_download(repo_id, RUN_FILE)).read())["run"] == name
    commits = len(api.list_repo_commits(ids[0]))
    assert run_sweep(sweep, token=TOKEN) == ids and len(api.list_repo_commits(ids[0])) == commits


def test_recipe_with_a_sweep_validates_and_cooks_a_uniform_soup(sweep_dir, hub, tmp_path, capsys):
    shutil.copytree(sweep_dir, tmp_path / "runs")
    sweep = {"base": hub["base"], "task": "sst2", "output_dir": "runs", "max_steps": 3}
    sweep |= {"grid": {"learning_rate": [1e-3], "seed": [0, 1]}, "batch_size": 4, "max_length": 32}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "swept", "sweep": sweep, "output": {"dir": "soup"}}))
    assert main(["validate", str(path)]) == 0
    assert "a fine-tune sweep of 2 runs" in capsys.readouterr().out

    result = cook_recipe(path)
    soup = weights(result.output_dir)
    runs = [weights(tmp_path / "runs" / n) for n in NAMES]
    assert all(torch.allclose(soup[k], (runs[0][k] + runs[1][k]) / 2, atol=1e-6) for k in soup)

    bad = dict(sweep, grid={"learning_rate": ["fast"]}, epochs=0)
    path.write_text(yaml.safe_dump({"ingredients": ["a/b", "c/d"], "sweep": bad, "output": {"dir": "soup"}}))
    with pytest.raises(hfsoup.RecipeError) as info:
        load_recipe(path)
    located = [p.split(":")[0] for p in info.value.problems]
    assert located == ["sweep", "sweep.epochs", "sweep.grid.learning_rate[0]"]


def test_text_classification_sweep_on_data_files_takes_its_labels_from_the_data(local_hub, families, tmp_path):
    rows = [{"review": f"{word} film number {i}", "stars": word} for i in range(12) for word in ("good", "bad")]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["finetune", str(families["bert"].base), "-o", str(tmp_path / "s"), "--grid", "weight_decay=0,0.1"]
    args += ["--data-files", f"train={tmp_path / 'train.jsonl'}", "--text-column", "review", "--label-column"]
    assert main([*args, "stars", "--max-steps", "2", "--batch-size", "4", "--max-length", "16"]) == 0
    names = ["lr2e-05-seed0-wd0.0-ls0.0", "lr2e-05-seed0-wd0.1-ls0.0"]
    for name in names:
        record = json.loads((tmp_path / "s" / name / RUN_FILE).read_text())
        assert record["train_examples"] == 24 and record["task"] == "text-classification"
        assert json.loads((tmp_path / "s" / name / "config.json").read_text())["id2label"] == {"0": "bad", "1": "good"}
    assert ModelCard.load(tmp_path / "s" / names[0] / "README.md").data.base_model is None  # a folder is no Hub ID
