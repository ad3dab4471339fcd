"""Hostile input to hfsoup's parsers: YAML that expands ("billion laughs"), megabyte values, JSON of the wrong shape,
and tokens echoed by a server.

Each test builds the attack for real (a nested-alias document, a 1 MB value, a type-confused config.json, a Hub that
answers with the request's token in its error) and asserts from what was printed, measured or raised that it was
refused quickly, in a few lines, naming the file and field, and with no token in any byte of output.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import tracemalloc
import urllib.request
import warnings

import pytest
from huggingface_hub import HfApi

import hfsoup
from hfsoup import safeyaml
from hfsoup.card import build_card, ingredient_cards, read_soup_folder
from hfsoup.cli import main
from hfsoup.errors import HfsoupError, IngredientConfigError, RecipeError
from hfsoup.recipe import load_recipe
from hfsoup.scrub import scrub
from hfsoup.testing.publish import upload

from .test_soup_local import make_checkpoint

SMALL = 10_000  # bytes: what a refusal may print
TOKEN = "hf_ParserAttackTokenQw8Zr4Nx2Lp6Vt0"
OTHER = "hf_SomeoneElsesTokenAb12Cd34Ef56Gh78"  # token-shaped, not the session's: scrubbed as well
ORG_TOKEN = "api_org_LeakedOrgTokenXy98Wv76Ut54"


def laughs(levels: int = 9, *, indent: str = "") -> str:
    """The classic: `l0` a string, each next anchor a list of 9 aliases of the previous; `*l9` stands for 9**9."""
    lines = [f'{indent}l0: &l0 "lol"']
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def measured(call):
    """Run `call()`; return (result, seconds, peak bytes allocated by Python meanwhile)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = call()
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, seconds, peak


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("HFSOUP_HUB_RETRIES", "1")
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0.01")
    monkeypatch.delenv("HFSOUP_DEBUG", raising=False)


# ---- YAML: billion laughs ----------------------------------------------------------------------------------------


def test_billion_laughs_recipe_is_refused_fast_and_small(tmp_path, capfd):
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text("x:\n" + laughs(indent="  ") + "ingredients: [org/a, org/b]\noutput: {dir: out}\nname: *l9\n")
    assert len(recipe.read_bytes()) < 700  # the was 461 bytes: 1.4 GB and 351 MB printed before the fix
    code, seconds, peak = measured(lambda: main(["validate", str(recipe)]))
    out, err = capfd.readouterr()
    assert code == 1 and "aliases" in err and "billion laughs" in err and "Traceback" not in err
    assert len(out) + len(err) < SMALL and seconds < 5 and peak < 20 * 2**20


def test_many_flat_aliases_deep_nesting_and_self_reference_are_refused(tmp_path):
    cases = {
        "aliases": "a: &a x\nb: [" + ", ".join(["*a"] * (safeyaml.MAX_ALIASES + 1)) + "]\n",
        "levels deep": "a: " + "[" * (safeyaml.MAX_DEPTH + 1) + "]" * (safeyaml.MAX_DEPTH + 1) + "\n",
        "contains itself": "a: &a [1, *a]\n",
        "larger than": "a: " + "x" * (safeyaml.MAX_TEXT + 1) + "\n",
    }
    for fragment, text in cases.items():
        path = tmp_path / f"{len(fragment)}.yaml"
        path.write_text(text)
        with pytest.raises(RecipeError, match=fragment) as info:
            load_recipe(path)
        assert len(str(info.value)) < 1000


def test_a_recipe_with_a_few_anchors_still_validates(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "ingredients: &ing [org/a, org/b]\nmethod: {name: greedy}\nevaluation: &ev {task: sst2, fraction: 0.5}\n"
        "output: {dir: out}\n"
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    assert [i.id for i in recipe.ingredients] == ["org/a", "org/b"] and recipe.evaluation.task == "sst2"


def _post(url: str, payload: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


def test_billion_laughs_readme_on_the_local_hub(local_hub, tmp_path, monkeypatch):
    folder = make_checkpoint(tmp_path / "m", seed=0)
    (folder / "README.md").write_text("---\n" + laughs() + "base_model: *l9\n---\n# lol\n")
    assert len((folder / "README.md").read_bytes()) < 600  # the issue's: 403 bytes, model_info 702 MB
    # huggingface_hub asks validate-yaml before committing a README (refused now, see below); an attacker's client
    # does not ask.
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda *args, **kwargs: None)
    upload(folder, "laughs/model")

    def info() -> bytes:
        with urllib.request.urlopen(f"{local_hub.url}/api/models/laughs/model") as answer:
            return answer.read()

    body, seconds, peak = measured(info)  # the server runs in this process: its allocations are counted
    assert json.loads(body)["id"] == "laughs/model" and len(body) < SMALL
    assert seconds < 5 and peak < 50 * 2**20
    assert HfApi().model_info("laughs/model").card_data is None  # served as the Hub serves an invalid card
    content = (folder / "README.md").read_text()
    assert _post(f"{local_hub.url}/api/validate-yaml", {"content": content, "repoType": "model"}) == 400
