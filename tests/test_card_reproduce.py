"""A card that reproduces: a pushed soup's card, followed in a fresh folder on the local Hub, makes the same weights.

A greedy soup (tiny BERT fine-tunes, the tiny GLUE's sst2, non-default selection options) is made from the CLI and
pushed; its repo is downloaded into an empty folder; the card's `hfsoup cook recipe.yaml` and its `hfsoup soup` line
are each run there, parsed out of the card as a reader would copy them; every tensor they write is byte for byte the
pushed soup's. A soup of local folders and a local data file is pushed too: nothing pushed names a local absolute
path, the recipe names the folders and the file (with its sha256 and row count), and placed beside the recipe they
remake the same weights.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download
from safetensors import safe_open

import hfsoup
from hfsoup.cli import main
from hfsoup.publish.reproduce import install_lines, public_git_url, soup_command

pytestmark = pytest.mark.usefixtures("one_thread")

# Off their defaults, so the card's soup line must carry them (the greedy soup's own options too).
SELECTION = ["--task", "sst2", "--held-out-fraction", "0.4", "--seed", "3", "--batch-size", "5", "--no-plot"]
SELECTION += ["--compare", "uniform,ensemble"]


def reproduce_commands(card: str) -> list[str]:
    """The shell commands of the card's Reproduce section, continuation lines joined, comments and pip dropped."""
    section = card.split("## Reproduce", 1)[1]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words and words[0] == "hfsoup":
                commands.append(words)
    return commands


def tensors(path: Path) -> dict[str, bytes]:
    with safe_open(path, framework="numpy") as f:
        return {name: f.get_tensor(name).tobytes() + str(f.get_tensor(name).dtype).encode() for name in f.keys()}


def run_in(folder: Path, words: list[str], monkeypatch) -> None:
    """Run a card's command as a reader would, in `folder` (the hfsoup console script is `main`)."""
    assert words[0] == "hfsoup"
    monkeypatch.chdir(folder)
    assert main(words[1:]) == 0, words


@pytest.fixture(scope="module")
def pushed(sst2_hub, tmp_path_factory):
    """The greedy soup made by `hfsoup soup` (an absolute -o under a temporary folder), pushed, and downloaded."""
    root = tmp_path_factory.mktemp("greedy")
    out = root / "greedy-soup"
    args = ["soup", *sst2_hub["ids"], "-o", str(out), "--method", "greedy", "--accept", "gt", *SELECTION]
    assert main(args) == 0
    hfsoup.push(out, "cards/greedy-soup")
    repo = Path(snapshot_download("cards/greedy-soup", local_dir=root / "download"))
    return {"made": out, "repo": repo, "root": root}


def test_the_cards_cook_command_remakes_the_same_weights(pushed, monkeypatch):
    repo = pushed["repo"]
    assert (repo / "recipe.yaml").is_file()  # pushed with the soup
    card = (repo / "README.md").read_text()
    commands = reproduce_commands(card)
    assert commands[0] == ["hfsoup", "cook", "recipe.yaml"]
    # As a reader would: the repo downloaded into an empty folder, the card's command run in it.
    fresh = Path(snapshot_download("cards/greedy-soup", local_dir=pushed["root"] / "cook-here"))
    run_in(fresh, commands[0], monkeypatch)
    expected = tensors(repo / "model.safetensors")
    assert expected == tensors(pushed["made"] / "model.safetensors")
    remade = tensors(fresh / "soup" / "model.safetensors")  # output.dir: ./soup beside the recipe
    assert remade.keys() == expected.keys() and remade == expected
    provenance = json.loads((fresh / "soup" / "hfsoup.json").read_text())
    assert provenance["weights"] == json.loads((repo / "hfsoup.json").read_text())["weights"]
    # The remade soup's recipe is the one it was cooked from: normalizing a pinned recipe changes nothing.
    assert (fresh / "soup" / "recipe.yaml").read_text() == (repo / "recipe.yaml").read_text()


def test_a_cooked_soup_carries_its_recipe_pinned_and_without_its_push(sst2_hub, tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "cooked",
                "ingredients": sst2_hub["ids"][:2],  # by name: pinned in the soup's recipe.yaml
                "method": {"name": "uniform", "weights": [0.7, 0.3]},
                "output": {"dir": "out/cooked", "dtype": "float16"},
                "push": {"repo_id": "cards/cooked"},
            }
        )
    )
    result = hfsoup.cook_recipe(recipe)
    assert result.push is not None  # pushed as the recipe says; a remake from its recipe.yaml is not
    written = yaml.safe_load((tmp_path / "out" / "cooked" / "recipe.yaml").read_text())
    shas = [i["sha"] for i in result.soup.ingredients]
    assert written == {
        "name": "cooked",
        "ingredients": [{"id": i, "revision": sha} for i, sha in zip(sst2_hub["ids"][:2], shas, strict=True)],
        "method": {"name": "uniform", "weights": [0.7, 0.3]},
        "output": {"dir": "soup", "dtype": "float16"},
    }
    card = (tmp_path / "out" / "cooked" / "README.md").read_text()
    assert "--weights 0.7,0.3" in card and "--dtype float16" in card


def test_the_cards_soup_line_carries_every_option_and_remakes_the_same_weights(pushed, monkeypatch):
    repo = pushed["repo"]
    card = (repo / "README.md").read_text()
    line = reproduce_commands(card)[1]
    assert line[:2] == ["hfsoup", "soup"]
    ingredients = [w for w in line[2:] if w.startswith("hfsoup-testing/")]
    shas = [i["sha"] for i in json.loads((repo / "hfsoup.json").read_text())["ingredients"]]
    assert ingredients == [f"hfsoup-testing/tiny-bert-ft{i}@{sha}" for i, sha in enumerate(shas)]
    for flag, value in zip(SELECTION[::2], SELECTION[1::2], strict=False):
        if flag != "--no-plot":
            assert line[line.index(flag) + 1] == value, flag
    assert "--no-plot" in line and line[line.index("--method") + 1] == "greedy"
    assert line[line.index("--accept") + 1] == "gt"
    # The task's dataset is pinned to the commit the soup was scored on.
    dataset = line[line.index("--dataset") + 1]
    assert dataset == f"nyu-mll/glue@{json.loads((repo / 'hfsoup.json').read_text())['evaluation']['dataset_sha']}"
    fresh = pushed["root"] / "soup-here"
    fresh.mkdir()
    run_in(fresh, line, monkeypatch)
    assert tensors(fresh / "soup" / "model.safetensors") == tensors(repo / "model.safetensors")


ABSOLUTE = re.compile(r"(?<![\w\].:/~%-])/(?:[\w.-]+/)*[\w.-]+")


def absolute_paths(text: str) -> list[str]:
    """Every absolute POSIX path in `text`, but a card's links to Hub repos (`](/org/name)`)."""
    return [m.group() for m in ABSOLUTE.finditer(text) if not text[: m.start()].endswith("](")]


def test_the_scan_sees_an_absolute_path():
    assert absolute_paths('{"dataset": "/tmp/pytest-1/data/dev.csv"}') == ["/tmp/pytest-1/data/dev.csv"]
    assert absolute_paths("see [org/x](/org/x), https://github.com/a/b and ./ft0, `validation[:50%]`") == []


@pytest.fixture(scope="module")
def local_soup(sst2_hub, tmp_path_factory):
    """A greedy soup of local folders (named by absolute paths), selected on a local csv outside the current folder."""
    root = tmp_path_factory.mktemp("local")
    models = root / "models"
    folders = [shutil.copytree(f, models / f"ft{i}") for i, f in enumerate(sst2_hub["family"].finetunes)]
    data = root / "data" / "dev.csv"
    data.parent.mkdir()
    with open(data, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "label"])
        writer.writerows([[f"a fine film, take {i}", i % 2] for i in range(20)])
        writer.writerow(["a line\nwith a newline", 1])  # a quoted newline: still one row
    work = root / "work"
    work.mkdir()
    out = root / "out" / "local-soup"
    args = ["soup", *map(str, folders), "-o", str(out), "--method", "greedy", "--task", "sst2"]
    args += ["--data-files", f"validation={data}", "--batch-size", "7", "--no-plot"]
    cwd = os.getcwd()
    os.chdir(work)  # the soup is made elsewhere than its inputs: nothing is relative to the current folder
    try:
        assert main(args) == 0
    finally:
        os.chdir(cwd)
    hfsoup.push(out, "cards/local-soup")
    repo = Path(snapshot_download("cards/local-soup", local_dir=root / "download"))
    return {"repo": repo, "made": out, "root": root, "folders": folders, "data": data}


@pytest.mark.parametrize("soup", ["pushed", "local_soup"])
def test_nothing_pushed_names_a_local_absolute_path(soup, request):
    found = request.getfixturevalue(soup)
    repo, root = found["repo"], found["root"]
    scanned = 0
    for path in sorted(repo.rglob("*")):
        if not path.is_file() or ".cache" in path.parts or path.suffix in (".safetensors", ".png"):
            continue
        text = path.read_text()
        scanned += 1
        for needle in (str(root), str(Path.home()), os.path.realpath(root), "/tmp/"):
            assert needle not in text, (path.name, needle)
        assert absolute_paths(text) == [], path.name
    assert scanned >= 5  # README.md, hfsoup.json, recipe.yaml, results.json, config.json, ...


def test_local_inputs_are_named_and_remake_the_soup_placed_beside_the_recipe(local_soup, monkeypatch):
    repo, data = local_soup["repo"], local_soup["data"]
    recipe = (repo / "recipe.yaml").read_text()
    sha256 = hashlib.sha256(data.read_bytes()).hexdigest()
    assert f"dev.csv  (validation data file; sha256 {sha256}, 21 rows)" in recipe
    assert "#   ./ft0  (local folder)" in recipe
    provenance = json.loads((repo / "hfsoup.json").read_text())
    assert provenance["local_data_files"] == [{"split": "validation", "file": "dev.csv", "sha256": sha256, "rows": 21}]
    card = (repo / "README.md").read_text()
    assert f"`dev.csv` (sha256 `{sha256}`, 21 rows)" in card and "`ft0` (a local folder)" in card
    fresh = local_soup["root"] / "cook-here"
    fresh.mkdir()
    shutil.copyfile(repo / "recipe.yaml", fresh / "recipe.yaml")
    for folder in local_soup["folders"]:
        shutil.copytree(folder, fresh / folder.name)
    shutil.copyfile(data, fresh / "dev.csv")
    run_in(fresh, reproduce_commands(card)[0], monkeypatch)
    assert tensors(fresh / "soup" / "model.safetensors") == tensors(repo / "model.safetensors")


def test_the_install_line_says_how_hfsoup_was_installed():
    commit = "0123456789abcdef0123456789abcdef01234567"
    git = {"version": "0.2.0", "source": "git", "url": "https://github.com/hfsoup/hfsoup.git", "commit": commit}
    assert install_lines(git, None) == [f"pip install git+https://github.com/hfsoup/hfsoup.git@{commit}"]
    assert install_lines({**git, "modified": True}, None)[0].startswith("# hfsoup 0.2.0, from a checkout with")
    assert install_lines({"version": "0.2.0", "source": "index"}, None) == ["pip install hfsoup==0.2.0"]
    local = install_lines({"version": "0.2.0", "source": "local"}, None)
    assert local[0].startswith("#") and "0.2.0" in local[0] and "pip install hfsoup==" not in local[0]
    assert "not recorded" in install_lines(None, "0.1.0")[0]  # an older soup: no invented index
    # A remote is published without credentials, in the form pip takes; a local one is not published at all.
    assert public_git_url("https://me:hf_secret@github.com/o/x.git") == "https://github.com/o/x.git"
    assert public_git_url("git@github.com:o/x.git") == "ssh://git@github.com/o/x.git"
    assert public_git_url("/home/me/src/hfsoup") is None and public_git_url("file:///srv/hfsoup") is None


def test_a_recipe_with_a_sweep_has_no_soup_line():
    assert soup_command({"sweep": {"base": "org/b"}, "method": {"name": "uniform"}, "output": {"dir": "x"}}) is None
    line = soup_command(
        {
            "ingredients": [{"id": "org/a", "revision": "1" * 40}, "./ft1"],
            "method": {"name": "uniform", "weights": [0.1, 0.9]},
            "evaluation": {"task": "sst2", "report": ["validation", "org/shift@2:validation[:50%]"]},
            "output": {"dir": "soup", "dtype": "float16"},
            "force": True,
        }
    )
    assert line == [
        "hfsoup soup",
        f"org/a@{'1' * 40}",
        "./ft1",
        "-o soup",
        "--method uniform",
        "--weights 0.1,0.9",
        "--task sst2",
        "--report validation",
        "--report 'org/shift@2:validation[:50%]'",
        "--dtype float16",
        "--force",
    ]


def test_hub_datasets_are_pinned_to_the_commits_they_were_scored_on():
    from hfsoup.publish.reproduce import soup_recipe
    from hfsoup.selection.options import Selection
    from hfsoup.soups import SOUPS

    a, b = "a" * 40, "b" * 40
    selection = Selection(task="sst2", report=["validation", "org/shift:validation"], dataset="org/glue-copy")
    evaluation = {
        "dataset": "org/glue-copy",
        "dataset_sha": a,
        "reports": [{"name": "validation", "dataset_sha": a}, {"name": "org/shift:validation", "dataset_sha": b}],
    }
    recipe = soup_recipe([], method=SOUPS["uniform"](), selection=selection, evaluation=evaluation, force=True)
    assert recipe["evaluation"] == {
        "task": "sst2",
        "report": ["validation", f"org/shift@{b}:validation"],
        "dataset": f"org/glue-copy@{a}",
    }
    # A tag or branch may move: the commit it named replaces it. Without a Hub commit, nothing is invented.
    given = Selection(task="sst2", dataset="org/glue-copy@v1")
    assert soup_recipe([], method=SOUPS["uniform"](), selection=given, evaluation=evaluation)["evaluation"] == {
        "task": "sst2",
        "dataset": f"org/glue-copy@{a}",
    }
    assert soup_recipe([], method=SOUPS["uniform"](), selection=Selection(task="sst2"))["evaluation"] == {
        "task": "sst2"
    }
    assert recipe["force"] is True and recipe["output"] == {"dir": "soup"} and "push" not in recipe
