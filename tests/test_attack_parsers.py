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
import re
import time
import tracemalloc
import urllib.request
import warnings

import pytest
from huggingface_hub import HfApi

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import HfsoupError, IngredientConfigError, RecipeError, quote
from hfsoup.io import safeyaml
from hfsoup.publish.card import build_card, ingredient_cards, read_soup_folder
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
        # 90 anchors, each 40 levels deep around an alias of the previous: 3,600 levels once expanded (past Python's
        # recursion limit for whoever prints or serializes it)
        "with its aliases expanded": "".join(
            f"a{k}: &a{k} {'[' * 40}{f'*a{k - 1}' if k else '1'}{']' * 40}\n" for k in range(90)
        ),
        "larger than": "a: " + "x" * (safeyaml.MAX_TEXT + 1) + "\n",
    }
    for fragment, text in cases.items():
        path = tmp_path / f"{len(fragment)}.yaml"
        path.write_text(text)
        with pytest.raises(RecipeError, match=fragment) as info:
            load_recipe(path)
        assert len(str(info.value)) < 1000


@pytest.mark.parametrize("value", ["1" * 5000, "2020-13-45", "2020-02-30 10:00:00"])
def test_scalars_python_cannot_build_are_invalid_yaml_not_a_crash(tmp_path, capfd, value):
    (tmp_path / "r.yaml").write_text(f"ingredients: [org/a, org/b]\noutput: {{dir: out}}\nname: {value}\n")
    code = main(["validate", str(tmp_path / "r.yaml")])
    err = capfd.readouterr().err
    assert code == 1 and "is not valid YAML" in err and "probably a bug" not in err and len(err) < 1000, err


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


def classifier(folder, seed: int, **config):
    """A tiny "sequence classifier" with the files hfsoup reads: config (labels), tokenizer.json, tokenizer_config,
    special tokens, a preprocessor and a generation config."""
    make_checkpoint(folder, seed=seed)
    base = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "id2label": {"0": "NEG", "1": "POS"},
        "label2id": {"NEG": 0, "POS": 1},
        "problem_type": "single_label_classification",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    tokenizer = {
        "model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "[UNK]": 1, "a": 2}, "merges": []},
        "added_tokens": [{"id": 0, "content": "[PAD]"}],
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"pad_token": "[PAD]", "unk_token": {"content": "[UNK]"}})
    )
    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_resize": False}))
    (folder / "generation_config.json").write_text(json.dumps({"max_length": 8}))
    return folder


def test_billion_laughs_base_model_in_an_ingredient_card(tmp_path, capfd, caplog):
    a, b = classifier(tmp_path / "a", 0), classifier(tmp_path / "b", 1)
    (b / "README.md").write_text("---\n" + laughs() + "base_model: *l9\nlicense: *l9\n---\n# lol\n")
    assert len((b / "README.md").read_bytes()) < 600  # the issue's: 376 bytes, 39 MB printed by check
    code, seconds, peak = measured(lambda: main(["check", str(a), str(b), "--skip-weights"]))
    out, err = capfd.readouterr()
    assert code == 0 and "OK" in out and len(out) + len(err) < SMALL and seconds < 10 and peak < 50 * 2**20
    # The soup's card reads the ingredients' cards too (push, cook): the laughing card costs its metadata only.
    soup = hfsoup.soup([a, b], tmp_path / "soup").output_dir
    with caplog.at_level(logging.WARNING, logger="hfsoup"):
        (cards, seconds, peak) = measured(lambda: ingredient_cards(read_soup_folder(soup)))
        card = str(build_card(read_soup_folder(soup), repo_id="me/soup", cards=cards))
    assert cards[1] is None and "could not read the model card" in caplog.text and "aliases" in caplog.text
    assert len(caplog.text) < SMALL and len(card) < 20_000 and seconds < 5 and peak < 50 * 2**20


# ---- values a megabyte long ----------------------------------------------------------------------------------------

MEGA = "x" * 1_000_000


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (f"? {MEGA}\n: 1\n", "unknown key"),  # an explicit key: plain keys are limited to 1024 characters
        (f"name: [{MEGA}]\n", "name"),
        (f"method: {{name: {MEGA}}}\n", "method.name"),
        (f"output: {{dir: out, dtype: {MEGA}}}\n", "output.dtype"),
        (f"evaluation: {{task: sst2, fraction: {MEGA}}}\n", "evaluation.fraction"),
        (f"ingredients: [org/a, org/{MEGA}]\n", "ingredients[1]"),
        (f"ingredients: [org/a, {MEGA}]\n", "ingredients[1]"),
    ],
)
def test_megabyte_values_in_a_recipe_are_quoted_short(tmp_path, capfd, line, where):
    recipe = tmp_path / "huge.yaml"
    base = {"ingredients": "ingredients: [org/a, org/b]\n", "output": "output: {dir: out}\n"}
    recipe.write_text(line + "".join(v for k, v in base.items() if not line.startswith(k)))
    code = main(["validate", str(recipe)])
    out, err = capfd.readouterr()
    assert code == 1 and where in err and "Traceback" not in err, err[:500]
    assert len(out) + len(err) < SMALL and "x" * 300 not in err, len(err)


def test_megabyte_values_in_configs_and_cards_are_quoted_short(tmp_path, capfd):
    a = classifier(tmp_path / "a", 0)
    b = classifier(tmp_path / "b", 1, model_type=MEGA, id2label={"0": MEGA, "1": "POS"}, problem_type=MEGA)
    (a / "README.md").write_text("---\nbase_model: org/base\n---\n")
    (b / "README.md").write_text(f"---\nbase_model: org/{MEGA}\n---\n")
    report = tmp_path / "report.json"
    code = main(["check", str(a), str(b), "--skip-weights", "--json", str(report)])
    out, err = capfd.readouterr()
    assert code == 1 and "model_type is" in out and "problem_type is" in out and "labels" in out
    assert "(1,000,000 characters)" in out and "different base models" in out
    assert len(out) + len(err) < SMALL, len(out)
    code = main(["soup", str(a), str(b), "-o", str(tmp_path / "soup")])
    out, err = capfd.readouterr()
    assert code == 1 and "must not be souped" in err and len(out) + len(err) < SMALL
    assert not (tmp_path / "soup").exists()


# ---- JSON of the wrong shape ---------------------------------------------------------------------------------------

# Every field hfsoup reads from an ingredient's JSON files, as (file, path of keys); () is the whole file.
FIELDS = [
    ("config.json", ()),
    ("config.json", ("model_type",)),
    ("config.json", ("architectures",)),
    ("config.json", ("architectures", 0)),
    ("config.json", ("id2label",)),
    ("config.json", ("id2label", "0")),
    ("config.json", ("label2id",)),
    ("config.json", ("label2id", "NEG")),
    ("config.json", ("problem_type",)),
    ("config.json", ("tie_word_embeddings",)),
    ("config.json", ("torch_dtype",)),
    ("tokenizer.json", ()),
    ("tokenizer.json", ("model",)),
    ("tokenizer.json", ("model", "type")),
    ("tokenizer.json", ("model", "vocab")),
    ("tokenizer.json", ("model", "vocab", "a")),
    ("tokenizer.json", ("model", "merges")),
    ("tokenizer.json", ("added_tokens",)),
    ("tokenizer.json", ("added_tokens", 0)),
    ("tokenizer.json", ("added_tokens", 0, "id")),
    ("tokenizer.json", ("added_tokens", 0, "content")),
    ("tokenizer_config.json", ()),
    ("tokenizer_config.json", ("pad_token",)),
    ("tokenizer_config.json", ("unk_token",)),
    ("tokenizer_config.json", ("unk_token", "content")),
    ("special_tokens_map.json", ()),
    ("special_tokens_map.json", ("pad_token",)),
    ("preprocessor_config.json", ()),
    ("generation_config.json", ()),
]
CONFUSIONS = [["a", 1], {"k": "v"}, 7, -1, "text", None, True, 1.5, [[[]]]]


def _set(data, keys, value):
    if not keys:
        return value
    data = copy.deepcopy(data)
    inner = data
    for key in keys[:-1]:
        inner = inner[key]
    inner[keys[-1]] = value
    return data


def test_type_confusion_in_every_field_read_is_success_or_an_error_naming_the_file(tmp_path):
    a, b = classifier(tmp_path / "a", 0), classifier(tmp_path / "b", 1)
    originals = {name: (b / name).read_text() for name, _ in FIELDS}
    outcomes = {"ok": 0, "refused": 0, "souped": 0}
    for name, keys in FIELDS:
        for i, value in enumerate(CONFUSIONS):
            (b / name).write_text(json.dumps(_set(json.loads(originals[name]), keys, value)))
            order = [a, b] if i % 2 else [b, a]  # the broken one second, or first (whose files the soup keeps)
            try:
                hfsoup.check(order, weights=False)
                outcomes["ok"] += 1
                if name == "config.json":  # the soup rewrites the first ingredient's config with the new dtype
                    hfsoup.soup(order, tmp_path / "soup", dtype="float16", overwrite=True, force=True)
                    outcomes["souped"] += 1
            except HfsoupError as e:
                assert str(b / name) in str(e), (name, keys, value, str(e)[:300])
                assert len(str(e)) < 2000
                outcomes["refused"] += 1
            except Exception as e:  # noqa: BLE001 - the point: nothing else may come out
                pytest.fail(f"{name} {keys} = {value!r}: {type(e).__name__}: {e}")
        (b / name).write_text(originals[name])
    assert outcomes["refused"] > len(FIELDS) * 3 and outcomes["ok"] > 0 and outcomes["souped"] > 0, outcomes


def test_broken_json_nesting_and_encoding_name_the_file(tmp_path):
    a = classifier(tmp_path / "a", 0)
    cases = {
        "config.json": b'{"model_type": ',  # truncated
        "tokenizer.json": b"[" * 100_000 + b"]" * 100_000,  # deep enough to make json recurse past the limit
        "tokenizer_config.json": b'{"pad_token": "\xff\xfe"}',  # not UTF-8
    }
    for name, raw in cases.items():
        b = classifier(tmp_path / f"b-{name}", 1)
        (b / name).write_bytes(raw)
        with pytest.raises(IngredientConfigError, match=str(b / name).replace(".", r"\.")):
            hfsoup.check([a, b], weights=False)
    b = classifier(tmp_path / "b-vocab", 1)
    (b / "tokenizer.json").unlink()
    (b / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(IngredientConfigError, match="vocab.txt"):
        hfsoup.check([a, b], weights=False)


@pytest.mark.parametrize("command", ["check", "soup"])
def test_cli_names_the_file_and_field_never_a_bug(tmp_path, capfd, command):
    a = classifier(tmp_path / "a", 0)
    b = classifier(tmp_path / "b", 1, id2label={"zero": "NEG", "1": "POS"})
    args = [command, str(a), str(b)] + (["-o", str(tmp_path / "soup")] if command == "soup" else [])
    code = main(args)
    _, err = capfd.readouterr()
    assert code == 1 and str(b / "config.json") in err and "id2label" in err and "'zero'" in err
    assert "probably a bug" not in err and "Traceback" not in err
    assert not (tmp_path / "soup").exists()


# ---- tokens a server echoes ----------------------------------------------------------------------------------------

ECHO = f"Invalid request: Authorization: Bearer {TOKEN} (other keys seen: {OTHER}, {ORG_TOKEN})"


@pytest.fixture
def echoing_hub(local_hub, tmp_path):
    """Two public models and a local soup of them; then the Hub answers every request with HTTP 400 whose message
    echoes the session's token and two other token-shaped strings."""
    names = []
    for i in range(2):
        upload(make_checkpoint(tmp_path / "src" / f"ft{i}", seed=i), f"echo/ft{i}")
        names.append(f"echo/ft{i}")
    soup = hfsoup.soup([tmp_path / "src" / "ft0", tmp_path / "src" / "ft1"], tmp_path / "soup").output_dir
    # 404 EntryNotFound: huggingface_hub puts the server's message in the exception's text, which hfsoup quotes.
    local_hub.faults.add("status", path=r".", status=404, error_code="EntryNotFound", times=None, message=ECHO)
    return local_hub, names, soup


def _printed_nothing_secret(text: str) -> None:
    assert TOKEN not in text and OTHER not in text and ORG_TOKEN not in text
    assert not re.search(r"(?:hf_|api_org_)[A-Za-z0-9]{8,}", text), text  # not even a token's head


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "HFSOUP_DEBUG"])
@pytest.mark.parametrize("command", ["check", "soup", "push", "eval"])
def test_a_token_echoed_by_the_hub_is_printed_nowhere(
    echoing_hub, tmp_path, hf_home, capfd, monkeypatch, debug, command
):
    hub, names, soup = echoing_hub
    if debug:
        monkeypatch.setenv("HFSOUP_DEBUG", "1")
    # The token in use reaches the client three ways: --token, HF_TOKEN and the stored 'hf auth login' token.
    args = {
        "check": ["check", *names, "--token", TOKEN],
        "soup": ["soup", *names, "-o", str(tmp_path / "out")],
        "push": ["push", str(soup), "echo/soup", "--token", TOKEN],
        "eval": ["eval", names[0], "--task", "sst2", "--limit", "2"],
    }[command]
    if command == "soup":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    if command == "eval":
        (hf_home / "token").write_text(TOKEN)
    code = main(["-vv", *args])
    out, err = capfd.readouterr()
    assert code == 1 and hub.faults.injected["status"] >= 1
    # The server's message was printed, scrubbed (eval quotes only the status line unless HFSOUP_DEBUG=1).
    assert "<token>" in err or (command == "eval" and not debug and "404" in err), err[-2000:]
    assert ("Traceback" in err) is debug and ("probably a bug" in err) is False
    _printed_nothing_secret(out + err)


def test_log_lines_warnings_and_tracebacks_are_scrubbed(tmp_path, capfd, monkeypatch):
    """Whatever a command logs or warns, and the traceback of what it raises, pass the scrubber: a command that does
    all three with a token given by --token, and one of another account."""
    import hfsoup.cli as cli

    def leaky(args):
        logging.getLogger("hfsoup.leaky").warning("calling the Hub with %s and %s", args.token, OTHER)
        warnings.simplefilter("always")  # shown each time, not once per place
        warnings.warn(f"deprecated header carrying {args.token}", UserWarning, stacklevel=1)
        try:
            raise ValueError(f"inner {OTHER}")
        except ValueError as e:
            raise RuntimeError(f"outer {args.token}") from e

    monkeypatch.setattr(cli.eval, "run", leaky)  # the `eval` verb's module: its parser binds `run` when built
    short = "s3cr3t-token-value"  # not token-shaped: scrubbed because it is the token in use
    for debug in ("", "1"):
        monkeypatch.setenv("HFSOUP_DEBUG", debug)
        code = main(["eval", "org/model", "--task", "sst2", "--token", short])
        out, err = capfd.readouterr()
        assert code == 1 and "calling the Hub with <token> and <token>" in err and "deprecated header" in err
        assert ("Traceback" in err and "inner <token>" in err) if debug else "outer <token>" in err
        assert short not in out + err and OTHER not in out + err


def test_scrub_replaces_token_shapes_not_ordinary_words():
    text = f"hf_hub_download failed for hf_home with {OTHER} and {ORG_TOKEN}; hf_short stays"
    assert scrub(text) == "hf_hub_download failed for hf_home with <token> and <token>; hf_short stays"
    assert scrub("Bearer abcdefgh", "abcdefgh") == "Bearer <token>"


@pytest.mark.parametrize("command", ["check", "push"])
def test_a_long_error_from_the_hub_is_quoted_short(echoing_hub, tmp_path, capfd, command):
    hub, names, soup = echoing_hub
    hub.faults.clear()
    long_message = "Invalid request: " + "y" * 12_000  # as long as an HTTP header may be
    hub.faults.add("status", path=r".", status=404, error_code="EntryNotFound", times=None, message=long_message)
    args = ["check", *names] if command == "check" else ["push", str(soup), "echo/soup"]
    code = main(args)
    out, err = capfd.readouterr()
    assert code == 1 and "Invalid request: yyyy" in err and len(out) + len(err) < 4000, len(err)


@pytest.mark.parametrize("where", ["hub", "folder"])
def test_billion_laughs_in_a_dataset_card_is_refused_before_datasets_reads_it(
    where, local_hub, families, tmp_path, monkeypatch, capfd
):
    """`datasets` parses a dataset card's YAML (`configs:`) with an unbounded `yaml.safe_load`: hfsoup reads the card
    with its bounds first, so `hfsoup eval --dataset` on an attacker's dataset is refused, fast and small."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "README.md").write_text("---\n" + laughs() + "configs: *l9\n---\n# lol\n")
    (folder / "train.csv").write_text("sentence,label\nfine,1\n")
    if where == "hub":
        monkeypatch.setattr(HfApi, "_validate_yaml", lambda *args, **kwargs: None)  # an attacker's client skips it
        upload(folder, "laughs/data", repo_type="dataset")
    dataset = "laughs/data" if where == "hub" else str(folder)
    model = str(families["bert"].finetunes[0])
    code, seconds, peak = measured(lambda: main(["eval", model, "--task", "sst2", "--dataset", dataset]))
    err = capfd.readouterr().err
    assert code == 1 and "README.md" in err and "aliases" in err and "Traceback" not in err, err
    assert len(err) < SMALL and seconds < 30 and peak < 100 * 2**20


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_a_huge_config_or_tokenizer_file_is_refused_unread(tmp_path, capfd, name):
    """A 300 MB (sparse) support file: refused from its size, before any read, naming the file; no soup written."""
    from hfsoup.constants import MAX_SUPPORT_FILE_BYTES

    a, b = classifier(tmp_path / "a", seed=0), classifier(tmp_path / "b", seed=1)
    with open(b / name, "r+b") as f:
        f.truncate(MAX_SUPPORT_FILE_BYTES + 1)
    for command in (["check", str(a), str(b), "--skip-weights"], ["soup", str(a), str(b), "-o", str(tmp_path / "o")]):
        (code, seconds, peak) = measured(lambda command=command: main(command))
        err = capfd.readouterr().err
        assert code == 1 and name in err and "more than the" in err and "Traceback" not in err, err
        assert seconds < 10 and peak < 50 * 2**20 and len(err) < SMALL
    assert not (tmp_path / "o").exists()


def test_a_base_60_integer_is_refused_before_it_is_built(tmp_path, capfd):
    """PyYAML reads `1:0:0:...` as a base-60 integer, built in time quadratic in its length (a 2 MB one is minutes
    of CPU): refused from its length, fast."""
    recipe = tmp_path / "sexagesimal.yaml"
    recipe.write_text("ingredients: [org/a, org/b]\noutput: {dir: out}\nname: " + ":".join(["1"] * 400_000) + "\n")
    code, seconds, _ = measured(lambda: main(["validate", str(recipe)]))
    err = capfd.readouterr().err
    assert code == 1 and "base-60 integer of" in err and "Traceback" not in err and len(err) < SMALL, err
    assert seconds < 10
    assert safeyaml.load("a: 1:30\nb: 0x1f\nc: -12") == {"a": 90, "b": 31, "c": -12}  # real integers still read


@pytest.mark.parametrize("value", ["string", "nested"])
def test_a_token_cut_in_two_by_a_quote_is_scrubbed_before_the_cut(value):
    """`quote` keeps a few hundred characters: cut first, a token past the cut would keep its head (`hf_AAAA...`), too
    short to look like a token any more, and be printed. Scrubbed first, no part of it is."""
    token = "hf_" + "Q" * 34
    quoted = {"string": "x" * 190 + token, "nested": ["y" * 100 + token, {"k": "z" * 50 + token}]}[value]
    for text in (quote(quoted), *RecipeError("m", problems=[quote(quoted)]).problems):
        assert "hf_Q" not in text and "QQQQ" not in text, text
