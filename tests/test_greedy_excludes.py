"""A greedy soup leaves out the ingredients the weights show cannot be souped, instead of refusing the whole soup.

The tiny BERT family's three fine-tunes, its impostor (its own initialization: the body is unrelated) and its
`swapped_labels` member (a sibling's body, a head of the opposite sign: what training on swapped labels gives) go
into one greedy soup: it completes without --force, the two bad ones listed as excluded with their own reasons,
never tried by the search and written with weight 0. What a greedy soup cannot leave out still refuses: a uniform
soup of the same set, structural mismatches, and outliers that are not a minority.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import hfsoup
from hfsoup.cli import main
from hfsoup.soups import UniformSoup

GOOD = ["ft0", "ft1", "ft2"]
BAD = ["impostor", "swapped_labels"]


def read_json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def dev_csv(tmp_path_factory) -> Path:
    """An 8-row local validation split: the cheapest --task setup (as in test_contracts.py)."""
    data = tmp_path_factory.mktemp("data") / "dev.csv"
    data.write_text("sentence,label\n" + "".join(f"soup number {i},{i % 2}\n" for i in range(8)))
    return data


def greedy_args(specs, out: Path, data: Path) -> list[str]:
    return ["-q", "soup", *specs, "-o", str(out), "--method", "greedy", "--task", "sst2"] + [
        "--data-files",
        f"validation={data}",
        "--no-plot",
    ]


@pytest.fixture(scope="module")
def bert(families) -> dict[str, str]:
    return {name: str(path) for name, path in families["bert"].folders().items()}


@pytest.fixture(scope="module")
def greedy_with_bad(bert, dev_csv, tmp_path_factory) -> tuple[Path, list[str]]:
    # The bad ones among the good, one of them first: the reference must not be whoever is listed first.
    specs = [bert["impostor"], bert["ft0"], bert["swapped_labels"], bert["ft1"], bert["ft2"]]
    out = tmp_path_factory.mktemp("greedy") / "soup"
    assert main(greedy_args(specs, out, dev_csv)) == 0  # no --force
    return out, specs


def test_greedy_soup_leaves_out_the_bad_ones(greedy_with_bad):
    out, specs = greedy_with_bad
    provenance = read_json(out / "hfsoup.json")
    names = [i["spec"] for i in provenance["ingredients"]]
    position = {Path(spec).name: names[i] for i, spec in enumerate(specs)}
    excluded = {e["ingredient"]: e["reason"] for e in provenance["excluded"]}
    assert set(excluded) == {position[b] for b in BAD}
    assert "does not share an initialization" in excluded[position["impostor"]]
    swapped = excluded[position["swapped_labels"]]
    assert "anti-aligned" in swapped and "labels swapped or a sign flip" in swapped
    assert "initialized independently" not in swapped
    # Weight 0 for the excluded, and what the greedy search did never involves them.
    assert all(provenance["weights"][specs.index(s)] == 0.0 for s in specs if Path(s).name in BAD)
    greedy = provenance["greedy"]
    tried = set(greedy["order"]) | {d["name"] for d in greedy["decisions"]} | set(greedy["kept"])
    assert tried == {position[g] for g in GOOD}
    assert abs(sum(provenance["weights"]) - 1.0) < 1e-6
    # The soup was not forced: the report passed once the outliers were left out, and says so.
    compat = provenance["compatibility"]
    assert compat["ok"] and not compat["forced"]
    warned = {f["ingredient"] for f in compat["findings"] if f["level"] == "warning" and "left out" in f["message"]}
    assert warned == set(excluded)


def test_results_table_lists_the_excluded(greedy_with_bad):
    out, specs = greedy_with_bad
    provenance = read_json(out / "hfsoup.json")
    excluded = {e["ingredient"]: e["reason"] for e in provenance["excluded"]}
    rows = read_json(out / "results.json")["rows"]
    ingredients = [r for r in rows if r["kind"] == "ingredient"]
    assert len(ingredients) == len(specs)
    for row in ingredients:
        if row["name"] in excluded:
            assert row["excluded"] == excluded[row["name"]] and row["kept"] is False
            assert not row["held_out"] and not row["report"]  # never scored
        else:
            assert "excluded" not in row and row["held_out"]
            assert row["kept"] == (row["name"] in provenance["greedy"]["kept"])
    with (out / "results.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert {line["name"] for line in lines if line["excluded"]} == set(excluded)


def test_zero_weight_does_not_change_the_bytes(bert, tmp_path):
    """The engine skips a zero-weight ingredient: the soup is byte for byte the soup of the others alone."""
    with_zero = hfsoup.soup(
        [bert["ft0"], bert["impostor"], bert["ft1"], bert["swapped_labels"]],
        tmp_path / "with-zero",
        method=UniformSoup(weights=[0.5, 0.0, 0.5, 0.0]),
        force=True,  # a uniform soup of this set is refused; the bytes are the point here
    )
    alone = hfsoup.soup([bert["ft0"], bert["ft1"]], tmp_path / "alone")
    first = (with_zero.output_dir / "model.safetensors").read_bytes()
    assert first == (alone.output_dir / "model.safetensors").read_bytes()


def test_uniform_soup_of_the_same_set_still_refuses(bert, dev_csv, tmp_path, capsys):
    specs = [bert[n] for n in GOOD + BAD]
    out = tmp_path / "uniform"
    assert main(["soup", *specs, "-o", str(out)]) == 1
    assert not out.exists()
    assert "anti-aligned" in capsys.readouterr().err
    # Scored on a task too: uniform does not drop ingredients.
    args = ["soup", *specs, "-o", str(out), "--task", "sst2", "--data-files", f"validation={dev_csv}", "--no-plot"]
    assert main(args) == 1
    assert not out.exists()


@pytest.mark.parametrize("structural", ["arch_mismatch", "other_tokenizer", "num_labels"])
def test_structural_mismatch_still_refuses_greedy(bert, dev_csv, tmp_path, structural):
    out = tmp_path / "soup"
    assert main(greedy_args([bert[n] for n in [*GOOD, structural]], out, dev_csv)) == 1
    assert not out.exists()


def test_outliers_that_are_no_minority_refuse(bert, dev_csv, tmp_path):
    """One fine-tune and one impostor: nothing says which is the outlier, so nothing is left out."""
    out = tmp_path / "soup"
    assert main(greedy_args([bert["ft0"], bert["impostor"]], out, dev_csv)) == 1
    assert not out.exists()
    out = tmp_path / "two-bad"  # two good, two bad: no majority either
    assert main(greedy_args([bert[n] for n in ["ft0", "ft1", *BAD]], out, dev_csv)) == 1
    assert not out.exists()


def fresh_head(source: str, folder: Path, seed: int) -> Path:
    """`source` with its classification head re-initialized: a sibling's body, an unrelated head."""
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    for f in Path(source).iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    tensors = load_file(folder / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    tensors["classifier.weight"] = torch.randn(tensors["classifier.weight"].shape, generator=g) * 0.02
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_check_tells_anti_aligned_from_independent_heads(bert, tmp_path, capsys):
    unrelated = fresh_head(bert["ft2"], tmp_path / "fresh-head", seed=7)
    report = hfsoup.check([bert["ft0"], bert["ft1"], bert["ft2"], bert["swapped_labels"], str(unrelated)])
    heads = {Path(f.ingredient).name: f for f in report.errors if f.check == "head"}
    assert set(heads) == {"swapped_labels", "fresh-head"}  # each suspect named; the good ones are not
    swapped, fresh = heads["swapped_labels"], heads["fresh-head"]
    assert "anti-aligned" in swapped.message and "labels swapped or a sign flip" in swapped.message
    assert "swapped labels" in swapped.fix
    cosine = float(swapped.message.split("head cosine ")[1].split(" ")[0])
    assert cosine < -0.5
    assert "initialized independently" in fresh.message and "anti-aligned" not in fresh.message
    assert abs(float(fresh.message.split("head cosine ")[1].split(" ")[0])) < 0.3
    # The CLI prints the same diagnosis, against the suspect's name.
    assert main(["check", bert["ft0"], bert["ft1"], bert["ft2"], bert["swapped_labels"]]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "FAIL head" in line]
    assert "swapped_labels" in line and "labels swapped or a sign flip" in line


def test_greedy_leaves_out_an_unrelated_head_as_independent(bert, dev_csv, tmp_path):
    unrelated = fresh_head(bert["ft2"], tmp_path / "fresh-head", seed=11)
    out = tmp_path / "soup"
    assert main(greedy_args([bert["ft0"], bert["ft1"], bert["ft2"], str(unrelated)], out, dev_csv)) == 0
    provenance = read_json(out / "hfsoup.json")
    ((excluded, reason),) = [(e["ingredient"], e["reason"]) for e in provenance["excluded"]]
    assert Path(excluded).name == "fresh-head" and provenance["weights"][3] == 0.0
    assert "initialized independently" in reason and "anti-aligned" not in reason


def test_non_finite_weights_still_refuse_greedy(bert, dev_csv, tmp_path):
    """NaN weights are no similarity verdict: the greedy soup refuses, as before, and writes nothing."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-ft"
    folder.mkdir()
    for f in Path(bert["ft1"]).iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    tensors = load_file(folder / "model.safetensors")
    name = next(n for n, t in tensors.items() if t.ndim == 2 and not n.startswith("classifier."))
    tensors[name][0, 0] = torch.nan
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "soup"
    assert main(greedy_args([bert["ft0"], str(folder), bert["ft2"]], out, dev_csv)) == 1
    assert not out.exists()


def test_an_excluded_first_ingredient_still_sets_the_label_order(bert, dev_csv, greedy_with_bad, tmp_path):
    """The first ingredient is left out and the next has its labels in another order: candidates are still scored
    in the first's label order (the one the heads are aligned to and the soup's config has), so each kept ingredient
    scores what it scores in any other soup."""
    out = tmp_path / "soup"
    specs = [bert["swapped_labels"], bert["permuted_labels"], bert["ft1"], bert["ft2"]]
    assert main(greedy_args(specs, out, dev_csv)) == 0
    rows = {Path(r["name"]).name: r for r in read_json(out / "results.json")["rows"] if r["kind"] == "ingredient"}
    assert rows["swapped_labels"]["excluded"]
    reference = {Path(r["name"]).name: r for r in read_json(greedy_with_bad[0] / "results.json")["rows"]}
    for name in ("ft1", "ft2"):
        assert rows[name]["held_out"] == reference[name]["held_out"]
    # permuted_labels is ft0 with its labels reordered: aligned, it scores as ft0 does.
    assert rows["permuted_labels"]["held_out"] == reference["ft0"]["held_out"]
    config = read_json(out / "config.json")
    assert config["id2label"] == read_json(Path(bert["swapped_labels"]) / "config.json")["id2label"]
