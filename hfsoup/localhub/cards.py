"""The Hub's checks on a model card's metadata, as `POST /api/validate-yaml` applies them before a README is committed.

The real Hub validates the YAML front matter of model cards against a schema: a known license identifier,
`base_model` naming repos (`org/name`), `base_model_relation` from a fixed set, lists of strings where lists are
expected, and a `model-index` whose every result names its task type, its dataset (type and name) and metrics with a
type and a value. This module applies the same rules so that a card the local Hub accepts is one the Hub accepts.
Messages follow the Hub's style: the offending field's path in quotes, then what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# https://huggingface.co/docs/hub/repositories-licenses
LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
    cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
    gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
    mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
    deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma
    unknown other""".split()
)
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_STRING_LISTS = ("tags", "datasets", "metrics", "language")


def model_card_errors(data: dict[str, Any]) -> list[str]:
    """Every problem the Hub would report in a model card's metadata (empty when it is valid)."""
    errors: list[str] = []
    license_id = data.get("license")
    if license_id is not None and (not isinstance(license_id, str) or license_id not in LICENSES):
        errors.append(f'"license" with value "{license_id}" is not a valid license identifier')
    base = data.get("base_model")
    if base is not None:
        for i, value in enumerate([base] if isinstance(base, str) else base if isinstance(base, list) else [base]):
            if not isinstance(value, str) or not _REPO_ID_RE.match(value):
                where = "base_model" if isinstance(base, str) else f"base_model[{i}]"
                errors.append(f'"{where}" with value "{value}" is not valid. Use a model id from the Hub (org/name)')
    relation = data.get("base_model_relation")
    if relation is not None:
        if relation not in BASE_MODEL_RELATIONS:
            errors.append(f'"base_model_relation" must be one of [{", ".join(BASE_MODEL_RELATIONS)}]')
        if base is None:
            errors.append('"base_model_relation" requires "base_model"')
    for key in ("library_name", "pipeline_tag"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    for key in _STRING_LISTS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors.append(f'"{key}" must be a string or an array of strings')
    if "model-index" in data:
        errors += _model_index_errors(data["model-index"])
    return errors


def _model_index_errors(index: Any) -> list[str]:
    if not isinstance(index, list):
        return ['"model-index" must be an array']
    errors = []
    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, dict):
            errors.append(f'"{where}" must be an object')
            continue
        if not isinstance(model.get("name"), str):
            errors.append(f'"{where}.name" is required')
        results = model.get("results")
        if not isinstance(results, list):
            errors.append(f'"{where}.results" must be an array')
            continue
        for j, result in enumerate(results):
            errors += _result_errors(result, f"{where}.results[{j}]")
    return errors


def _result_errors(result: Any, where: str) -> list[str]:
    if not isinstance(result, dict):
        return [f'"{where}" must be an object']
    errors = []
    required = {"task": ("type",), "dataset": ("type", "name")}
    for part, keys in required.items():
        value = result.get(part)
        if not isinstance(value, dict):
            errors.append(f'"{where}.{part}" is required')
            continue
        errors += [f'"{where}.{part}.{key}" is required' for key in keys if not isinstance(value.get(key), str)]
    metrics = result.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        return [*errors, f'"{where}.metrics" must be a non-empty array']
    for k, metric in enumerate(metrics):
        here = f"{where}.metrics[{k}]"
        if not isinstance(metric, dict) or not isinstance(metric.get("type"), str):
            errors.append(f'"{here}.type" is required')
        elif metric.get("value") is None or isinstance(metric["value"], dict | list | bool):
            errors.append(f'"{here}.value" must be a number or a string')
    return errors


def derived_tags(repo_type: str, card: dict[str, Any], files: Iterable[str]) -> list[str]:
    """The tags the Hub gives a repo from its card: the card's `tags`, then (models) `library_name`, `pipeline_tag`,
    `license:`, `dataset:`, the languages, and the model tree's `base_model:<id>` and `base_model:<relation>:<id>`.

    The relation is the card's `base_model_relation` when it states one, else inferred as the Hub does: an adapter
    config makes `adapter`, several bases `merge`, anything else `finetune` (see shared/HUB-NOTES.md).
    """
    tags: list[str] = []

    def strings(value: Any) -> list[str]:
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [v for v in values if isinstance(v, str) and v]

    tags += strings(card.get("tags"))
    if repo_type == "model":
        tags += strings(card.get("library_name")) + strings(card.get("pipeline_tag"))
    tags += [f"license:{v}" for v in strings(card.get("license"))]
    tags += [f"dataset:{v}" for v in strings(card.get("datasets"))] if repo_type == "model" else []
    tags += strings(card.get("language"))
    bases = [b for b in strings(card.get("base_model")) if _REPO_ID_RE.match(b)]
    if repo_type == "model" and bases:
        relation = card.get("base_model_relation")
        if relation not in BASE_MODEL_RELATIONS:
            names = {path.rsplit("/", 1)[-1] for path in files}
            relation = "adapter" if "adapter_config.json" in names else "merge" if len(bases) > 1 else "finetune"
        for base in bases:
            tags += [f"base_model:{base}", f"base_model:{relation}:{base}"]
    return list(dict.fromkeys(tags))
