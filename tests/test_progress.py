"""Progress a person can follow (issue 16): a line per pipeline stage, hfsoup's own bars (one per ingredient's
download), the libraries' bars only with -v, nothing with -q, and a default results table that costs one scoring per
row (the learned soup, a search of its own, only when named, with its time estimate shown).

Each run is `hfsoup soup` as a user types it, against a local Hub over HTTP, its stderr on a terminal and read as it
is written (`hfsoup.testing.terminal`), with the time of each update.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from hfsoup.selection.options import Selection, default_baselines
from hfsoup.soups import SOUPS
from hfsoup.testing.terminal import run_in_terminal

STAGES = [
    "Pinning 4 ingredients to commits",
    "Checking that they can be merged",
    "Fetching the weights of 4 models",
    "Measuring shared initialization",
    "Scoring 4 ingredients on sst2",
    "Making and scoring the uniform soup",
    "Making and scoring the greedy soup",
    "Writing the greedy soup",
]


@pytest.fixture(scope="module")
def four_on_a_hub(tmp_path_factory):
    """Four tiny BERT fine-tunes and a tiny GLUE sst2 on a local Hub; yields (repo ids, client environment)."""
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import local_hub_environ, use_local_hub
    from hfsoup.testing.families import build_family, publish_family
    from hfsoup.testing.glue import build_glue, publish_glue

    root = tmp_path_factory.mktemp("progress")
    family = build_family("bert", root / "family", n_finetunes=4, seed=3)
    with LocalHubServer(root / "store", anonymous_writes=True) as server:
        with use_local_hub(server.url, root / "publish-home"):
            ids = publish_family(family, members=[f"ft{i}" for i in range(4)])
            publish_glue(build_glue(root / "glue", tasks=["sst2"]))
        yield [ids[f"ft{i}"] for i in range(4)], local_hub_environ(server.url, root / "home")


def _run(args: list[str], environ: dict[str, str], **env: str) -> tuple[int, list[tuple[float, str]], str]:
    """`hfsoup ARGS` on a terminal; `HF_HUB_DISABLE_PROGRESS_BARS` is dropped (the suite sets it)."""
    full = {k: v for k, v in {**os.environ, **environ, **env}.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    run = run_in_terminal([sys.executable, "-m", "hfsoup.cli", *args], full)
    return run.code, run.updates, run.stdout


def _soup(ids: list[str], out, *extra: str) -> list[str]:
    return ["soup", *ids, "--method", "greedy", "--task", "sst2", "-o", str(out), "--no-plot", *extra]


def test_a_greedy_soup_says_each_stage_and_never_goes_quiet_for_ten_seconds(four_on_a_hub, tmp_path):
    ids, environ = four_on_a_hub
    code, updates, out = _run(_soup(ids, tmp_path / "soup"), environ, HFSOUP_PROGRESS_DELAY="0")
    assert code == 0, updates
    lines = [text for _, text in updates]
    # Each stage's line, once, in the pipeline's order.
    where = [next(i for i, line in enumerate(lines) if line.startswith(stage)) for stage in STAGES]
    assert where == sorted(where), lines
    assert all(sum(line.startswith(stage) for line in lines) == 1 for stage in STAGES)
    times = [0.0] + [t for t, _ in updates]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 10, (max(gaps), updates)
    # hfsoup's own bars: scoring (moved by every batch), the soup's tensors, one download bar per ingredient named by
    # it; never huggingface_hub's files-counted bar, nor the libraries' own (transformers loading, datasets).
    assert any(line.startswith("Scoring ingredients:") for line in lines)
    assert any(line.startswith("Souping:") for line in lines)
    for repo in ids:
        assert any(line.startswith(f"Downloading {repo}:") for line in lines), (repo, lines)
    assert not [line for line in lines if re.match(r"(Fetching \d+ files|Loading weights|Tokenizing)", line)]
    assert "INFO" not in "\n".join(lines)
    assert "greedy soup of 4 ingredients written" in out


def test_bars_wait_a_second_and_quiet_prints_nothing(four_on_a_hub, tmp_path):
    ids, environ = four_on_a_hub
    code, updates, _ = _run(_soup(ids, tmp_path / "soup"), environ)  # the default delay: a bar after 1 s
    assert code == 0
    lines = [text for _, text in updates if text != "<exit>"]
    # A bar shows only once its step has run a second, each time it redraws: never before.
    for line in lines:
        if m := re.search(r"\[(\d\d):(\d\d)<", line):
            assert int(m[1]) * 60 + int(m[2]) >= 1, line
    assert [line for line in lines if any(line.startswith(s) for s in STAGES)] == [
        next(line for line in lines if line.startswith(s)) for s in STAGES
    ]
    code, updates, out = _run(["-q", *_soup(ids, tmp_path / "quiet")], environ, HFSOUP_PROGRESS_DELAY="0")
    assert code == 0 and [text for _, text in updates] == ["<exit>"]
    assert "greedy soup of 4 ingredients written" in out


def test_verbose_adds_the_detail_and_the_libraries_bars(four_on_a_hub, tmp_path):
    ids, environ = four_on_a_hub
    code, updates, _ = _run([*_soup(ids, tmp_path / "soup"), "-v"], environ, HFSOUP_PROGRESS_DELAY="0")
    assert code == 0
    text = "\n".join(line for _, line in updates)
    assert "INFO hfsoup" in text and "greedy soup: " in text  # each greedy decision
    assert all(stage in text for stage in STAGES) and text.count(STAGES[0]) == 1  # the stages are not doubled
    assert re.search(r"^(Loading weights|Tokenizing)", text, re.MULTILINE)  # the libraries' bars: detail, with -v


def test_the_default_table_compares_what_costs_one_scoring_each():
    assert default_baselines() == ("uniform", "ensemble")
    assert Selection(task="sst2").compared == ["uniform", "ensemble"]
    searches = [name for name, cls in SOUPS.items() if cls.needs_scores]
    assert {"greedy", "learned"} <= set(searches) and not set(searches) & set(default_baselines())


def test_the_learned_soup_when_named_shows_its_steps_and_time_estimate(four_on_a_hub, tmp_path):
    ids, environ = four_on_a_hub
    args = [*_soup(ids, tmp_path / "soup"), "--compare", "uniform,ensemble", "--learned-steps", "3"]
    args[args.index("greedy")] = "learned"
    code, updates, out = _run(args, environ, HFSOUP_PROGRESS_DELAY="0")
    assert code == 0, updates
    lines = [text for _, text in updates]
    estimate = [line for line in lines if line.startswith("learned soup: 3 steps of gradient descent")]
    assert len(estimate) == 1 and re.search(r"about \d+ (s|min)", estimate[0]), lines
    assert any(re.match(r"learned soup: .*\d/4", line) for line in lines)  # its bar, step by step
    assert "learned soup of 4 ingredients written" in out
    # Without naming it, the learned soup is not fitted at all.
    code, updates, out = _run(_soup(ids, tmp_path / "default"), environ)
    assert code == 0 and "learned soup" not in out and not any("learned" in text for _, text in updates)
