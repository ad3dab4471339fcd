"""Issue 13, outputs, staging and resume: an output never destroys an input, the staging folder and its records are
never trusted, SIGTERM leaves nothing a resume could trust, one ingredient under two spellings is refused, and what
hfsoup publishes holds no local absolute path.

Every attack is run for real through the CLI (in-process; a subprocess only for the signal), and what did or did
not happen is read back from the filesystem: every file of what must survive is hashed before and after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

import hfsoup
from hfsoup.cli import main
from hfsoup.constants import PROGRESS_DIR
from hfsoup.errors import InvalidSoupArgumentsError, OutputCollisionError, UnsafeStagingError
from hfsoup.io.staging import staging_path
from hfsoup.soups import engine

from .test_engine_runs import SHAPES, files_of, soup_command
from .test_recipes import write_recipe
from .test_soup_local import make_checkpoint


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (links by their target, files by their sha256): what must stay byte-identical."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir"
    return found


@pytest.fixture
def work(tmp_path):
    """A work folder holding two ingredients and a file of the user's beside them."""
    root = tmp_path / "work"
    for i in range(2):
        make_checkpoint(root / f"ft{i}", seed=i, shapes=SHAPES)
    (root / "notes.txt").write_text("the user's own file")
    return root


# ---- outputs never destroy inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["ft0", "ft0/inner", "."], ids=["is", "inside", "contains"])
def test_output_onto_an_ingredient_is_refused_with_overwrite(work, tmp_path, target, capsys):
    before = tree(tmp_path)
    out = work / target
    code = main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", str(out), "--overwrite"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ingredient" in err and "with or without --overwrite" in err and "Traceback" not in err
    assert tree(tmp_path) == before  # not a byte changed, no staging folder left


# ---- report files (--json, --predictions) never replace what is there unasked, nor an input ever ----------------


def _check_json(work: Path, report: Path, *extra: str) -> list[str]:
    return ["check", str(work / "ft0"), str(work / "ft1"), "--skip-weights", "--json", str(report), *extra]


def test_a_report_file_that_exists_is_replaced_only_with_overwrite(work, tmp_path, capsys):
    notes = work / "notes.txt"
    before = tree(tmp_path)
    assert main(_check_json(work, notes)) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert tree(tmp_path) == before  # the user's file, byte for byte
    assert main(_check_json(work, notes, "--overwrite")) == 0
    assert len(json.loads(notes.read_text())["ingredients"]) == 2  # the report, in place of the notes


@pytest.mark.parametrize("target", ["ft0/config.json", "ft0", "ft1/model.safetensors"])
def test_a_report_file_never_replaces_an_input_or_a_folder(work, tmp_path, target, capsys):
    assert (work / target).exists()
    before = tree(tmp_path)
    assert main(_check_json(work, work / target, "--overwrite")) == 1
    err = capsys.readouterr().err
    assert ("the ingredient" in err or "is a folder" in err) and "Traceback" not in err
    assert tree(tmp_path) == before


def test_eval_refuses_to_write_predictions_over_its_data_before_loading_anything(work, tmp_path, capsys):
    data = work / "dev.csv"
    data.write_text("sentence,label\na,0\nb,1\n")
    before = tree(tmp_path)
    args = ["eval", str(work / "ft0"), "--task", "sst2", "--data-files", f"validation={data}"]
    assert main([*args, "--predictions", str(data), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "the data file" in err and "never replaces an input" in err
    assert tree(tmp_path) == before


def test_output_collision_error_carries_its_structure(work):
    with pytest.raises(OutputCollisionError) as caught:
        hfsoup.soup([work / "ft0", work / "ft1"], work, overwrite=True)
    assert caught.value.output == work.resolve() and caught.value.relation == "contains"
    assert caught.value.collides_with in {(work / "ft0").resolve(), (work / "ft1").resolve()}


def test_output_that_is_a_symlink_to_an_ingredient_is_refused(work, tmp_path):
    (tmp_path / "link").symlink_to(work / "ft1")
    before = tree(work)
    assert main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", str(tmp_path / "link"), "--overwrite"]) == 1
    assert tree(work) == before and (tmp_path / "link").is_symlink()


def test_recipe_whose_output_is_its_own_folder_is_refused_by_validate_and_cook(work, capsys):
    recipe = write_recipe(
        work / "r.yaml", {"ingredients": ["./ft0", "./ft1"], "output": {"dir": ".", "overwrite": True}}
    )
    before = tree(work)
    assert main(["validate", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "output.dir:" in err and "recipe's folder" in err
    assert main(["cook", str(recipe)]) == 1
    assert main(["cook", str(recipe), "--overwrite"]) == 1
    assert main(["cook", str(recipe), "-o", str(work / "ft1"), "--overwrite"]) == 1  # -o meets the same rules
    assert tree(work) == before


@pytest.mark.parametrize("target", ["~", "/", "..", "ft0"], ids=["home", "root", "parent", "ingredient"])
def test_recipe_output_rules_in_validate(work, tmp_path, monkeypatch, target, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("mine")
    recipe = write_recipe(work / "r.yaml", {"ingredients": ["./ft0", "./ft1"], "output": {"dir": target}})
    before = tree(tmp_path)
    assert main(["validate", str(recipe)]) == 1
    assert "output.dir:" in capsys.readouterr().err
    assert main(["cook", str(recipe), "--overwrite"]) == 1
    assert tree(tmp_path) == before


@pytest.mark.parametrize("spelling", ["bare", "absolute", "climbing"])
def test_recipe_output_inside_an_ingredient_however_the_ingredient_is_spelled(work, tmp_path, monkeypatch, spelling):
    """Ingredients named by bare folder names (`ft0`, resolved against the recipe's folder, as an existing folder wins
    over a Hub ID) are as protected as `./ft0`, whatever the current folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    names = {
        "bare": ["ft0", "ft1"],
        "absolute": [str(work / "ft0"), str(work / "ft1")],
        "climbing": ["../work/ft0", "../work/ft1"],
    }[spelling]
    recipe = write_recipe(work / "r.yaml", {"ingredients": names, "output": {"dir": "ft0/sub", "overwrite": True}})
    before = tree(work)
    with pytest.raises(hfsoup.errors.RecipeError, match="output.dir"):
        hfsoup.load_recipe(recipe)
    assert main(["cook", str(recipe), "--overwrite"]) == 1
    assert tree(work) == before


def test_home_folder_as_output_is_refused(work, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    before = tree(tmp_path)
    assert main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", "~", "--overwrite"]) == 1
    assert tree(tmp_path) == before


def test_filesystem_root_as_output_is_refused(work, capsys):
    assert main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", "/", "--overwrite"]) == 1
    assert "filesystem root" in capsys.readouterr().err
    assert not Path("/.hfsoup-tmp-partial").exists() and not Path("/..hfsoup-tmp-partial").exists()


def test_hugging_face_cache_as_output_is_refused(local_hub, hf_home, work, tmp_path):
    before = tree(hf_home)
    for out in (hf_home, hf_home / "hub", hf_home / "hub" / "soup"):
        assert main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", str(out), "--overwrite"]) == 1
    assert tree(hf_home) == before


def test_sweep_folder_inside_its_local_base_is_refused(work):
    from hfsoup.finetune import Sweep, run_sweep

    before = tree(work)
    with pytest.raises(OutputCollisionError, match="lies inside the base model"):
        run_sweep(Sweep(str(work / "ft0"), str(work / "ft0" / "runs"), task="sst2", grid={"seed": [0, 1]}))
    assert tree(work) == before


@pytest.mark.parametrize("target", [".", "..", "../.."])
def test_current_folder_and_its_ancestors_are_refused(tmp_path, monkeypatch, target):
    deep = tmp_path / "a" / "b"
    folders = [make_checkpoint(tmp_path / "models" / f"ft{i}", seed=i) for i in range(2)]
    deep.mkdir(parents=True)
    (deep / "keep.txt").write_text("keep")
    monkeypatch.chdir(deep)
    before = tree(tmp_path)
    assert main(["soup", *map(str, folders), "-o", target, "--overwrite"]) == 1
    assert tree(tmp_path) == before


def test_overwrite_replaces_an_hfsoup_output_only(work, tmp_path, capsys):
    ingredients = [str(work / "ft0"), str(work / "ft1")]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("a,b\n")
    before = tree(mine)
    assert main(["soup", *ingredients, "-o", str(mine), "--overwrite"]) == 1
    assert "not written by hfsoup" in capsys.readouterr().err and tree(mine) == before

    out = tmp_path / "soup"
    assert main(["soup", *ingredients, "-o", str(out)]) == 0
    first = json.loads((out / "hfsoup.json").read_text())["created_at"]
    (out / "hfsoup.json").write_text((out / "hfsoup.json").read_text().replace(first, "2000-01-01T00:00:00+00:00"))
    assert main(["soup", *ingredients, "-o", str(out), "--overwrite"]) == 0  # an hfsoup output is replaced
    assert json.loads((out / "hfsoup.json").read_text())["created_at"] != "2000-01-01T00:00:00+00:00"

    (out / "my-eval.json").write_text("{}")  # the user's file inside a soup: --overwrite would delete it
    before = tree(out)
    assert main(["soup", *ingredients, "-o", str(out), "--overwrite"]) == 1
    assert "my-eval.json" in capsys.readouterr().err and tree(out) == before


# ---- the staging folder on resume -------------------------------------------------------------------------------


@pytest.fixture
def foreign(tmp_path):
    """Someone else's world-writable folder, the target of a link planted at the staging name."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "theirs.txt").write_text("not yours")
    folder.chmod(0o777)
    return folder


@pytest.mark.parametrize("command", ["soup", "cook"])
def test_symlink_at_the_staging_name_is_never_followed_on_resume(work, tmp_path, foreign, command, capsys):
    out = tmp_path / "out"
    staging_path(out).symlink_to(foreign, target_is_directory=True)
    before = tree(foreign)
    if command == "soup":
        code = main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", str(out), "--resume"])
    else:  # cook always resumes
        recipe = write_recipe(tmp_path / "r.yaml", {"ingredients": ["work/ft0", "work/ft1"], "output": {"dir": "out"}})
        code = main(["cook", str(recipe)])
    assert code == 1
    assert "symbolic link" in capsys.readouterr().err
    assert tree(foreign) == before and not out.exists() and staging_path(out).is_symlink()


def test_symlink_at_the_staging_name_is_unlinked_without_resume(work, tmp_path, foreign):
    out = tmp_path / "out"
    staging_path(out).symlink_to(foreign, target_is_directory=True)
    before = tree(foreign)
    assert main(["soup", str(work / "ft0"), str(work / "ft1"), "-o", str(out)]) == 0
    assert tree(foreign) == before and not out.is_symlink() and (out / "model.safetensors").is_file()


def test_staging_writable_by_others_is_refused_on_resume(work, tmp_path):
    out = tmp_path / "out"
    staging = staging_path(out)
    staging.mkdir()
    (staging / "planted").write_text("x")
    staging.chmod(0o777)
    with pytest.raises(UnsafeStagingError, match="other users"):
        hfsoup.soup([work / "ft0", work / "ft1"], out, resume=True)
    assert (staging / "planted").read_text() == "x" and not out.exists()


def test_fresh_staging_is_private(work, tmp_path, monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        staging = args[3]
        seen["mode"] = staging.stat().st_mode & 0o777
        return real(*args, **kwargs)

    real = engine.write_shards
    monkeypatch.setattr("hfsoup.pipeline.write_shards", spy)
    hfsoup.soup([work / "ft0", work / "ft1"], tmp_path / "out")
    assert seen["mode"] == 0o700
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask  # finished: the user's usual permissions


def interrupted_run(ingredients, out, monkeypatch, after: int = 2) -> Path:
    """A run stopped (as by Ctrl-C) right after its `after`-th shard was recorded; returns the staging folder."""
    calls = []

    def stop(name):
        if name == "shard-written":
            calls.append(name)
            if len(calls) == after:
                raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_fault_point", stop)
    with pytest.raises(KeyboardInterrupt):
        hfsoup.soup(ingredients, out, max_shard_size="30KB")
    monkeypatch.undo()
    staging = staging_path(out)
    assert len(list((staging / PROGRESS_DIR).glob("*.json"))) == after
    return staging


@pytest.fixture
def three(tmp_path):
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i, shapes=SHAPES) for i in range(3)]
    clean = hfsoup.soup(folders, tmp_path / "clean", max_shard_size="30KB")
    return folders, clean


def test_rewritten_shard_and_rewritten_checksum_are_not_accepted(three, tmp_path, monkeypatch, caplog):
    folders, clean = three
    out = tmp_path / "out"
    staging = interrupted_run(folders, out, monkeypatch)
    shard = sorted(staging.glob("model-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf: a planted value
    shard.write_bytes(bytes(data))
    record_path = staging / PROGRESS_DIR / f"{shard.name}.json"
    record = json.loads(record_path.read_text())
    record["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # the record agrees with the forgery
    record_path.write_text(json.dumps(record))

    with caplog.at_level(logging.INFO, logger="hfsoup"):
        resumed = hfsoup.soup(folders, out, max_shard_size="30KB", resume=True)
    assert f"{shard.name} from the interrupted run is not what the ingredients give" in caplog.text
    assert files_of(resumed.output_dir) == files_of(clean.output_dir)


def test_tampered_similarity_figures_in_the_record_change_nothing(three, tmp_path, monkeypatch, caplog):
    folders, clean = three
    out = tmp_path / "out"
    staging = interrupted_run(folders, out, monkeypatch)
    for record_path in (staging / PROGRESS_DIR).glob("*.json"):
        record = json.loads(record_path.read_text())
        # Figures that say the ingredients share nothing (orthogonal bodies), and a planted non-finite tensor.
        record["meter"]["body"] = [[1e9 if i == j else 0.0 for j in range(3)] for i in range(3)]
        record["meter"]["non_finite"] = {"ft0": ["layer.0.weight"]}
        record_path.write_text(json.dumps(record))
    with caplog.at_level(logging.INFO, logger="hfsoup"):
        resumed = hfsoup.soup(folders, out, max_shard_size="30KB", resume=True)
    assert "reused 2 completed shards" in caplog.text  # the shards were fine; only the figures were forged
    compat = json.loads(resumed.provenance_path.read_text())["compatibility"]
    assert compat == json.loads(clean.provenance_path.read_text())["compatibility"]
    assert files_of(resumed.output_dir) == files_of(clean.output_dir)


# ---- SIGTERM -----------------------------------------------------------------------------------------------------


def test_sigterm_mid_shard_leaves_nothing_a_resume_trusts_and_the_resume_matches_a_clean_run(three, tmp_path):
    folders, clean = three
    index = json.loads((clean.output_dir / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(set(index.values()))
    first = sum(1 for f in index.values() if f == shards[0])
    assert len(shards) >= 3 and sum(1 for f in index.values() if f == shards[1]) >= 2
    out = tmp_path / "out"
    # Paused after the first tensor of the second shard: that shard is half-written when the signal lands.
    env = {**os.environ, "HFSOUP_FAULT": f"tensor-written:{first + 1}:pause"}
    proc = subprocess.Popen(soup_command(folders, out), stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stderr.readline() for _ in range(1)]
        while "paused at tensor-written" not in lines[-1] and lines[-1] and len(lines) < 50:
            lines.append(proc.stderr.readline())
        assert "paused at tensor-written" in lines[-1], lines
        staging = staging_path(out)
        assert (staging / f".{shards[1]}.writing").is_file()  # caught in the middle of writing shard 2
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    assert "Terminated (SIGTERM); nothing was moved into place." in err and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in (staging / PROGRESS_DIR).glob("*.json")) == [f"{shards[0]}.json"]
    assert not list(staging.glob(".*.writing")) and not (staging / shards[1]).exists()

    resumed = subprocess.run(
        [*soup_command(folders, out), "--resume"], capture_output=True, text=True, env={**env, "HFSOUP_FAULT": ""}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert files_of(out) == files_of(clean.output_dir)


# ---- one ingredient under two spellings --------------------------------------------------------------------------


def test_one_folder_under_two_spellings_is_refused(work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(work)
    (tmp_path / "alias").symlink_to(work / "ft0", target_is_directory=True)
    for spelling in ["./ft0", "ft0/", str(work / "ft0"), str(tmp_path / "alias"), "../work/ft0"]:
        assert main(["soup", "ft0", "ft1", spelling, "-o", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert "'ft0'" in err and repr(spelling) in err and "--weights" in err, err
    assert not (tmp_path / "out").exists()


def test_one_hub_commit_under_two_spellings_is_refused(local_hub, work, tmp_path):
    from hfsoup.testing.publish import upload

    upload(work / "ft0", "org/x")
    upload(work / "ft1", "org/y")
    with pytest.raises(InvalidSoupArgumentsError, match="'org/x' and 'org/x@main' are the same model"):
        hfsoup.soup(["org/x", "org/y", "org/x@main"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- nothing local is published ------------------------------------------------------------------------------------


def test_no_local_absolute_path_in_what_is_published(local_hub, tmp_path, monkeypatch):
    home = tmp_path / "home" / "alice"
    models = home / "private-project" / "models"
    folders = [make_checkpoint(models / f"ft{i}", seed=i) for i in range(2)]
    (folders[0] / "README.md").write_text("---\nlicense: mit\n---\n# ft0\n")
    (folders[1] / "README.md").write_text("---\nlicense: mit\n---\n# ft1\n")
    monkeypatch.setenv("HOME", str(home))
    out = tmp_path / "soup"
    assert main(["soup", *map(str, folders), "-o", str(out)]) == 0
    recipe = write_recipe(home / "r.yaml", {"ingredients": [str(f) for f in folders], "output": {"dir": "cooked"}})
    assert main(["cook", str(recipe), "--push", "me/cooked"]) == 0
    assert main(["push", str(out), "me/soup"]) == 0
    for folder in (out, home / "cooked"):
        for name in ("hfsoup.json", "README.md", "recipe.yaml"):
            text = (folder / name).read_text()
            assert str(tmp_path) not in text and "alice" not in text, (folder, name)
    card = (out / "README.md").read_text()
    assert "license: mit" in card  # the local ingredients' license is carried over without their path
    assert "hfsoup soup \\\n    ./ft0 \\\n    ./ft1" in card  # the reproduce command names them by folder


def test_no_local_absolute_path_in_a_scored_soup(families, tmp_path, monkeypatch):
    import shutil

    from hfsoup.publish.card import build_card, read_soup_folder

    home = tmp_path / "home" / "alice"
    folders = [shutil.copytree(families["bert"].folders()[f"ft{i}"], home / "models" / f"ft{i}") for i in range(2)]
    data = home / "data" / "dev.csv"
    data.parent.mkdir()
    data.write_text("sentence,label\n" + "".join(f"soup number {i},{i % 2}\n" for i in range(8)))
    monkeypatch.setenv("HOME", str(home))
    out = tmp_path / "soup"
    args = ["soup", *map(str, folders), "-o", str(out), "--task", "sst2", "--data-files", f"validation={data}"]
    assert main([*args, "--no-plot"]) == 0
    (out / "README.md").write_text(str(build_card(read_soup_folder(out))))
    for name in ("hfsoup.json", "results.json", "results.csv", "README.md", "recipe.yaml"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and "alice" not in text, name
    assert "dev.csv" in (out / "hfsoup.json").read_text()  # the data file is still named, by its file name
