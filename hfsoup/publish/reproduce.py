"""How a soup is made again: the recipe equivalent of the call that made it, the same as one `hfsoup soup` line, and
how the hfsoup that made it was installed.

Every soup, from the CLI, the API or a recipe, gets `recipe.yaml` beside its weights, pushed with it: each Hub
ingredient (and the base, and a Hub dataset) pinned to the commit it was read at, the method with its options, the
evaluation options that differ from their defaults, the output format. `hfsoup cook recipe.yaml` in a download of the
pushed repo makes the same weights. What cannot travel is named, never by an absolute path: a local folder by its
name (to be placed beside the recipe), a local data file by its name, sha256 and row count.

Example:
    ```py
    >>> from hfsoup.publish.reproduce import soup_command
    >>> soup_command({"ingredients": [{"id": "org/a", "revision": "3f1c"}], "method": {"name": "greedy"},
    ...               "evaluation": {"task": "sst2", "held_out": "validation[:50%]"}, "output": {"dir": "soup"}})
    ['hfsoup soup', 'org/a@3f1c', '-o soup', '--method greedy', '--task sst2', "--held-out 'validation[:50%]'"]
    ```
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import RECIPE_FILE
from ..options import as_dict, command_line, default_of, spec_of
from .naming import public_path

if TYPE_CHECKING:
    from ..hub import PinnedIngredient
    from ..selection.options import Selection
    from ..soups import SoupMethod

COOK_COMMAND = f"hfsoup cook {RECIPE_FILE}"
#: Where a remake is written, relative to the recipe (`output.dir`).
REMADE_DIR = "soup"


def soup_recipe(
    pinned: Sequence[PinnedIngredient],
    *,
    method: SoupMethod,
    selection: Selection | None = None,
    evaluation: Mapping[str, Any] | None = None,
    base: PinnedIngredient | None = None,
    dtype: str | None = None,
    max_shard_size: str | int | None = None,
    force: bool = False,
    cooked: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The recipe that remakes this soup (what `recipe.yaml` holds), from the arguments of the call that made it.

    Args:
        pinned (`Sequence[PinnedIngredient]`): the ingredients as resolved; a Hub one becomes `{id, revision: sha}`, a
            local one `./name` (its public label).
        method (`SoupMethod`): the method with its options (only those off their defaults are written).
        selection (`Selection`, *optional*): the evaluation options as asked (before defaults were filled in).
        evaluation (`dict`, *optional*): hfsoup.json's `evaluation`, whose dataset commits pin a Hub dataset.
        base (`PinnedIngredient`, *optional*): the base model, pinned like an ingredient.
        dtype, max_shard_size, force: the output format and the override, as given.
        cooked (`dict`, *optional*): the recipe the soup was cooked from (`Recipe.to_dict()`): its name, and its
            sweep, which stays the recipe's ingredients. Its `push` is left out: a remake is not pushed over this one.
        cwd (`str`, *optional*): what local paths were relative to (the current folder by default).
    """
    cwd = Path(cwd or Path.cwd())
    recipe: dict[str, Any] = {}
    if cooked and cooked.get("name"):
        recipe["name"] = cooked["name"]
    if cooked and cooked.get("sweep"):
        recipe["sweep"] = cooked["sweep"]
    else:
        recipe["ingredients"] = [_pinned(i) for i in pinned]
    if base is not None:
        recipe["base"] = _spec(base)
    recipe["method"] = {"name": method.name, **_changed(method.options)}
    if selection is not None:
        recipe["evaluation"] = _evaluation(selection, evaluation or {}, cwd)
    # A soup's files never depend on where it was written: the remake goes to ./soup beside the recipe.
    output: dict[str, Any] = {"dir": REMADE_DIR}
    if dtype not in (None, "auto"):
        output["dtype"] = dtype
    if max_shard_size is not None and str(max_shard_size) != "5GB":
        output["max_shard_size"] = max_shard_size
    recipe["output"] = output
    if force:
        recipe["force"] = True
    return recipe


def _pinned(ingredient: PinnedIngredient) -> dict[str, str] | str:
    if ingredient.ref.is_local:
        return _local(ingredient.ref.spec)
    return {"id": str(ingredient.ref.repo_id), "revision": str(ingredient.sha)}


def _spec(ingredient: PinnedIngredient) -> str:
    return _local(ingredient.ref.spec) if ingredient.ref.is_local else f"{ingredient.ref.repo_id}@{ingredient.sha}"


def _local(label: str) -> str:
    """A local folder's public label as a recipe names it: relative to the recipe, so `./` marks it local."""
    return label if label.startswith(("./", "../")) else f"./{label}"


def _changed(options: Any) -> dict[str, Any]:
    """The recipe keys of an options dataclass whose values differ from their defaults."""
    data = as_dict(options, recipe_only=True)
    fields = {f.name: f for f in dataclasses.fields(options)}
    return {k: v for k, v in data.items() if v != default_of(fields[k])}


def _evaluation(selection: Selection, evaluation: Mapping[str, Any], cwd: Path) -> dict[str, Any]:
    """The selection's recipe keys off their defaults, with local paths public and Hub datasets pinned."""
    fields = {f.name: f for f in dataclasses.fields(selection) if spec_of(f).recipe}
    values = {name: getattr(selection, name) for name in fields}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name == "task":
            out[name] = getattr(value, "name", value)  # a `Task` object is named by its name
        elif value is not None and value != default_of(fields[name]):
            out[name] = value
    if isinstance(out.get("compare"), list | tuple):  # a baseline given as a method object: its name
        out["compare"] = [getattr(item, "name", item) for item in out["compare"]]
    if out.get("data_files"):
        out["data_files"] = {
            split: [public_path(f, cwd) for f in ([files] if isinstance(files, str) else files)]
            for split, files in out["data_files"].items()
        }
    if isinstance(out.get("lm_eval_include"), str):  # the user's own task YAMLs: a local path, named publicly
        out["lm_eval_include"] = _local(public_path(out["lm_eval_include"], cwd))
    # A local dataset is named by its public name whether or not data files come with it (beside them it was
    # published as given, a path of this machine).
    if isinstance(out.get("dataset"), str) and _local_data(out["dataset"]):
        out["dataset"] = _local(public_path(out["dataset"], cwd))
    elif not out.get("data_files") and evaluation.get("dataset_sha"):
        # The task's own dataset, or the one named (a branch or tag may move): pinned to the commit it was read at.
        asked = out.get("dataset") or evaluation.get("dataset")
        if isinstance(asked, str):
            out["dataset"] = f"{asked.partition('@')[0]}@{evaluation['dataset_sha']}"
    if isinstance(selection.report, list | tuple) and len(selection.report) > 1:
        out["report"] = _pinned_reports(list(selection.report), evaluation, cwd)
    return {name: out[name] for name in fields if name in out}  # in declaration order, however they were added


def _local_data(spec: str) -> bool:
    """A dataset named by a local path: one that exists here, or is spelled as a path (`./x`, `../x`, `/x`, `~/x`),
    so that a folder gone since is not published by its path either."""
    return spec.startswith(("./", "../", "~")) or os.path.isabs(spec) or os.path.exists(spec)


def _pinned_reports(labels: list[str], evaluation: Mapping[str, Any], cwd: Path) -> list[str]:
    """`DATASET[@REV]:SPLIT` report sets of a Hub dataset, pinned to the commit each was read at; a local folder's
    by its public name, as the selection's own dataset folder is."""
    from ..selection.options import parse_report_set

    shas = {e.get("name"): e.get("dataset_sha") for e in evaluation.get("reports") or [] if isinstance(e, dict)}
    pinned = []
    for label in labels:
        found = parse_report_set(label)
        sha = shas.get(label)
        if found.dataset and _local_data(found.dataset):
            label = f"{_local(public_path(found.dataset, cwd))}:{found.split}"
        elif found.dataset and sha:
            label = f"{found.dataset.partition('@')[0]}@{sha}:{found.split}"
        pinned.append(label)
    return pinned


# ---- what cannot travel: local folders and data files ----


def local_data(selection: Selection | None, cwd: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Each local data file of the selection: its public name, split, sha256 and row count (it cannot be pushed)."""
    from ..io.checkpoint import file_sha256

    if selection is None or not selection.data_files:
        return []
    cwd = Path(cwd or Path.cwd())
    records = []
    for split, files in selection.data_files.items():
        for f in [files] if isinstance(files, str) else files:
            path = Path(f).expanduser()
            if path.is_file():
                record = {"split": split, "file": public_path(path, cwd), "sha256": file_sha256(path)}
                records.append({**record, "rows": count_rows(path)})
    return records


def count_rows(path: Path) -> int | None:
    """Rows of a csv/tsv, json/jsonl or parquet data file (None for another format): to tell a copy from another."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8") as f:
                return max(sum(1 for _ in csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")) - 1, 0)
        if suffix in (".json", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except ValueError:  # JSON lines
                return sum(1 for line in text.splitlines() if line.strip())
            return len(data) if isinstance(data, list) else 1
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, UnicodeDecodeError, csv.Error, ImportError):
        return None
    return None


def recipe_text(recipe: Mapping[str, Any], *, data_files: Sequence[Mapping[str, Any]] = ()) -> str:
    """`recipe.yaml`: the command that runs it, what must be placed beside it, then the recipe."""
    import yaml

    lines = [f"# {COOK_COMMAND}"]
    if any(isinstance(i, Mapping) for i in recipe.get("ingredients") or []):
        lines.append("# Remakes this soup: every Hub ingredient is pinned to the commit it was made from.")
    local = [i for i in recipe.get("ingredients") or [] if isinstance(i, str)]
    if isinstance(recipe.get("base"), str) and recipe["base"].startswith("."):
        local.append(recipe["base"])
    if local or data_files:
        lines.append("# Local inputs do not travel with the soup: place them beside this file before cooking it.")
        lines += [f"#   {name}  (local folder)" for name in local]
        lines += [
            f"#   {d['file']}  ({d['split']} data file; sha256 {d['sha256']}, {_rows(d.get('rows'))})"
            for d in data_files
        ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(dict(recipe), sort_keys=False, width=1000)


def _rows(rows: Any) -> str:
    return f"{rows} rows" if isinstance(rows, int) else "rows not counted"


def soup_command(recipe: Mapping[str, Any]) -> list[str] | None:
    """The `hfsoup soup` line equivalent to `recipe`, one shell-quoted argument per item (`None` for a sweep's
    recipe, which trains its ingredients first). The flags come from the options' declarations."""
    from ..io.output import Output
    from ..selection.options import Selection
    from ..soups import SOUPS

    if "ingredients" not in recipe:
        return None
    specs = []
    for item in recipe["ingredients"]:
        if isinstance(item, Mapping):
            specs.append(item["id"] + (f"@{item['revision']}" if item.get("revision") else ""))
        else:
            specs.append(str(item))
    output = dict(recipe.get("output") or {})
    method = dict(recipe.get("method") or {"name": "uniform"})
    name = method.pop("name", "uniform")
    command = ["hfsoup soup", *map(shlex.quote, specs), f"-o {shlex.quote(str(output.pop('dir', 'soup')))}"]
    command.append(f"--method {name}")
    if recipe.get("base"):
        command.append(f"--base {shlex.quote(str(recipe['base']))}")
    if name in SOUPS:
        command += command_line(SOUPS[name].Options, method)
    evaluation = dict(recipe.get("evaluation") or {})
    command += command_line(Selection, evaluation)
    command += command_line(Output, output)
    # The command line's --force is both the soup's override and the selection's overlap consent.
    if recipe.get("force") or evaluation.get("force"):
        command.append("--force")
    return command


# ---- how hfsoup was installed ----


@functools.lru_cache(maxsize=1)
def install_record() -> dict[str, Any]:
    """How the running hfsoup was installed, for the card's install line: `{"version", "source"}` with `source`
    `git` (and `url`, `commit`, `modified`: a checkout or a pip install from git), `index` (a wheel from a package
    index), `local` (a source folder with no public git remote) or `unknown`. Never a local path."""
    from importlib import metadata

    from .. import __version__

    record: dict[str, Any] = {"version": __version__, "source": "unknown"}
    root = Path(__file__).resolve().parents[2]  # the folder holding the imported hfsoup package
    if (root / ".git").exists():  # a checkout (editable install, or on PYTHONPATH): it runs this very code
        return {**record, **_git_checkout(root)}
    try:
        dist = metadata.distribution("hfsoup")
    except metadata.PackageNotFoundError:
        return record
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        direct = None
    if direct is None:
        return {**record, "source": "index"}
    vcs = direct.get("vcs_info") if isinstance(direct, dict) else None
    url = public_git_url(str(direct.get("url", ""))) if isinstance(direct, dict) else None
    if isinstance(vcs, dict) and vcs.get("vcs") == "git" and url and vcs.get("commit_id"):
        return {**record, "source": "git", "url": url, "commit": vcs["commit_id"]}
    return {**record, "source": "local"}


def _git_checkout(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        remotes = git("remote").split()
        urls = [public_git_url(git("remote", "get-url", r)) for r in sorted(remotes, key=lambda r: r != "origin")]
        modified = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"source": "local"}
    url = next((u for u in urls if u), None)
    if url is None:
        return {"source": "local", "commit": commit, "modified": modified}
    return {"source": "git", "url": url, "commit": commit, "modified": modified}


def public_git_url(url: str) -> str | None:
    """A remote as `pip install git+...` takes it, without credentials; None for a local path (never published)."""
    url = url.strip().removeprefix("git+")
    scp = re.fullmatch(r"([\w.-]+)@([\w.-]+):(?!//)(.+)", url)  # git@github.com:org/x.git
    if scp:
        return f"ssh://{scp.group(1)}@{scp.group(2)}/{scp.group(3)}"
    found = re.fullmatch(r"(https?|ssh|git)://(?:([^/@:]*)(?::[^/@]*)?@)?([^/@]+)(/.*)", url)
    if not found:
        return None  # file://, a folder: nothing another machine can install from
    scheme, user, host, path = found.groups()
    # A password or token in the URL is never kept; an ssh login name (git@) is part of the address.
    login = f"{user}@" if scheme == "ssh" and user else ""
    return f"{scheme}://{login}{host}{path}"


def install_lines(record: Mapping[str, Any] | None, version: str | None) -> list[str]:
    """The card's install line(s) for the hfsoup that made the soup (`install_record`, from hfsoup.json)."""
    if not isinstance(record, Mapping):
        return [f"# made with hfsoup {version}; how it was installed was not recorded (install that version)"]
    version = record.get("version") or version
    source = record.get("source")
    if source == "index":
        return [f"pip install hfsoup=={version}"]
    if source == "git" and record.get("url") and record.get("commit"):
        line = "pip install " + shlex.quote(f"git+{record['url']}@{record['commit']}")
        if record.get("modified"):
            return [f"# hfsoup {version}, from a checkout with uncommitted changes to this commit", line]
        return [line]
    commit = f" at commit {record['commit']}" if record.get("commit") else ""
    changed = " with uncommitted changes" if record.get("modified") else ""
    return [
        f"# made with hfsoup {version}, installed from a local source checkout{commit}{changed} (no public git remote)"
    ]
