"""The soup's model card: metadata the Hub validates and parses back, a body that names what went in and what came out.

Cards are built from real soups of the tiny BERT family, scored or not (scores are written into the output folder as
issue 6's evaluation writes them), and validated by the local Hub's `validate-yaml`, which applies the Hub's checks.
"""

from __future__ import annotations

import json
import logging

import pytest
from huggingface_hub import ModelCard

import hfsoup
from hfsoup.errors import NotASoupError
from hfsoup.localhub.cards import model_card_errors
from hfsoup.publish.card import build_card, read_soup_folder
from hfsoup.testing.families import publish_family

EVALUATION = {
    "task": "glue/mrpc",
    "dataset": "nyu-mll/glue",
    "dataset_config": "mrpc",
    "metric": "accuracy",
    "held_out": {
        "split": "validation",
        "description": "seeded 50% of validation (seed 0, 204 rows)",
        "metrics": {"accuracy": 0.8137, "f1": 0.8702},
    },
    "report": {
        "split": "validation",
        "description": "the other 50% of validation (204 rows)",
        "metrics": {"accuracy": 0.799, "f1": 0.8611},
    },
}


def results_table(ingredients: list[dict]) -> dict:
    rows = [
        {
            "name": ingredient["repo_id"],
            "kind": "ingredient",
            "method": None,
            "sha": ingredient["sha"],
            "kept": i == 0,
            "held_out": {"accuracy": 0.7 + i / 100},
            "report": {"accuracy": 0.69 + i / 100},
        }
        for i, ingredient in enumerate(ingredients)
    ]
    rows.append(
        {
            "name": "uniform soup",
            "kind": "soup",
            "method": "uniform",
            "sha": None,
            "kept": None,
            "held_out": {"accuracy": 0.8137},
            "report": {"accuracy": 0.799},
        }
    )
    return {"metric": "accuracy", "held_out": "seeded 50% of validation", "report": "the other 50%", "rows": rows}


def add_scores(folder, *, evaluation: bool, results: bool) -> None:
    """Write the scores of an evaluated soup into its output folder, as the shared contract with issue 6 says."""
    provenance = json.loads((folder / "hfsoup.json").read_text())
    if evaluation:
        provenance["evaluation"] = EVALUATION
        (folder / "hfsoup.json").write_text(json.dumps(provenance, indent=2))
    if results:
        (folder / "results.json").write_text(json.dumps(results_table(provenance["ingredients"])))


@pytest.fixture
def bert_soup(local_hub, families, tmp_path):
    """A real uniform soup of two tiny BERT fine-tunes published (with their base) to the local Hub."""
    ids = publish_family(families["bert"], org="cards", members=["base", "ft0", "ft1"])
    return hfsoup.soup([ids["ft0"], ids["ft1"]], tmp_path / "soup").output_dir


def test_unevaluated_soup_card_lists_ingredients_and_passes_hub_validation(bert_soup):
    soup = read_soup_folder(bert_soup)
    card = build_card(soup, repo_id="me/tiny-soup")
    card.validate()  # POST /api/validate-yaml on the local Hub, with the Hub's metadata rules

    data = card.data.to_dict()
    shas = [i["sha"] for i in soup.provenance["ingredients"]]
    assert data["base_model"] == ["cards/tiny-bert-ft0", "cards/tiny-bert-ft1", "cards/tiny-bert-base"]
    assert data["base_model_relation"] == "merge"
    assert data["tags"] == ["merge", "model-soup", "hfsoup"]
    assert (data["license"], data["library_name"], data["pipeline_tag"]) == (
        "apache-2.0",
        "transformers",
        "text-classification",
    )
    assert "model-index" not in data and "model_name" not in data
    for sha in shas:
        assert f"`{sha}`" in card.text
    assert "| 0 | [cards/tiny-bert-ft0](/cards/tiny-bert-ft0) |" in card.text
    assert "not been evaluated" in card.text
    assert f"cards/tiny-bert-ft0@{shas[0]}" in card.text  # the reproduce command pins the commits
    assert "compatibility check **passed**" in card.text


@pytest.mark.parametrize(("evaluation", "results"), [(True, True), (True, False), (False, True)])
def test_scores_reach_model_index_and_the_ingredient_table(bert_soup, evaluation, results):
    add_scores(bert_soup, evaluation=evaluation, results=results)
    card = build_card(read_soup_folder(bert_soup), repo_id="me/tiny-soup")
    card.validate()

    parsed = ModelCard(str(card)).data  # what a reader of the pushed README gets back
    got = {(r.dataset_split, r.metric_name): r.metric_value for r in parsed.eval_results or []}
    if evaluation:
        assert parsed.model_name == "tiny-soup"
        assert got == {
            ("validation", "accuracy"): 0.799,
            ("validation", "f1"): 0.8611,
            ("validation", "accuracy (held-out)"): 0.8137,
            ("validation", "f1 (held-out)"): 0.8702,
        }
        result = parsed.eval_results[0]
        assert (result.task_type, result.dataset_type, result.dataset_config) == (
            "text-classification",
            "nyu-mll/glue",
            "mrpc",
        )
        assert "seeded 50% of validation (seed 0, 204 rows)" in card.text
    else:
        assert got == {}  # scores without the dataset they were measured on do not go to model-index
    if results:
        assert "| 0.7000 | 0.6900 | kept |" in card.text and "| 0.7100 | 0.7000 | dropped |" in card.text
        assert "| uniform soup | soup | uniform | 0.8137 | 0.7990 |" in card.text
    else:
        assert "dropped" not in card.text


def test_licenses_that_disagree_are_not_carried_over(bert_soup, caplog):
    soup = read_soup_folder(bert_soup)
    cards = [{"license": "apache-2.0", "base_model": "x/base"}, {"license": "mit", "base_model": "x/base"}]
    with caplog.at_level(logging.WARNING, logger="hfsoup.publish.card"):
        card = build_card(soup, cards=cards, base_exists=False)
    assert card.data.license is None
    assert "licenses differ" in caplog.text and "apache-2.0" in caplog.text and "mit" in caplog.text
    # A base that is not on this Hub stays out of base_model (the Hub links every entry) but is named in the body.
    assert card.data.base_model == ["cards/tiny-bert-ft0", "cards/tiny-bert-ft1"]
    assert "share the base model [x/base]" in card.text
    agreeing = build_card(soup, cards=[{"license": "mit"}, {"license": "mit"}], base_exists=False)
    assert agreeing.data.license == "mit"


def test_local_hub_applies_the_hubs_metadata_rules():
    assert model_card_errors({"license": "apache-2.0", "base_model": ["a/b"], "base_model_relation": "merge"}) == []
    errors = model_card_errors(
        {
            "license": "apache2",
            "base_model": ["a/b", "not a repo"],
            "base_model_relation": "soup",
            "tags": "ok",
            "model-index": [{"name": "m", "results": [{"task": {}, "dataset": {"type": "d"}, "metrics": [{}]}]}],
        }
    )
    assert errors == [
        '"license" with value "apache2" is not a valid license identifier',
        '"base_model[1]" with value "not a repo" is not valid. Use a model id from the Hub (org/name)',
        '"base_model_relation" must be one of [adapter, merge, quantized, finetune]',
        '"model-index[0].results[0].task.type" is required',
        '"model-index[0].results[0].dataset.name" is required',
        '"model-index[0].results[0].metrics[0].type" is required',
    ]
    assert model_card_errors({"base_model_relation": "merge"}) == ['"base_model_relation" requires "base_model"']


def test_a_folder_that_is_not_a_soup_is_refused_with_every_problem(tmp_path, families):
    with pytest.raises(NotASoupError, match="holds no hfsoup.json"):
        read_soup_folder(families["bert"].finetunes[0])
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "hfsoup.json").write_text(json.dumps({"method": "uniform", "files": ["model.safetensors"]}))
    with pytest.raises(NotASoupError) as info:
        read_soup_folder(folder)
    message = str(info.value)
    assert "lacks 'hfsoup_version'" in message and "lacks 'ingredients'" in message
    assert "missing: model.safetensors" in message
