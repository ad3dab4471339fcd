"""Can these ingredients be souped? The compatibility report.

Two phases. Before any weights are downloaded: architecture, tensor names, shapes and dtypes (safetensors headers,
read remotely with Range requests), labels, tokenizer and declared base model (small files). Then, while the weights
stream past (during the soup itself, or in `hfsoup check`): shared initialization, measured, NaN/Inf, and integer
buffers. Every finding names the ingredient, what differs, and the fix.
"""

from __future__ import annotations

from .report import CompatReport, Finding, IngredientSummary, Similarity
from .similarity import MIN_BODY_COSINE, MIN_HEAD_COSINE, SimilarityMeter, leave_out_outliers
from .static import HEAD_PREFIXES, IngredientFacts, StaticResult, static_checks
from .tokenizer import TokenizerFingerprint, tokenizer_fingerprint


def check_before_download(
    facts: list[IngredientFacts], *, align_labels: bool = True
) -> tuple[CompatReport, StaticResult]:
    """Run every check that needs no weights; return the report and what the soup must do (alignment, skips)."""
    report = CompatReport([f.summary() for f in facts])
    result = static_checks(facts, report, align_labels=align_labels)
    report.label_alignment = dict(result.label_alignment)
    return report, result


__all__ = [
    "HEAD_PREFIXES",
    "MIN_BODY_COSINE",
    "MIN_HEAD_COSINE",
    "CompatReport",
    "Finding",
    "IngredientFacts",
    "IngredientSummary",
    "Similarity",
    "SimilarityMeter",
    "StaticResult",
    "TokenizerFingerprint",
    "check_before_download",
    "leave_out_outliers",
    "static_checks",
    "tokenizer_fingerprint",
]
