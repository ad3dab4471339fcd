"""What a new user trips over in the first hour (issue 16): each test runs the command a user would type.

- `hfsoup eval --task text-classification` scores with the model's own class names, as plain transformers would;
- with `HF_HUB_OFFLINE=1` an ID missing from the cache fails at once with the fix, and one in the cache works;
- `hfsoup demo` keeps its results in `./hfsoup-demo/` and refuses to overwrite what it did not make;
- `-q`/`-v` work after the verb too, and `-v` prints the results table once;
- the real MiniLM fine-tunes are published as `minilm-drugreview-*`, not as tiny models;
- `results.png` labels coincident points apart, keeps its legend off every label and point, and names y = x;
- `hfsoup demo --help` says what `--fast` runs and skips, and the README says how to run the slow tests.

`hfsoup hub --help` (one example a line) and Ctrl-C on `hfsoup hub serve` (no soup staging message) are tested in
tests/test_localhub_api.py, the card's Reproduce section in tests/test_card_reproduce.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import pytest

from hfsoup.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

REVIEWS = [
    ("a wonderful film, truly good", "positive"),
    ("bad acting and a dull plot", "negative"),
    ("soup of fine tuned models", "positive"),
    ("hello world", "negative"),
    ("averaging weights works", "positive"),
    ("the worst thing i have seen", "negative"),
    ("fine", "positive"),
    ("tokenizers split words", "negative"),
]


def _plain_transformers_accuracy(folder, rows) -> tuple[float, list[str]]:
    """Accuracy and predicted class names of the model in `folder`, computed with transformers alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([t for t, _ in rows], return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        ids = model(**batch).logits.argmax(-1).tolist()
    names = [model.config.id2label[i] for i in ids]
    return sum(n == label for n, (_, label) in zip(names, rows, strict=True)) / len(rows), names


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    lines = [f'"{text}",{label}' for text, label in REVIEWS]
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    return path


# --- item 2: hfsoup eval scores text-classification ---------------------------------------------------------------


def test_eval_text_classification_matches_plain_transformers(families, reviews_csv, tmp_path, hf_home):
    for folder in families["bert"].finetunes[:2]:
        expected, names = _plain_transformers_accuracy(folder, REVIEWS)
        out = tmp_path / f"{folder.name}.json"
        predictions = tmp_path / f"{folder.name}-predictions.json"
        argv = ["eval", str(folder), "--task", "text-classification", "--data-files", f"test={reviews_csv}"]
        assert main([*argv, "--json", str(out), "--predictions", str(predictions)]) == 0
        report = json.loads(out.read_text())
        assert report["task"] == "text-classification"
        assert report["results"][0]["split"] == "test"  # the one split of --data-files, without --split
        assert report["results"][0]["metrics"]["accuracy"] == pytest.approx(expected)
        # Predictions are dataset label ids; id2label order here, so they name the same classes transformers does.
        predicted = json.loads(predictions.read_text())["test"]
        assert [["negative", "positive"][p] for p in predicted] == names


def test_evaluate_model_reads_text_classification_labels_from_a_loaded_model_and_a_hub_id(
    families, reviews_csv, local_hub
):
    from transformers import AutoModelForSequenceClassification

    from hfsoup.evaluation.evaluator import Evaluator, evaluate_model
    from hfsoup.testing.families import publish_folder

    folder = families["bert"].finetunes[0]
    expected, _ = _plain_transformers_accuracy(folder, REVIEWS)
    files = {"test": [str(reviews_csv)]}
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    kwargs = {"data_files": files, "tokenizer": str(folder)}
    assert evaluate_model(loaded, "text-classification", "test", **kwargs).metrics()["accuracy"] == expected
    repo = publish_folder(folder, "first-hour/bert-ft0")
    assert evaluate_model(repo, "text-classification", "test", data_files=files).metrics()["accuracy"] == expected
    evaluator = Evaluator("text-classification", "test", data_files=files, labels_from=repo)
    assert evaluator.task.label_names == ("negative", "positive")
    assert evaluator.score(str(folder))["accuracy"] == expected


def test_text_classification_without_data_or_labels_says_what_to_pass(families, capsys):
    from hfsoup.errors import EvaluationError
    from hfsoup.evaluation.evaluator import Evaluator

    folder = str(families["bert"].finetunes[0])
    assert main(["eval", folder, "--task", "text-classification"]) == 1
    err = capsys.readouterr().err
    assert "Task text-classification has no data of its own" in err and "--data-files SPLIT=FILE" in err
    with pytest.raises(EvaluationError, match="takes its class names from a model") as caught:
        Evaluator("text-classification", "test", data_files={"test": ["x.csv"]})
    assert "labels_from=MODEL" in caught.value.fix


# --- item 5: offline means offline ---------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, as the clients read it at import (this process imported them already)."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    # A retry would wait 1 s, then 2, 4, ...: any retry shows in the time and in the log.
    monkeypatch.delenv("HFSOUP_HUB_RETRIES", raising=False)
    monkeypatch.delenv("HFSOUP_HUB_RETRY_WAIT", raising=False)


@pytest.mark.parametrize("verb", ["soup", "check", "eval"])
def test_offline_an_unknown_id_fails_at_once_with_the_fix(
    verb, local_hub, offline, reviews_csv, tmp_path, capsys, caplog
):
    argv = {
        "soup": ["soup", "nobody/missing@v1", "nobody/other", "-o", str(tmp_path / "soup")],
        "check": ["check", "nobody/missing@v1", "nobody/other"],
        "eval": ["eval", "nobody/missing@v1", "--task", "text-classification", "--data-files", f"test={reviews_csv}"],
    }[verb]
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 1
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert elapsed < 5, f"{verb} took {elapsed:.1f} s offline"
    assert "trying again" not in caplog.text + err
    assert "Ingredient 'nobody/missing@v1' (revision v1) is not in the Hugging Face cache" in err
    assert "HF_HUB_OFFLINE is set" in err and "'hf download nobody/missing --revision v1'" in err
    assert err.count("Error:") == 1


def test_offline_a_cached_id_soups_checks_and_evals_like_online(
    families, local_hub, reviews_csv, tmp_path, monkeypatch, capsys
):
    import huggingface_hub

    from hfsoup.testing.families import publish_folder
    from hfsoup.testing.reference import max_relative_deviation, reference_average

    family = families["bert"]
    repos = [publish_folder(folder, f"first-hour/bert-ft{i}") for i, folder in enumerate(family.finetunes[:2])]
    assert main(["soup", *repos, "-o", str(tmp_path / "online")]) == 0  # fills the cache
    online = json.loads((tmp_path / "online" / "hfsoup.json").read_text())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unasked = local_hub.faults.add("status", path="/", status=500, times=None)  # any request would fail, and count

    assert main(["soup", *repos, "-o", str(tmp_path / "offline")]) == 0
    offline = json.loads((tmp_path / "offline" / "hfsoup.json").read_text())
    assert [i["sha"] for i in offline["ingredients"]] == [i["sha"] for i in online["ingredients"]]
    assert max_relative_deviation(tmp_path / "offline", reference_average(family.finetunes[:2])) < 1e-6
    assert main(["check", *repos]) == 0
    sha = online["ingredients"][0]["sha"]
    out = tmp_path / "eval.json"
    argv = ["eval", f"{repos[0]}@{sha}", "--task", "text-classification", "--data-files", str(reviews_csv)]
    assert main([*argv, "--json", str(out)]) == 0
    expected, _ = _plain_transformers_accuracy(family.finetunes[0], REVIEWS)
    assert json.loads(out.read_text())["results"][0]["metrics"]["accuracy"] == pytest.approx(expected)
    assert json.loads(out.read_text())["model"]["sha"] == sha
    assert unasked.fired == 0


# --- item 4: the demo keeps its results ----------------------------------------------------------------------------


def test_demo_keeps_its_results_in_hfsoup_demo_and_refuses_to_overwrite_them_unasked(
    tmp_path, monkeypatch, capsys, hf_home
):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    results = tmp_path / "hfsoup-demo"
    assert f"Results kept in {results}" in out
    assert sorted(p.name for p in results.iterdir()) == ["hfsoup-demo.json", "soup"]
    # --fast does what its help says (item 8): souping only, so no card, table, plot, push or reload; and the closing
    # line names only what is there.
    assert not any((results / "soup" / name).exists() for name in ("README.md", "results.json", "results.png"))
    assert "Pushed" not in out and "Reloaded" not in out and "Fine-tuning" not in out
    named = out.split(f"Results kept in {results}: soup/ (")[1].split(")")[0].split(", ")
    assert named[0] == "the model" and all((results / "soup" / name).is_file() for name in named[1:])
    record = json.loads((results / "hfsoup-demo.json").read_text())
    provenance = json.loads((results / "soup" / "hfsoup.json").read_text())
    assert record["output_dir"] == str(results / "soup")
    assert [i["sha"] for i in record["ingredients"]] == [i["sha"] for i in provenance["ingredients"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home", "hfsoup-demo"]  # no staging folder left
    assert ".hfsoup-tmp-" not in out  # the commentary names where the files are, not where they were made

    assert main(["demo", "--fast"]) == 1
    err = capsys.readouterr().err
    assert "holds the results of an earlier hfsoup demo" in err and "--overwrite" in err
    assert json.loads((results / "hfsoup-demo.json").read_text()) == record

    assert main(["demo", "--fast", "--overwrite"]) == 0
    assert (results / "soup" / "hfsoup.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home", "hfsoup-demo"]


def test_demo_never_replaces_what_it_did_not_write(tmp_path, monkeypatch, capsys, hf_home):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "hfsoup-demo.json").write_text('{"hfsoup_demo": "0"}')
    (fake / "thesis.tex").write_text("keep me too")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    for workdir, words in [
        (mine, "was not written by hfsoup demo"),
        (fake, "was not written by hfsoup demo"),
        (home, "your home folder"),
        (tmp_path, "the current folder"),
        (Path("/"), "a filesystem root"),
    ]:
        assert main(["demo", "--fast", "--overwrite", "--workdir", str(workdir)]) == 1
        assert words in capsys.readouterr().err, workdir
    assert (mine / "notes.txt").read_text() == "keep me" and (fake / "thesis.tex").read_text() == "keep me too"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_failed_demo_leaves_nothing_behind(tmp_path, monkeypatch, hf_home):
    import hfsoup.demo

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hfsoup.demo, "_fast_steps", broken)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        hfsoup.demo.run_demo(fast=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_home"]


# --- item 8: -q/-v after the verb, the results table once ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["-q", "soup", "a", "b", "-o", "x"], 0, True),
        (["soup", "a", "b", "-o", "x", "-q"], 0, True),
        (["soup", "-vv", "a", "b", "-o", "x"], 2, False),
        (["-v", "eval", "a", "--task", "sst2"], 1, False),
        (["hub", "serve", "--root", "r", "-v"], 1, False),
        (["check", "a", "b"], 0, False),
    ],
)
def test_verbosity_flags_work_before_and_after_the_verb(argv, verbose, quiet):
    from hfsoup.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_soup_with_v_prints_the_results_table_once(families, reviews_csv, tmp_path, capsys, hf_home):
    folders = [str(f) for f in families["bert"].finetunes[:2]]
    argv = ["soup", *folders, "-o", str(tmp_path / "soup"), "--method", "greedy", "--task", "text-classification"]
    assert main([*argv, "--data-files", f"validation={reviews_csv}", "--no-plot", "-v"]) == 0
    captured = capsys.readouterr()
    assert "INFO" in captured.err  # -v after the verb took effect
    assert (captured.out + captured.err).count("held-out accuracy") == 1


# --- item 8: the real MiniLM fine-tunes are not named tiny ----------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
OLD_NAME = "tiny-" + "minilm"  # spelled in two parts, so that this file does not name it
SHIPPED = ["hfsoup/**/*", "docs/**/*", "tests/**/*", "recipes/**/*", "notebooks/**/*", "benchmarks/**/*", "*.md"]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".ipynb", ".toml", ".txt", ".json", ".cfg"}


def test_no_shipped_file_calls_the_real_minilm_fine_tunes_tiny():
    scanned, naming = 0, []
    for pattern in SHIPPED:
        for path in ROOT.glob(pattern):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                scanned += 1
                if OLD_NAME in path.read_text(encoding="utf-8", errors="replace"):
                    naming.append(str(path.relative_to(ROOT)))
    assert scanned > 100 and naming == []


def test_minilm_fine_tunes_are_published_as_minilm_drugreview_and_an_old_cache_gets_the_new_cards(
    families, tmp_path, local_hub
):
    import shutil

    from huggingface_hub import ModelCard

    from hfsoup.testing import minilm
    from hfsoup.testing.families import ModelFamily, publish_family

    # The MiniLM family's layout, records and cards on tiny BERT weights: the names come from the family and its
    # cards, not from the weights, and training MiniLM takes minutes (the slow tests do it).
    root = tmp_path / "minilm"
    tiny = families["bert"]
    for name, source in {"base": tiny.base, "ft0": tiny.finetunes[0], "ft1": tiny.finetunes[1]}.items():
        shutil.copytree(source, root / name)
        record = {"member": name, "learning_rate": 2e-4, "stamp": {"recipe": 2}}
        (root / name / minilm.TRAINING_FILE).write_text(json.dumps(record))
        (root / name / "README.md").write_text(minilm._card(name, record))
    family = ModelFamily("minilm", root, root / "base", [root / "ft0", root / "ft1"], repo_prefix=minilm.REPO_PREFIX)

    # A cache built before the rename: its cards name the old base; reusing it rewrites them and keeps the weights.
    card = root / "ft1" / "README.md"
    card.write_text(card.read_text().replace("minilm-drugreview-base", f"{OLD_NAME}-base"))
    weights = (root / "ft1" / "model.safetensors").read_bytes()
    minilm._refresh_card(root / "ft1", "ft1")
    assert OLD_NAME not in card.read_text() and "minilm-drugreview-base" in card.read_text()
    assert (root / "ft1" / "model.safetensors").read_bytes() == weights
    assert not any(p.name.startswith(".hfsoup") for p in (root / "ft1").iterdir())

    ids = publish_family(family, org="real", members=["base", "ft0", "ft1"])
    assert ids == {m: f"real/minilm-drugreview-{m}" for m in ("base", "ft0", "ft1")}
    assert ModelCard.load(ids["base"]).data.base_model == minilm.MINILM_REPO_ID  # the real upstream, kept
    for member in ("ft0", "ft1"):
        assert ModelCard.load(ids[member]).data.base_model == "real/minilm-drugreview-base"
    # The tiny families keep their names: they are tiny.
    assert publish_family(tiny, org="real", members=["ft0"]) == {"ft0": "real/tiny-bert-ft0"}


# --- item 8: results.png labels every point legibly and explains y = x -------------------------------------------


def _table_with_coincident_points():
    from hfsoup.selection.results import ResultsTable, Row

    table = ResultsTable("accuracy", "a seeded 50% of test (190 rows)", "the other 50% of test (189 rows)")
    rows = [  # the demo's kind of figures: the greedy soup, the ensemble and ft1 on one point; ft0 and the uniform
        ("org/minilm-drugreview-ft0", "ingredient", None, 0.7158, 0.6825),  # soup one score apart
        ("org/minilm-drugreview-ft1", "ingredient", None, 0.7368, 0.6931),
        ("org/minilm-drugreview-ft2", "ingredient", None, 0.6842, 0.6878),
        ("org/minilm-drugreview-ft3@" + "3" * 40, "ingredient", None, 0.6895, 0.6772),
        ("uniform soup", "soup", "uniform", 0.7158, 0.6830),
        ("greedy soup", "soup", "greedy", 0.7368, 0.6931),
        ("ensemble", "ensemble", None, 0.7368, 0.6931),
    ]
    for name, kind, method, held_out, report in rows:
        table.rows.append(Row(name, kind, method, held_out={"accuracy": held_out}, report={"accuracy": report}))
    return table


def _intersect(a, b) -> bool:
    """Whether two display boxes share area (touching edges do not count)."""
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def test_the_plot_labels_coincident_points_apart_and_its_legend_covers_nothing(tmp_path):
    from matplotlib.lines import Line2D
    from matplotlib.transforms import Bbox

    table = _table_with_coincident_points()
    with _drawn(table) as (fig, ax, renderer):
        labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
        assert sorted(labels) == sorted(
            [
                "minilm-drugreview-ft0",
                "minilm-drugreview-ft1",
                "minilm-drugreview-ft2",
                "minilm-drugreview-ft3@3333333",
            ]
            + ["uniform soup", "greedy soup", "ensemble"]
        )
        boxes = list(labels.items())
        for i, (name, box) in enumerate(boxes):
            assert all(not _intersect(box, other) for _, other in boxes[i + 1 :]), name
            inside = ax.bbox.x0 <= box.x0 and box.x1 <= ax.bbox.x1 and ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1
            assert inside, name  # inside the axes: nothing is cut off, and the legend outside cannot cover it
        # Markers, from the scatter collections: a square of the marker's size around each point.
        markers = []
        for collection in ax.collections:
            for (x, y), area in zip(collection.get_offsets(), collection.get_sizes(), strict=False):
                cx, cy = ax.transData.transform((x, y))
                half = area**0.5 * fig.dpi / 72 / 2
                markers.append(Bbox([[cx - half, cy - half], [cx + half, cy + half]]))
        assert len(markers) == 7
        for name, box in labels.items():
            assert not any(_intersect(box, marker) for marker in markers), name
        legend = ax.get_legend()
        legend_box = legend.get_window_extent(renderer)
        assert not any(_intersect(legend_box, box) for box in [*labels.values(), *markers])
        entries = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles, strict=True))
        assert {"ingredients", "uniform soup", "greedy soup", "ensemble"} <= set(entries)
        (diagonal,) = [e for text, e in entries.items() if "held-out = report" in text]
        assert isinstance(diagonal, Line2D) and diagonal.get_linestyle() == ":"
    table.plot(tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_each_plot_label_is_beside_its_own_point():
    with _drawn(_table_with_coincident_points()) as (fig, ax, renderer):
        scale = fig.dpi / 72
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            px, py = ax.transData.transform(text.xy)
            # The gap from the point to the label's nearest edge: within two label heights and a big marker.
            dx = max(box.x0 - px, 0.0, px - box.x1)
            dy = max(box.y0 - py, 0.0, py - box.y1)
            assert (dx * dx + dy * dy) ** 0.5 <= 2 * box.height + 150**0.5 * scale, text.get_text()


@contextlib.contextmanager
def _drawn(table):
    """The results table's figure, drawn (so text extents are final), its one axes and renderer; closed after."""
    import matplotlib.pyplot as plt

    fig = table.figure()
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        yield fig, ax, fig.canvas.get_renderer()
    finally:
        plt.close(fig)


# --- item 8: what --fast does, said exactly; the slow tests in the README -----------------------------------------


def test_demo_help_says_what_fast_runs_and_what_it_skips(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "same path" not in text
    fast = text.split("options:")[1].split("--fast ", 1)[1].split("--cache")[0]  # the option's own help
    for skipped in ("fine-tuning", "scoring", "selection", "table", "plot", "card", "push", "reload"):
        assert skipped in fast, skipped
    with pytest.raises(SystemExit):
        main(["--help"])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "hfsoup demo --fast" in line]
    assert "same path" not in line and "no training" in line


def test_readme_says_how_to_run_the_slow_tests():
    readme = (ROOT / "README.md").read_text()
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    commands = [
        line for line in readme.splitlines() if line.startswith(("HFSOUP_SLOW=1 python -m pytest", "python -m"))
    ]
    assert any(line.startswith("HFSOUP_SLOW=1 python -m pytest") for line in commands)
    assert any("python -m pytest" in line and "-m slow" in line for line in commands)
    # What the README says is what selects them: the variable conftest reads and the marker pyproject declares.
    assert 'os.environ.get("HFSOUP_SLOW") == "1"' in conftest and '"slow" in (config.option.markexpr' in conftest
    assert '"slow: ' in (ROOT / "pyproject.toml").read_text()
