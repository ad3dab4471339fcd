"""A soup method is one class and one registry line: a method defined here, in the test, and registered in `SOUPS`
works through `hfsoup soup --method`, its generated flags, a recipe (validated like the shipped methods), the
results table and the model card, with no other file changed."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from safetensors.numpy import load_file

import hfsoup
from hfsoup import schema
from hfsoup.cli import main
from hfsoup.errors import RecipeError
from hfsoup.options import option
from hfsoup.recipe import parse_recipe
from hfsoup.soups import SOUPS, Mixing, Outcome, PlotStyle, SoupContext, SoupMethod

from .test_soup_local import make_checkpoint


class LeadSoup(SoupMethod):
    """Weight `lead` on the first ingredient, the rest shared equally: a method no module of hfsoup knows."""

    name: ClassVar[str] = "lead"
    description: ClassVar[str] = "the first ingredient weighted by the lead share, the others sharing the rest"
    plot_style: ClassVar[PlotStyle] = PlotStyle("v", "tab:brown")

    @dataclass
    class Options:
        lead: float = option(0.6, kind=schema.fraction(), flag="--lead-share", help="the first ingredient's weight")

    def run(self, context: SoupContext) -> Outcome:
        rest = (1 - self.options.lead) / (context.n - 1)
        weights = (self.options.lead, *(rest for _ in range(context.n - 1)))
        return Outcome(Mixing(weights), {"lead": self.options.lead})


@pytest.fixture
def lead(monkeypatch):
    monkeypatch.setitem(SOUPS, LeadSoup.name, LeadSoup)  # the one registry line
    return LeadSoup


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("lead")
    return [make_checkpoint(root / f"ft{i}", seed=i) for i in range(3)]


def test_a_new_method_works_from_the_command_line(lead, folders, tmp_path, capsys):
    out = tmp_path / "soup"
    assert main(["soup", *map(str, folders), "-o", str(out), "--method", "lead", "--lead-share", "0.5"]) == 0
    provenance = json.loads((out / "hfsoup.json").read_text())
    assert provenance["method"] == "lead"
    assert provenance["weights"] == pytest.approx([0.5, 0.25, 0.25])
    soup = load_file(out / "model.safetensors")
    inputs = [load_file(f / "model.safetensors") for f in folders]
    for name, tensor in soup.items():
        if tensor.dtype.kind == "f":
            expected = 0.5 * inputs[0][name] + 0.25 * inputs[1][name] + 0.25 * inputs[2][name]
            assert abs(tensor.astype("float64") - expected.astype("float64")).max() <= 1e-6, name
    capsys.readouterr()

    # Its option is checked by its declaration, on the command line as anywhere.
    bad = ["soup", *map(str, folders), "-o", str(tmp_path / "bad")]
    assert main([*bad, "--method", "lead", "--lead-share", "2"]) == 1
    err = capsys.readouterr().err
    assert "lead: expected a number above 0 and at most 1, got 2.0" in err and "--lead-share 0.6" in err
    # ... and offered only to its own method.
    assert main([*bad, "--lead-share", "0.5"]) == 1
    assert "--lead-share is an option of the lead method, not uniform" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_new_method_has_flags_and_help(lead, capsys):
    with pytest.raises(SystemExit):
        main(["soup", "--help"])
    text = capsys.readouterr().out
    choices = "{" + ",".join(SOUPS) + "}"  # the registry's order, the new method last
    assert choices in text and choices.endswith(",lead}") and "--lead-share" in text and lead.description in text


def test_a_new_method_in_a_recipe(lead, folders, tmp_path, capsys):
    recipe = {
        "ingredients": [str(f) for f in folders],
        "method": {"name": "lead", "lead": 0.7},
        "output": {"dir": "o"},
    }
    parsed = parse_recipe(recipe, source=tmp_path / "r.yaml")
    assert parsed.method.name == "lead" and parsed.method.options == LeadSoup.Options(lead=0.7)
    assert parsed.to_dict()["method"] == {"name": "lead", "lead": 0.7}
    with pytest.raises(RecipeError) as info:
        parse_recipe({**recipe, "method": {"name": "lead", "lead": 0}}, source=tmp_path / "r.yaml")
    assert info.value.problems == ["method.lead: expected a number above 0 and at most 1, got 0"]
    with pytest.raises(RecipeError) as info:
        parse_recipe({**recipe, "method": {"name": "uniform", "lead": 0.7}}, source=tmp_path / "r.yaml")
    assert info.value.problems == ["method.lead: applies to the lead method, not uniform"]

    path = tmp_path / "lead.yaml"
    path.write_text(json.dumps({**recipe, "output": {"dir": "cooked"}}))  # JSON is YAML
    assert main(["cook", str(path)]) == 0
    provenance = json.loads((tmp_path / "cooked" / "hfsoup.json").read_text())
    assert provenance["method"] == "lead" and provenance["weights"] == pytest.approx([0.7, 0.15, 0.15])
    assert provenance["recipe"]["method"] == {"name": "lead", "lead": 0.7}
    capsys.readouterr()
    assert main(["cook", str(path)]) == 0  # the rerun compares the recipe and reuses the soup
    assert "already holds this recipe's soup" in capsys.readouterr().out


def test_a_new_method_on_the_model_card(lead, folders, tmp_path, capsys):
    out = tmp_path / "soup"
    assert main(["soup", *map(str, folders), "-o", str(out), "--method", "lead"]) == 0
    card = str(hfsoup.build_card(hfsoup.read_soup_folder(out), repo_id="me/lead-soup"))
    assert "A **lead model soup**" in card and lead.description in card


def test_a_new_method_is_a_baseline_in_the_results_table(lead, families, tmp_path):
    data = tmp_path / "dev.csv"
    data.write_text("sentence,label\n" + "".join(f"soup number {i},{i % 2}\n" for i in range(8)))
    specs = [str(families["bert"].folders()[f"ft{i}"]) for i in range(3)]
    out = tmp_path / "soup"
    args = ["-q", "soup", *specs, "-o", str(out), "--method", "greedy", "--task", "sst2"]
    assert main([*args, "--data-files", f"validation={data}", "--compare", "lead,ensemble", "--no-plot"]) == 0
    table = json.loads((out / "results.json").read_text())
    rows = {row["name"]: row for row in table["rows"]}
    assert rows["lead soup"]["method"] == "lead" and rows["lead soup"]["kind"] == "soup"
    assert {n for n, row in rows.items() if row["kind"] != "ingredient"} == {"greedy soup", "lead soup", "ensemble"}
    provenance = json.loads((out / "hfsoup.json").read_text())
    assert provenance["baselines"]["lead"] == {"lead": 0.6}


def test_every_registered_method_declares_what_the_stages_read():
    for name, cls in SOUPS.items():
        assert cls.name == name and cls.description and isinstance(cls.plot_style, PlotStyle)
        assert dataclasses.is_dataclass(cls.Options)
        cls()  # the defaults are valid options
