"""Checks that need no weights: config.json, the model card, tokenizer files and safetensors headers.

Every ingredient is compared with the first one (whose config and tokenizer the soup keeps), and every difference is
reported, not only the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import option, quote
from ..io.checkpoint import StructureMap
from ..scrub import cut
from . import decoder, files
from .report import CompatReport, IngredientSummary
from .tokenizer import TokenizerFingerprint, tokenizer_fingerprint

logger = logging.getLogger(__name__)

# Task heads whose output rows are indexed by label id (BERT/RoBERTa/DeBERTa/T5/ViT classifiers, GPT-style `score`).
HEAD_PREFIXES = ("classifier.", "score.", "classification_head.", "qa_outputs.")
# Names that `tie_word_embeddings` makes copies of the input embedding: some checkpoints store them, some do not.
TIED_SUFFIXES = ("lm_head.weight", "embed_tokens.weight", "predictions.decoder.weight", "embed_out.weight")
_SHOW = 5


@dataclass
class IngredientFacts:
    """What is known about an ingredient before its weights are downloaded."""

    spec: str
    sha: str | None
    folder: Path  # holds config, tokenizer and card (weights may be absent)
    structure: StructureMap
    config: dict = field(default_factory=dict)
    base_model: list[str] | None = None
    tokenizer: TokenizerFingerprint | None = None

    @classmethod
    def load(cls, spec: str, sha: str | None, folder: Path, structure: StructureMap) -> IngredientFacts:
        """Read what the checks need from `folder`; `IngredientConfigError` (naming the file and the field) when a
        file is malformed, here, before anything is computed from it."""
        for name in files.JSON_OBJECT_FILES:  # copied into the soup, where transformers reads each as one object
            files.read_json_object(folder / name)
        return cls(
            spec,
            sha,
            folder,
            structure,
            files.config(folder / "config.json"),
            _card_base_model(folder),
            tokenizer_fingerprint(folder),
        )

    @property
    def is_classifier(self) -> bool:
        return any(a.endswith("Classification") for a in self.config.get("architectures") or [])

    @property
    def labels(self) -> list[str] | None:
        return files.labels(self.config) if self.is_classifier else None

    def summary(self) -> IngredientSummary:
        labels = self.labels
        return IngredientSummary(
            spec=self.spec,
            sha=self.sha,
            model_type=self.config.get("model_type"),
            architectures=self.config.get("architectures"),
            num_labels=len(labels) if labels is not None else None,
            labels=labels,
            tokenizer=self.tokenizer.short if self.tokenizer else None,
            base_model=self.base_model,
            dtypes=sorted({m.dtype for m in self.structure.values()}),
            n_tensors=len(self.structure),
        )


@dataclass
class StaticResult:
    """What the soup needs from the static checks besides the findings."""

    label_alignment: dict[str, list[int]] = field(default_factory=dict)  # spec -> row order matching the first
    label_indexed: list[str] = field(default_factory=list)  # tensors whose rows are labels
    skipped_tied: list[str] = field(default_factory=list)  # tied copies (and rotary buffers) stored by some only


def _card_base_model(folder: Path) -> list[str] | None:
    """`base_model` from the card's front matter (bounded YAML: the card is the publisher's text), when it names
    repos."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    import yaml

    from ..io import safeyaml

    try:
        base = (safeyaml.card_metadata(card) or {}).get("base_model")
    except (OSError, yaml.YAMLError) as e:  # a broken card is evidence of nothing, never a reason to stop
        logger.debug("could not parse the front matter of %s: %s", card, cut(str(e), 300))
        return None
    base = [base] if isinstance(base, str) else base
    if not base or not isinstance(base, list) or not all(isinstance(b, str) for b in base):
        return None
    return base


def _names(names: list[str]) -> str:
    shown = [n if len(n) <= 200 else quote(n) for n in names[:_SHOW]]
    return ", ".join(shown) + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def static_checks(facts: list[IngredientFacts], report: CompatReport, *, align_labels: bool = True) -> StaticResult:
    """Compare every ingredient with the first; add findings to `report`; return alignment and skip lists."""
    result = StaticResult()
    first = facts[0]
    tied = _tied_copies(facts, report) | decoder.rotary_buffers(facts, report)
    result.skipped_tied = sorted(tied)
    for other in facts[1:]:
        _architecture(first, other, report)
        _tensors(first, other, report, tied)
        _labels(first, other, report, result, align_labels=align_labels)
        _tokenizer(first, other, report)
        if decoder.is_decoder(first) and decoder.is_decoder(other):
            decoder.decoder_checks(first, other, report)
    _dtypes(facts, report)
    _base_models(facts, report)
    if result.label_alignment:
        n = len(first.labels or [])
        result.label_indexed = sorted(
            name
            for name, meta in first.structure.items()
            if name.startswith(HEAD_PREFIXES) and meta.shape and meta.shape[0] == n
        )
    return result


def _architecture(first: IngredientFacts, other: IngredientFacts, report: CompatReport) -> None:
    for key in ("model_type", "architectures"):
        mine, theirs = other.config.get(key), first.config.get(key)
        if mine != theirs:
            report.add(
                "error",
                "architecture",
                other.spec,
                f"{key} is {quote(mine)} but the first ingredient ({first.spec}) has {quote(theirs)}",
                "Soup only fine-tunes of one architecture, e.g. all BertForSequenceClassification.",
            )


def _tied_copies(facts: list[IngredientFacts], report: CompatReport) -> set[str]:
    everywhere = set.intersection(*(set(f.structure) for f in facts))
    somewhere = set.union(*(set(f.structure) for f in facts))
    tied = {n for n in somewhere - everywhere if n.endswith(TIED_SUFFIXES)}
    tied = {n for n in tied if all(f.config.get("tie_word_embeddings", True) for f in facts)}
    if tied:
        report.add(
            "info",
            "tensors",
            None,
            f"tied copies of the embeddings ({_names(sorted(tied))}) are stored by some ingredients only; they are "
            "left out of the soup and re-tied by transformers on load",
        )
    return tied


def _tensors(first: IngredientFacts, other: IngredientFacts, report: CompatReport, tied: set[str]) -> None:
    ref, mine = first.structure, other.structure
    missing = sorted(set(ref) - set(mine) - tied)
    extra = sorted(set(mine) - set(ref) - tied)
    fix = "Soup only fine-tunes of the same model size and architecture, fine-tuned from one base model."
    if missing:
        report.add(
            "error", "tensors", other.spec, f"lacks {len(missing)} tensors of {first.spec}: {_names(missing)}", fix
        )
    if extra:
        report.add(
            "error", "tensors", other.spec, f"has {len(extra)} tensors {first.spec} lacks: {_names(extra)}", fix
        )
    shapes = [
        f"{n} {list(mine[n].shape)} vs {list(ref[n].shape)}"
        for n in sorted(set(ref) & set(mine))
        if mine[n].shape != ref[n].shape
    ]
    if shapes:
        report.add("error", "tensors", other.spec, f"{len(shapes)} tensors differ in shape: {_names(shapes)}", fix)
    kinds = sorted(
        n
        for n in set(ref) & set(mine)
        if mine[n].is_float != ref[n].is_float or (not mine[n].is_float and mine[n].dtype != ref[n].dtype)
    )
    if kinds:
        report.add("error", "dtypes", other.spec, f"integer tensors differ in dtype: {_names(kinds)}", fix)


def _labels(
    first: IngredientFacts, other: IngredientFacts, report: CompatReport, result: StaticResult, *, align_labels: bool
) -> None:
    mine, theirs = other.labels, first.labels
    if first.config.get("problem_type") != other.config.get("problem_type"):
        report.add(
            "error",
            "labels",
            other.spec,
            f"problem_type is {quote(other.config.get('problem_type'))}, {first.spec} has "
            f"{quote(first.config.get('problem_type'))}",
            "Soup only models trained for the same task.",
        )
    if mine is None or theirs is None or mine == theirs:
        return
    fix = "Soup only fine-tunes trained on the same label set."
    if len(mine) != len(theirs):
        report.add(
            "error",
            "labels",
            other.spec,
            f"has {len(mine)} labels {quote(mine)}; {first.spec} has {len(theirs)} labels {quote(theirs)}",
            fix,
        )
    elif sorted(mine) != sorted(theirs):
        report.add("error", "labels", other.spec, f"has labels {quote(mine)}; {first.spec} has {quote(theirs)}", fix)
    elif not align_labels:
        report.add(
            "error",
            "labels",
            other.spec,
            f"has the same labels in another order ({quote(mine)} vs {quote(theirs)}) and label alignment is off",
            "Drop --no-align-labels (keep align_labels=True) to reorder its classification head rows to match the "
            "first ingredient.",
        )
    else:
        order = [mine.index(label) for label in theirs]
        result.label_alignment[other.spec] = order
        report.add(
            "info",
            "labels",
            other.spec,
            f"labels {quote(mine)} are {first.spec}'s in another order; its classification head rows are reordered "
            f"to {quote(theirs)} before averaging",
        )


def _tokenizer(first: IngredientFacts, other: IngredientFacts, report: CompatReport) -> None:
    a, b = first.tokenizer, other.tokenizer
    if a is None or b is None:
        if a is not b:
            report.add(
                "warning",
                "tokenizer",
                other.spec,
                "only one of it and the first ingredient ships a tokenizer; vocabularies could not be compared",
            )
        return
    if a.vocab != b.vocab:
        report.add(
            "error",
            "tokenizer",
            other.spec,
            f"its vocabulary ({b.size} tokens, fingerprint {b.short}) differs from {first.spec}'s ({a.size} tokens, "
            f"{a.short}): the same embedding row would mean different tokens",
            "Soup only fine-tunes that kept the base model's tokenizer.",
        )
    elif a.specials != b.specials:
        diff = sorted(k for k in set(a.specials) | set(b.specials) if a.specials.get(k) != b.specials.get(k))
        report.add(
            "warning",
            "tokenizer",
            other.spec,
            f"same vocabulary, but special tokens differ ({_names(diff)}); the soup uses {first.spec}'s tokenizer",
        )


def _dtypes(facts: list[IngredientFacts], report: CompatReport) -> None:
    floats = {f.spec: sorted({m.dtype for m in f.structure.values() if m.is_float}) for f in facts}
    if len({tuple(v) for v in floats.values()}) > 1:
        shown = ", ".join(f"{spec}: {'/'.join(d)}" for spec, d in floats.items())
        report.add(
            "info",
            "dtypes",
            None,
            f"mixed float dtypes ({shown}); all are upcast to float32 for averaging "
            f"and the soup is written in {facts[0].spec}'s dtype unless {option('dtype', ...)} is given",
        )


def _base_models(facts: list[IngredientFacts], report: CompatReport) -> None:
    declared = {f.spec: tuple(f.base_model) for f in facts if f.base_model}
    if len(set(declared.values())) > 1:
        shown = "; ".join(f"{spec} declares {_names(list(b))}" for spec, b in declared.items())
        report.add(
            "warning",
            "base-model",
            None,
            f"model cards name different base models ({shown}); the weights "
            "decide whether they share an initialization",
        )
