"""Can these ingredients be souped? Structural checks made before any weights are downloaded.

This module grows into the full compatibility report (labels, tokenizer, shared initialization). Here: the model
family (`model_type`, `architectures`) from config.json, and every tensor name, shape and kind (float or integer) from
the safetensors headers. Every mismatch is listed, grouped per ingredient, never only the first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .checkpoint import StructureMap
from .errors import IncompatibleIngredientsError

# How many tensor names to spell out per kind of mismatch before summarising.
_SHOW = 5


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise IncompatibleIngredientsError(f"{path} is not valid JSON ({e}).") from e


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def structure_problems(structures: Mapping[str, StructureMap], configs: Mapping[str, dict]) -> dict[str, list[str]]:
    """Compare every ingredient with the first; return ingredient -> problems (empty when all agree)."""
    (ref_name, ref), *others = structures.items()
    ref_config = configs.get(ref_name, {})
    problems: dict[str, list[str]] = {}
    for name, structure in others:
        found: list[str] = []
        config = configs.get(name, {})
        for key in ("model_type", "architectures"):
            if key in ref_config and key in config and ref_config[key] != config[key]:
                found.append(f"{key} is {config[key]!r}, the first ingredient's is {ref_config[key]!r}")
        missing = sorted(set(ref) - set(structure))
        extra = sorted(set(structure) - set(ref))
        if missing:
            found.append(f"lacks {len(missing)} tensors the first ingredient has: {_names(missing)}")
        if extra:
            found.append(f"has {len(extra)} tensors the first ingredient lacks: {_names(extra)}")
        shapes = sorted(n for n in set(ref) & set(structure) if ref[n].shape != structure[n].shape)
        if shapes:
            details = [f"{n} {list(structure[n].shape)} vs {list(ref[n].shape)}" for n in shapes]
            found.append(f"{len(shapes)} tensors have other shapes: {_names(details)}")
        kinds = sorted(n for n in set(ref) & set(structure) if ref[n].is_float != structure[n].is_float)
        if kinds:
            found.append(f"{len(kinds)} tensors are float in one ingredient and integer in the other: {_names(kinds)}")
        if found:
            problems[name] = found
    return problems


def check_structure(structures: Mapping[str, StructureMap], configs: Mapping[str, dict]) -> None:
    """Raise `IncompatibleIngredientsError` listing every structural mismatch against the first ingredient."""
    problems = structure_problems(structures, configs)
    if not problems:
        return
    first = next(iter(structures))
    lines = "; ".join(f"{name}: " + ", ".join(found) for name, found in problems.items())
    raise IncompatibleIngredientsError(
        f"The ingredients cannot be averaged tensor by tensor. Compared with the first ingredient ({first}): {lines}.",
        fix="Soup only fine-tunes of the same architecture and size, fine-tuned from the same base model.",
    )
