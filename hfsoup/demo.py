"""`hfsoup demo`: the whole path from Hub IDs to a loaded soup, offline, in under a minute.

It starts the local Hub in-process, publishes a tiny BERT family (a base and three fine-tunes sharing its
initialization), soups the fine-tunes by Hub ID (one pinned to a commit SHA), loads the soup with `transformers` and
checks it against an average computed independently in float64.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def run_demo(*, workdir: str | os.PathLike | None = None, report: Callable[[str], None] = logger.info) -> dict:
    """Run the offline demo and return what it measured.

    Args:
        workdir (`str` or `os.PathLike`, *optional*):
            Where to keep the local Hub, the cache and the soup; a temporary folder (deleted at the end) by default.
        report (`Callable[[str], None]`, *optional*):
            Called with each line of the running commentary (the CLI passes `print`).

    Returns:
        `dict`: the soup folder, the ingredient repo IDs and SHAs, and the largest deviation from the reference.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="hfsoup-demo-") as tmp:
            result = _run(Path(tmp), report)
        report("(The demo worked in a temporary folder, now deleted; pass --workdir DIR to keep its files.)")
        return result
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return _run(Path(workdir), report)


def _run(workdir: Path, report: Callable[[str], None]) -> dict:
    from .testing.env import use_local_hub
    from .testing.hub_server import LocalHubServer

    start = time.perf_counter()
    with LocalHubServer(workdir / "hub") as server, use_local_hub(server.url, workdir / "hf_home"):
        report(f"[1/5] Local Hub running at {server.url} (store: {workdir / 'hub'})")
        return _steps(workdir, server.url, report, start)


def _steps(workdir: Path, endpoint: str, report: Callable[[str], None], start: float) -> dict:
    import torch
    from huggingface_hub import HfApi
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .cook import soup
    from .testing.families import build_family, publish_family
    from .testing.reference import max_relative_deviation, reference_average

    family = build_family("bert", workdir / "family", n_finetunes=3, seed=0)
    repos = publish_family(family, org="hfsoup-demo", members=["base", "ft0", "ft1", "ft2"])
    ingredients = [repos[f"ft{i}"] for i in range(3)]
    report(f"[2/5] Published a tiny BERT base and 3 fine-tunes: {', '.join(ingredients)}")

    # Pin one ingredient by commit SHA, as a user reproducing a soup would.
    sha = HfApi().model_info(ingredients[2]).sha
    specs = [ingredients[0], ingredients[1], f"{ingredients[2]}@{sha}"]
    out = workdir / "soup"
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
