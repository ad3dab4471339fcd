"""The model card of a soup: what went in, at which commits, by which recipe, and what came out.

Built from the output folder alone: `hfsoup.json` (the provenance every soup carries, plus its `evaluation` once
scored) and `results.json` (every ingredient's and soup's scores), either, both or neither. The metadata is
`huggingface_hub`'s `ModelCardData`: `base_model` with `base_model_relation: merge` so the Hub draws the model tree,
and `eval_results`, written as `model-index`, so the Hub's widgets show the scores. The ingredients' own cards (at
their pinned commits, usually already in the Hub cache) say which license and base they share.

Example:
    ```py
    >>> from hfsoup.publish.card import build_card, read_soup_folder
    >>> card = build_card(read_soup_folder("soup/"), repo_id="me/my-soup")
    >>> card.data.base_model_relation, card.data.tags
    ('merge', ['merge', 'model-soup', 'hfsoup'])
    ```
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..constants import CARD_FILE, RECIPE_FILE
from ..errors import quote
from ..io.soupfolder import SoupFolder, read_soup_folder  # noqa: F401 - re-exported: the card is built from it
from ..scrub import cut
from ..soups import SOUPS
from ..texttable import markdown_table
from .reproduce import COOK_COMMAND, install_lines, soup_command

logger = logging.getLogger(__name__)

TAGS = ["merge", "model-soup", "hfsoup"]
PAPER = "[Wortsman et al., 2022](https://arxiv.org/abs/2203.05482)"
# What a model does, from the architecture named in config.json, when the ingredients' cards do not say.
_PIPELINE_SUFFIXES = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForConditionalGeneration": "text2text-generation",
    "ForCausalLM": "text-generation",
    "ForMaskedLM": "fill-mask",
    "ForImageClassification": "image-classification",
    "CLIPModel": "zero-shot-image-classification",
}


def ingredient_cards(soup: SoupFolder, *, token: str | bool | None = None) -> list[dict[str, Any] | None]:
    """The card metadata of each ingredient at its pinned commit (`None` where it has no readable card).

    Hub ingredients' cards were fetched by `hfsoup soup`, so this normally reads the Hub cache without a request.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    cards: list[dict[str, Any] | None] = []
    for ingredient in soup.provenance["ingredients"]:
        name = ingredient.get("spec") or ingredient.get("repo_id")
        try:
            if ingredient.get("repo_id"):
                card_path = hf_hub_download(
                    ingredient["repo_id"], CARD_FILE, revision=ingredient.get("sha"), token=token
                )
            else:  # a local folder: its card's metadata was recorded by the soup (its path never is)
                if not isinstance(ingredient.get("card"), dict):
                    raise EntryNotFoundError(f"no card recorded for {name}")
                cards.append(dict(ingredient["card"]))
                continue
            cards.append(_card_data(Path(card_path)))
        except EntryNotFoundError:
            logger.info("ingredient %s has no model card", name)
            cards.append(None)
        except Exception as e:  # noqa: BLE001 - a card we cannot read only costs the soup's card some metadata
            said = cut(str(e).splitlines()[0] if str(e) else type(e).__name__, 300)  # the Hub's words, maybe
            logger.warning("could not read the model card of ingredient %s: %s", name, said)
            cards.append(None)
    return cards


def local_card_metadata(folder: Path) -> dict[str, Any] | None:
    """What the soup's card takes from a local ingredient's own card (license, base model, pipeline tag), recorded
    in `hfsoup.json` at soup time so the card can be built later from the output folder alone."""
    if not (folder / CARD_FILE).is_file():
        return None
    try:
        data = _card_data(folder / CARD_FILE)
    except Exception as e:  # noqa: BLE001 - a card we cannot read only costs the soup's card some metadata
        logger.warning("could not read the model card in %s: %s", folder.name, cut(str(e).splitlines()[0], 300))
        return None
    kept = {k: data[k] for k in ("license", "base_model", "pipeline_tag") if isinstance(data.get(k), str | list)}
    return kept or None


def _card_data(path: Path) -> dict[str, Any]:
    """A card's metadata as `ModelCard.load(...).data.to_dict()` gives it, but with its front matter parsed by the
    bounded loader: `ModelCard.load` calls `yaml.safe_load`, and a few aliases in someone else's card would expand
    into gigabytes once the soup's card is written."""
    from huggingface_hub import ModelCardData  # a third of a second to import: only when there is a card

    from ..io import safeyaml

    data = safeyaml.card_metadata(path)
    if data is None:
        return {}
    fields = {k: v for k, v in data.items() if isinstance(k, str)}  # a non-string key cannot be a metadata field
    return ModelCardData(ignore_metadata_errors=True, **fields).to_dict()


def _agreed(values: list[Any]) -> Any:
    """The one value every ingredient gives, or None when any differs or is unknown."""
    return values[0] if values and values[0] is not None and all(v == values[0] for v in values) else None


def _license(soup: SoupFolder, cards: list[dict[str, Any] | None]) -> tuple[str | None, str]:
    licenses = [(card or {}).get("license") for card in cards]
    agreed = _agreed(licenses)
    if isinstance(agreed, str):
        return agreed, f"`{agreed}`, the license every ingredient carries."
    pairs = zip(soup.provenance["ingredients"], licenses, strict=True)
    # The licenses come from the ingredients' cards, as their publishers wrote them: quote them short.
    shown = ", ".join(f"{_name(i)}: {_license_name(lic)}" for i, lic in pairs)
    logger.warning("the ingredients' licenses differ or are unknown (%s): the card names none; set it by hand", shown)
    return None, f"not set: the ingredients' licenses differ or are unknown ({shown}). Check each before reuse."


def _license_name(value: Any) -> str:
    if value is None:
        return "unknown"
    return value if isinstance(value, str) and len(value) <= 64 else quote(value, limit=64)


def _pipeline_tag(soup: SoupFolder, cards: list[dict[str, Any] | None]) -> str | None:
    agreed = _agreed([(card or {}).get("pipeline_tag") for card in cards])
    if agreed and isinstance(agreed, str):
        return agreed
    for architecture in soup.config.get("architectures") or []:
        for suffix, tag in _PIPELINE_SUFFIXES.items():
            if architecture.endswith(suffix):
                return tag
    return None


def shared_base(cards: list[dict[str, Any] | None]) -> str | None:
    """The one `base_model` every ingredient's card names, or None when a card names none or they differ."""
    bases = [(card or {}).get("base_model") for card in cards]
    bases = [b[0] if isinstance(b, list) and len(b) == 1 else b for b in bases]
    agreed = _agreed(bases)
    return agreed if isinstance(agreed, str) else None


def _name(ingredient: dict[str, Any]) -> str:
    return str(ingredient.get("repo_id") or ingredient.get("spec") or ingredient.get("folder"))


def reported_sets(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Every set the soup is reported on, in-distribution first, each with its dataset: hfsoup.json `evaluation`'s
    `reports`, or for a soup scored before several sets could be reported, its one `report` (of its dataset)."""
    found = evaluation.get("reports")
    if isinstance(found, list) and found and all(isinstance(entry, dict) for entry in found):
        return found
    part = evaluation.get("report")
    if not isinstance(part, dict):
        return []
    dataset = {k: evaluation.get(k) for k in ("dataset", "dataset_config", "dataset_sha")}
    return [{"name": part.get("split"), **dataset, **part}]


def eval_results(soup: SoupFolder, *, task_type: str | None) -> list:
    """`EvalResult`s for the soup's own scores (hfsoup.json `evaluation`): each reported set (its dataset and split,
    and with several sets its commit), then the held-out part.

    Held-out scores are marked as such in `metric_name`: they chose the ingredients, so they are not unbiased.
    """
    from huggingface_hub import EvalResult

    evaluation = soup.evaluation
    if not evaluation:
        return []
    own = {"dataset": evaluation.get("dataset"), "dataset_config": evaluation.get("dataset_config")}
    own["dataset_sha"] = evaluation.get("dataset_sha")
    task = str(evaluation.get("task") or "")
    task_type = task_type or ("image-classification" if "image" in task else "text-classification")
    parts = [(entry, "") for entry in reported_sets(evaluation)]
    several = len(parts) > 1
    parts.append(({**own, **(evaluation.get("held_out") or {})}, " (held-out)"))
    results = []
    for part, suffix in parts:
        dataset = str(part.get("dataset") or evaluation.get("task"))
        config = part.get("dataset_config")
        for metric, value in (part.get("metrics") or {}).items():
            if not isinstance(value, int | float):
                continue
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task or None,
                    dataset_type=dataset,
                    dataset_name=f"{dataset} ({config})" if config else dataset,
                    dataset_config=config,
                    dataset_split=part.get("split"),
                    # Several sets, several datasets: each names its commit (one set's card is as it was).
                    dataset_revision=(part.get("dataset_sha") or None) if several else None,
                    metric_type=metric,
                    metric_name=f"{metric}{suffix}",
                    metric_value=float(value),
                )
            )
    return results


def build_card(
    soup: SoupFolder,
    *,
    repo_id: str | None = None,
    cards: list[dict[str, Any] | None] | None = None,
    base_exists: bool = True,
    token: str | bool | None = None,
):
    """The soup's `ModelCard`: Hub metadata (base models, merge relation, tags, license, scores) and a body with the
    method, the ingredient table, the scores, the recipe, the compatibility verdict and how to reproduce it.

    Args:
        soup (`SoupFolder`): the output folder, from `read_soup_folder`.
        repo_id (`str`, *optional*): where it will live; names the model (the folder's name otherwise).
        cards (`list[dict | None]`, *optional*): the ingredients' card metadata; read with `ingredient_cards` if
            omitted.
        base_exists (`bool`, *optional*, defaults to `True`): whether the ingredients' shared base is a repo on the
            Hub; only then is it listed under `base_model` (the Hub links every entry).
        token (`str`, *optional*): for reading private ingredients' cards.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .. import __version__

    prov = soup.provenance
    cards = ingredient_cards(soup, token=token) if cards is None else cards
    license_id, license_note = _license(soup, cards)
    pipeline_tag = _pipeline_tag(soup, cards)
    base = shared_base(cards)
    hub_ids = [i["repo_id"] for i in prov["ingredients"] if i.get("repo_id")]
    base_models = list(dict.fromkeys(hub_ids + ([base] if base and base_exists else [])))
    model_name = (repo_id or soup.path.name).split("/")[-1]
    results = eval_results(soup, task_type=pipeline_tag)
    data = ModelCardData(
        base_model=base_models or None,
        library_name="transformers",
        license=license_id,
        pipeline_tag=pipeline_tag,
        tags=list(TAGS),
        # model_name only titles model-index; without scores it would be a stray key.
        **({"model_name": model_name, "eval_results": results} if results else {}),
        **({"base_model_relation": "merge"} if base_models else {}),
    )
    body = _body(soup, model_name=model_name, base=base, license_note=license_note, version=__version__)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# The body ------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("—" if value is None else str(value))


def _result_sets(results: dict[str, Any]) -> list[str]:
    """The sets a results.json reports on, when there are several (one column each); empty for one reported part."""
    entries = results.get("reports")
    if not isinstance(entries, list) or len(entries) < 2:
        return []
    return [str(entry.get("name")) for entry in entries if isinstance(entry, dict)]


def _on(row: dict[str, Any], name: str) -> dict[str, Any]:
    reports = row.get("reports")
    return (reports.get(name) if isinstance(reports, dict) else None) or {}


def _ingredient_rows(soup: SoupFolder) -> list[list[str]]:
    prov, results = soup.provenance, soup.results or {}
    metric = results.get("metric") or (soup.evaluation or {}).get("metric")
    sets = _result_sets(results)
    rows_by_key: dict[str, dict[str, Any]] = {}
    for row in results.get("rows") or []:
        if row.get("kind") == "ingredient":
            for key in (row.get("name"), row.get("sha")):
                if key:
                    rows_by_key.setdefault(str(key), row)
    header = ["#", "ingredient", "commit", "weight"]
    if metric:
        header += [f"held-out {metric}", *([f"{name} {metric}" for name in sets] or [f"report {metric}"])]
    table = [[*header, "kept"]]
    weights = prov.get("weights") or []
    for i, ingredient in enumerate(prov["ingredients"]):
        keys = (ingredient.get("spec"), ingredient.get("repo_id"), ingredient.get("sha"))
        row = next((rows_by_key[str(k)] for k in keys if k and str(k) in rows_by_key), {})
        weight = weights[i] if i < len(weights) else None
        kept = row.get("kept")
        if kept is None and weight is not None:
            kept = weight > 0
        repo_id = ingredient.get("repo_id")
        line = [
            str(i),
            (
                f"[{repo_id}](/{repo_id})"
                if repo_id
                else f"local folder `{ingredient.get('spec') or ingredient.get('folder')}`"
            )
            + _adapter_note(ingredient),
            f"`{ingredient['sha']}`" if ingredient.get("sha") else "—",
            _fmt(weight),
        ]
        if metric:
            line.append(_fmt((row.get("held_out") or {}).get(metric)))
            if sets:
                line += [_fmt(_on(row, name).get(metric)) for name in sets]
            else:
                line.append(_fmt((row.get("report") or {}).get(metric)))
        table.append([*line, "—" if kept is None else ("kept" if kept else "dropped")])
    return table


def _adapter_note(ingredient: dict[str, Any]) -> str:
    """A LoRA adapter's row names the base it was merged into, pinned: together they are the ingredient."""
    adapter = ingredient.get("adapter")
    if not isinstance(adapter, dict) or not isinstance(adapter.get("base"), dict):
        return ""
    base = adapter["base"]
    if base.get("repo_id"):
        where = f"[{base['repo_id']}](/{base['repo_id']})" + (f" at `{base['sha']}`" if base.get("sha") else "")
    else:
        where = f"local folder `{base.get('spec') or base.get('folder')}`"
    return f" (LoRA adapter, merged into {where})"


def _scores(soup: SoupFolder) -> str:
    parts = []
    evaluation = soup.evaluation
    if evaluation:
        config = evaluation.get("dataset_config")
        dataset = f"`{evaluation.get('dataset')}`" + (f" (config `{config}`)" if config else "")
        module = _metric_module(evaluation.get("metric_module"))
        parts.append(
            f"Task `{evaluation.get('task')}` on {dataset}; primary metric: {evaluation.get('metric')}{module}.\n"
        )
        # (what the split column shows, the part, its role): several sets are named as given, their dataset too.
        held = evaluation.get("held_out") or {}
        shown = [(held.get("split"), held, "held-out (chooses ingredients)")] if held else []
        sets = reported_sets(evaluation)
        if len(sets) > 1:
            shown += [
                (e.get("name"), e, "reporting" + (" (in-distribution)" if i == 0 else "")) for i, e in enumerate(sets)
            ]
        elif evaluation.get("report"):
            shown.append((evaluation["report"].get("split"), evaluation["report"], "reporting"))
        metrics = sorted({m for _, part, _ in shown for m in part.get("metrics") or {}})
        rows = [["split", "role", "rows", *metrics]]
        for name, part, role in shown:
            scores = [_fmt((part.get("metrics") or {}).get(m)) for m in metrics]
            rows.append([f"`{name}`", role, part.get("description") or "—", *scores])
        parts.append(markdown_table(rows))
    results = soup.results
    if results and results.get("rows"):
        metric = results.get("metric") or "score"
        sets = _result_sets(results)
        if sets:
            described = "; ".join(f"{e.get('name')}: {e.get('description') or '—'}" for e in results["reports"])
            parts.append(
                f"\nEvery model scored ({metric}; held-out: {results.get('held_out') or '—'}; {described}):\n"
            )
        else:
            parts.append(
                f"\nEvery model scored ({metric}; held-out: {results.get('held_out') or '—'}; "
                f"report: {results.get('report') or '—'}):\n"
            )
        rows = [["model", "kind", "method", "held-out", *(sets or ["report"])]]
        for row in results["rows"]:
            held = (row.get("held_out") or {}).get(metric)
            reported = [_on(row, name).get(metric) for name in sets] or [(row.get("report") or {}).get(metric)]
            rows.append(
                [str(row.get("name")), str(row.get("kind")), _fmt(row.get("method")), _fmt(held), *map(_fmt, reported)]
            )
        parts.append(markdown_table(rows))
    if not parts:
        return "This soup has not been evaluated: its output folder records no scores."
    return "\n".join(parts)


def _metric_module(record: Any) -> str:
    """Which implementation computed the scores, as `hfsoup.evaluation.metrics.LoadedMetric.record` says (older
    soups: none)."""
    if not isinstance(record, dict):
        return ""
    if record.get("source") == "lm-eval":
        return f" (EleutherAI's lm-eval harness {record.get('version')})"
    if record.get("source") == "hub":
        return f" (the Hub's `{record.get('repo')}` module at `{record.get('revision')}`)"
    return f" (the `{record.get('name')}` module shipped with hfsoup {record.get('hfsoup_version')})"


def _reproduce(soup: SoupFolder) -> tuple[str, list[str]]:
    """The recipe as YAML (opening with the command that runs it) and the commands that remake the soup: `hfsoup cook
    recipe.yaml` (the file is in the folder, so in the pushed repo) and the same as one `hfsoup soup` line."""
    recipe = _recipe_file(soup)
    if recipe is None:
        return _recorded_recipe(soup.provenance)
    text, data = recipe
    commands = [COOK_COMMAND + "  # recipe.yaml is in this repo"]
    line = soup_command(data) if isinstance(data, dict) else None
    if line is not None:
        commands.append(" \\\n    ".join(line))
    return text, commands


def _recipe_file(soup: SoupFolder) -> tuple[str, Any] | None:
    """The folder's recipe.yaml, as text and as data (bounded YAML), or None when it has none (an older soup)."""
    from ..io import safeyaml

    path = soup.path / RECIPE_FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        text = safeyaml.read_text(path)
        return text, safeyaml.load(text)
    except Exception as e:  # noqa: BLE001 - an unreadable recipe costs the card its reproduce line, not the push
        logger.warning("could not read %s: %s", RECIPE_FILE, cut(str(e).splitlines()[0] if str(e) else "", 300))
        return None


def _recorded_recipe(prov: dict[str, Any]) -> tuple[str, list[str]]:
    """For a soup made before recipe.yaml was written: the recipe or the command rebuilt from hfsoup.json."""
    import yaml

    if prov.get("recipe"):  # cooked from a recipe file, which the folder does not hold: show it to be saved
        text = yaml.safe_dump(prov["recipe"], sort_keys=False, width=1000)
        return f"# {COOK_COMMAND}\n{text}", [f"{COOK_COMMAND}  # the recipe above, saved as recipe.yaml"]
    specs = []
    for i in prov["ingredients"]:
        specs.append(f"{i['repo_id']}@{i['sha']}" if i.get("repo_id") and i.get("sha") else str(i.get("spec")))
    command = ["hfsoup soup", *specs, "-o soup/", f"--method {prov['method']}"]
    if isinstance(prov.get("base"), dict):
        command.append(f"--base {_pinned_spec(prov['base'])}")
    weights = prov.get("weights") or []
    if (method := SOUPS.get(prov["method"])) is not None:
        command += method().command_args(prov)
    task = (prov.get("evaluation") or {}).get("task")
    if isinstance(task, str) and task:  # scored (selected, for greedy and learned) on a task: it needs --task
        command.append(f"--task {task.removeprefix('glue/')}")
    if prov.get("dtype") not in (None, "auto"):
        command.append(f"--dtype {prov['dtype']}")
    if (prov.get("compatibility") or {}).get("forced"):
        command.append("--force")
    recipe = {
        "method": prov["method"],
        "weights": weights,
        "dtype": prov.get("dtype"),
        "config_from": prov.get("config_from"),
        "ingredients": [{k: v for k, v in i.items() if k != "weights_format"} for i in prov["ingredients"]],
    }
    if isinstance(prov.get("base"), dict):
        recipe["base"] = {k: v for k, v in prov["base"].items() if k not in ("weights_format", "missing_tensors")}
    if isinstance(prov.get(prov["method"]), dict) and prov["method"] not in ("greedy", "learned"):
        # The chosen candidate's options (the card's options line lists every candidate and its score).
        recipe["options"] = {k: v for k, v in prov[prov["method"]].items() if k != "candidates"}
    text = yaml.safe_dump(recipe, sort_keys=False, width=1000)
    return f"# {' '.join(command)}\n{text}", [" \\\n    ".join(command)]


def _reproduce_section(prov: dict[str, Any], commands: list[str]) -> str:
    """Install hfsoup as it was installed when the soup was made, then the commands (the first in the first block)."""
    install = "\n".join(install_lines(prov.get("hfsoup_install"), prov.get("hfsoup_version")))
    blocks = [f"```bash\n{install}\n{commands[0]}\n```"]
    if len(commands) > 1:
        blocks.append(f"The same soup in one command:\n\n```bash\n{commands[1]}\n```")
    local = [i for i in prov.get("ingredients") or [] if not i.get("repo_id")]
    data = prov.get("local_data_files") or []
    if local or data:
        named = [f"`{i.get('spec') or i.get('folder')}` (a local folder)" for i in local]
        named += [f"`{d.get('file')}` (sha256 `{d.get('sha256')}`, {d.get('rows')} rows)" for d in data]
        blocks.append(
            "Local inputs were not pushed; put them where the commands name them (relative to recipe.yaml, or to "
            "the current folder for `hfsoup soup`): " + ", ".join(named) + "."
        )
    if len(commands) == 1 and prov.get("evaluation") and not prov.get("recipe"):
        blocks.append(
            "This soup was made before hfsoup wrote `recipe.yaml` beside it: its selection options were not "
            "recorded, so the command above names only its task and may not remake it exactly."
        )
    return "\n\n".join(blocks)


def _options_line(prov: dict[str, Any]) -> str:
    """The data-free method's options, and when they were chosen on held-out data, every candidate's score."""
    method = prov["method"]
    record = prov.get(method)
    if not isinstance(record, dict):
        return ""
    shown = {}  # the greedy and learned records hold decisions and fitted weights, not options
    if method not in ("greedy", "learned"):
        shown = {
            k: v for k, v in record.items() if k not in ("candidates", "chosen", "held_out_loss") and v is not None
        }
    line = f"\nOptions: {', '.join(f'`{k}={_value(v)}`' for k, v in shown.items())}." if shown else ""
    candidates = record.get("candidates") or []
    if not candidates:
        return line
    metric = (prov.get("evaluation") or {}).get("metric") or "score"
    tried = "; ".join(
        f"{', '.join(f'{k}={_value(v)}' for k, v in c.get('options', {}).items())}: "
        f"{_fmt((c.get('held_out') or {}).get(metric))}"
        for c in candidates
    )
    chosen = ", ".join(f"`{k}={_value(v)}`" for k, v in (record.get("chosen") or {}).items())
    return (
        f"{line}\nChosen on the held-out part among {len(candidates)} candidates (held-out {metric}: {tried}): "
        f"{chosen}, the best held-out score (of equals, the first given). The reported sets chose nothing."
    )


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_value(v) for v in value)
    return str(value)


def _pinned_spec(record: dict[str, Any]) -> str:
    """An ingredient's (or the base's) record as the spec that names exactly it: `org/name@sha`, or its spec."""
    if record.get("repo_id") and record.get("sha"):
        return f"{record['repo_id']}@{record['sha']}"
    return str(record.get("spec"))


def _found(prov: dict[str, Any]) -> str:
    """How the ingredients were found on the Hub (`soup --from-hub`): the query, and each repo left out, and why."""
    found = prov.get("found")
    if not isinstance(found, dict):
        return ""
    query = found.get("query") or {}
    asked = ", ".join(f"{key}={value!r}" for key, value in query.items() if isinstance(value, str | int))
    base = found.get("base") or {}
    lines = [
        "",
        "",
        "## Found on the Hub",
        "",
        f"The ingredients are the fine-tunes and adapters of `{base.get('repo_id')}@{base.get('sha')}` found with "
        f"`hfsoup find` ({asked}) that passed its checks; {found.get('listed')} were listed.",
    ]
    passed = [c for c in found.get("candidates") or [] if isinstance(c, dict) and c.get("verdict") == "pass"]
    lines += ["", "Passed:", ""] + [f"- `{c.get('repo_id')}@{c.get('sha')}`" for c in passed]
    excluded = [c for c in found.get("candidates") or [] if isinstance(c, dict) and c.get("verdict") != "pass"]
    if excluded:
        lines += ["", "Excluded:", ""]
        for c in excluded:
            lines.append(f"- `{c.get('repo_id')}@{c.get('sha')}`: {cut('; '.join(c.get('reasons') or []), 300)}")
    return "\n".join(lines)


def _compatibility(prov: dict[str, Any]) -> str:
    compat = prov.get("compatibility") or {}
    if not compat:
        return "No compatibility report was recorded."
    if compat.get("ok"):
        verdict = "**passed**: same architecture, tensor names, shapes, labels and tokenizer"
    elif compat.get("forced"):
        verdict = "**failed**, and the soup was made anyway with `--force`"
    else:
        verdict = "**failed**"
    lines = [f"The compatibility check {verdict}."]
    cosine = (compat.get("similarity") or {}).get("body_cosine")
    if cosine and len(cosine) > 1:
        pairs = [cosine[i][j] for i in range(len(cosine)) for j in range(i + 1, len(cosine))]
        lines.append(f"Lowest pairwise cosine similarity of the ingredients' bodies: {min(pairs):.4f} (shared init).")
    for finding in compat.get("findings") or []:
        if finding.get("level") != "info":
            who = f" [{finding['ingredient']}]" if finding.get("ingredient") else ""
            lines.append(f"- {finding.get('level')}: {finding.get('check')}{who}: {finding.get('message')}")
    return "\n".join(lines)


def _body(soup: SoupFolder, *, model_name: str, base: str | None, license_note: str, version: str) -> str:
    prov = soup.provenance
    n = len(prov["ingredients"])
    method = prov["method"]
    recipe, commands = _reproduce(soup)
    how = SOUPS[method].description if method in SOUPS else f"the '{method}' method"
    base_line = f" They share the base model [{base}](/{base})." if base else ""
    if isinstance(prov.get("base"), dict):
        merged_from = _pinned_spec(prov["base"])
        base_line += f" The soup is computed relative to the base model `{merged_from}` (`--base`)."
    return f"""# {model_name}

A **{method} model soup** ({PAPER}) of {n} fine-tuned models: {how}.{base_line}{_options_line(prov)}
Made with [hfsoup](https://github.com/hfsoup/hfsoup) {prov.get("hfsoup_version")} on {prov.get("created_at")}; \
this card was written by hfsoup {version}. License: {license_note}

## Ingredients

{markdown_table(_ingredient_rows(soup))}

## Scores

{_scores(soup)}

## Recipe

```yaml
{recipe.rstrip()}
```

## Compatibility

{_compatibility(prov)}{_found(prov)}

## Reproduce

{_reproduce_section(prov, commands)}

The output folder's `hfsoup.json` holds the full provenance (every ingredient's commit SHA, the mixing weights and
the compatibility report).
"""
