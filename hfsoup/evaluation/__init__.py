"""Evaluation: score a model (a fine-tune, an ingredient, a soup) on a task, with the data and metric pinned.

Example:
    ```py
    >>> from hfsoup.evaluation import Evaluator, evaluate_model
    >>> Evaluator("sst2", "validation").score("./soup")
    {'accuracy': 0.912}
    >>> evaluate_model("./soup", "mnli").metrics()  # one-off, with the model and data pinned in the report
    ```

Modules, in the order a score is made:
    tasks.py        `TASKS`: each task's dataset, text fields, labels and metric; `get_task` for custom data
    data.py         load a split with `datasets`, check its labels, tokenize once (cached), batch by length
    placement.py    load a model for inference (pinned through `hub`) and put it on its device
    predictors/     what depends on the kind of model (sequence classifier, T5, image, CLIP); the `PREDICTORS` registry
    metrics/        the metric modules shipped with hfsoup, loaded through `evaluate` (the Hub's only on request)
    evaluator.py    `Evaluator` and `evaluate_model`: the above in order, across processes, into an `EvalReport`

Selection (held-out parts, scorers for the soup methods) builds on this stage and lives in `hfsoup.selection`.
"""

from __future__ import annotations

from ..lazy import lazy_exports

# Public names, imported on first use, as in `hfsoup/__init__.py`: importing one module of this stage (recipes read
# `data`) must not load all of it, and the CPU soup path must never reach a module that imports
# torch, datasets or evaluate at its top.
_LAZY = {
    "Evaluator": "evaluator",
    "EvalReport": "evaluator",
    "SplitResult": "evaluator",
    "evaluate_model": "evaluator",
    "score": "evaluator",
    "Task": "tasks",
    "TASKS": "tasks",
    "get_task": "tasks",
    "PREDICTORS": "predictors.registry",
    "Predictor": "predictors.registry",
    "load_metric": "metrics",
}

__all__ = list(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
