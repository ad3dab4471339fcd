"""Checks for decoder-only language models, from their configs, tokenizer files and safetensors headers alone.

A causal LM's checkpoint can agree tensor by tensor with another's and still not mean the same thing: one ties its
output head to its input embeddings and the other trains its own; their attention groups its heads differently;
their rotary positions are scaled differently; their tokenizers add different tokens or render chats differently.
Each difference is reported against the first ingredient, whose config, tokenizer, chat template and
`generation_config.json` the soup is written with. Rotary `inv_freq` buffers, stored by older checkpoints only and
recomputed by transformers on load, are left out of the soup like tied copies.
"""

from __future__ import annotations

from typing import Any

from ..errors import quote
from ..io.jsonread import parse_json, read_bounded
from .report import CompatReport

# Which config keys change what the weights mean, and how badly when they differ.
_ERRORS = ("vocab_size", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size")
_WARNINGS = ("rope_theta", "rope_scaling", "rope_parameters", "max_position_embeddings", "sliding_window")
#: Buffers transformers recomputes on load, which some checkpoints store and others do not.
ROTARY_SUFFIXES = ("rotary_emb.inv_freq",)
_SHOW = 5


def is_decoder(facts: Any) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in facts.config.get("architectures") or [])


def rotary_buffers(facts: list[Any], report: CompatReport) -> set[str]:
    """Rotary buffers stored by some ingredients only: left out of the soup (transformers recomputes them)."""
    everywhere = set.intersection(*(set(f.structure) for f in facts))
    somewhere = set.union(*(set(f.structure) for f in facts))
    found = {n for n in somewhere - everywhere if n.endswith(ROTARY_SUFFIXES)}
    if found:
        report.add(
            "info",
            "tensors",
            None,
            f"rotary position buffers ({', '.join(sorted(found)[:_SHOW])}) are stored by some ingredients only; they "
            "are left out of the soup and recomputed by transformers on load",
        )
    return found


def decoder_checks(first: Any, other: Any, report: CompatReport) -> None:
    """Compare one causal-LM ingredient with the first: head tying, attention shapes, positions, tokens, chat."""
    _tying(first, other, report)
    for key in (*_ERRORS, *_WARNINGS):
        mine, theirs = other.config.get(key), first.config.get(key)
        if mine == theirs:
            continue
        if key in _ERRORS:
            report.add(
                "error",
                "architecture",
                other.spec,
                f"{key} is {quote(mine)} but {first.spec} has {quote(theirs)}"
                + (" (grouped-query attention shares key-value heads differently)" if "heads" in key else ""),
                "Soup only fine-tunes of one base model, with its attention layout and vocabulary.",
            )
        else:
            report.add(
                "warning",
                "architecture",
                other.spec,
                f"{key} is {quote(mine)} but {first.spec} has {quote(theirs)}: positions are encoded differently; "
                f"the soup is written with {first.spec}'s",
            )
    _added_tokens(first, other, report)
    _chat_template(first, other, report)
    _generation(first, other, report)


def _tying(first: Any, other: Any, report: CompatReport) -> None:
    # transformers' default is tied; Llama's config class says untied, and writes the key either way.
    mine, theirs = other.config.get("tie_word_embeddings", True), first.config.get("tie_word_embeddings", True)
    if bool(mine) != bool(theirs):

        def how(tied: bool) -> str:
            return "ties its output head to its input embeddings" if tied else "has an output head of its own"

        report.add(
            "error",
            "architecture",
            other.spec,
            f"it {how(bool(mine))} (tie_word_embeddings {str(bool(mine)).lower()}) but {first.spec} "
            f"{how(bool(theirs))}: the soup would average an output head with embeddings",
            "Soup only fine-tunes of one base model that kept its tie_word_embeddings.",
        )


def _added_tokens(first: Any, other: Any, report: CompatReport) -> None:
    a, b = first.tokenizer, other.tokenizer
    if a is None or b is None or a.added == b.added:
        return
    extra = [t for t in b.added if t not in a.added]
    lacking = [t for t in a.added if t not in b.added]
    parts = [f"adds {', '.join(map(quote, extra[:_SHOW]))}"] if extra else []
    parts += [f"lacks {', '.join(map(quote, lacking[:_SHOW]))}"] if lacking else []
    parts = parts or ["numbers them differently"]
    report.add(
        "error",
        "tokenizer",
        other.spec,
        f"its added tokens differ from {first.spec}'s: it {' and '.join(parts)}",
        "Soup only fine-tunes that added the same tokens (same ids) to the base model's tokenizer.",
    )


def _chat_template(first: Any, other: Any, report: CompatReport) -> None:
    a = first.tokenizer.chat_template if first.tokenizer else None
    b = other.tokenizer.chat_template if other.tokenizer else None
    if a == b:
        return
    if a is None or b is None:
        what = (
            "it has a chat template and the first has none" if b else f"it has no chat template and {first.spec} has"
        )
    else:
        what = f"its chat template differs from {first.spec}'s"
    report.add(
        "warning",
        "tokenizer",
        other.spec,
        f"{what}: chats are rendered as {first.spec}'s template renders them in the soup",
    )


def _generation(first: Any, other: Any, report: CompatReport) -> None:
    a, b = _generation_config(first.folder), _generation_config(other.folder)
    if a is None and b is None:
        return
    a, b = a or {}, b or {}
    keys = sorted(k for k in set(a) | set(b) if k != "transformers_version" and a.get(k) != b.get(k))
    if keys:
        shown = ", ".join(f"{k} {quote(b.get(k))} vs {quote(a.get(k))}" for k in keys[:_SHOW])
        report.add(
            "warning",
            "config",
            other.spec,
            f"generation_config.json differs from {first.spec}'s ({shown}); the soup carries {first.spec}'s",
        )


def _generation_config(folder: Any) -> dict | None:
    path = folder / "generation_config.json"
    if not path.is_file():
        return None
    data = parse_json(read_bounded(path))  # already checked to be one object (`IngredientFacts.load`)
    return data if isinstance(data, dict) else None
