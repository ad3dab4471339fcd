"""The evaluator's old import path, kept for compatibility: `from hfsoup.evaluator import Evaluator` keeps working.

The evaluator now lives in `hfsoup.evaluation` (`hfsoup/evaluation/evaluator.py`); new code imports from there:

    from hfsoup.evaluation import Evaluator, evaluate_model
"""

from __future__ import annotations

from .errors import EvaluationError
from .evaluation.evaluator import (
    DEFAULT_BATCH_SIZE,  # noqa: F401 - importable from the old module, though not in its __all__
    DEFAULT_MAX_LENGTH,  # noqa: F401
    EvalReport,
    Evaluator,
    SplitResult,
    evaluate_model,
    score,
)

# The old module's __all__, unchanged (its two defaults were importable without being listed, and still are).
__all__ = [
    "EvalReport",
    "EvaluationError",
    "Evaluator",
    "SplitResult",
    "evaluate_model",
    "score",
]
