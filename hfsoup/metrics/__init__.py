"""Metrics through `evaluate`: from the Hub when it answers, else the modules shipped in this package.

`evaluate.load("glue", "sst2")` fetches the `evaluate-metric/glue` space from `HF_ENDPOINT`. When that fails (no
network, `HF_EVALUATE_OFFLINE=1`, a Hub without the space, or the space needing a package that is not installed), the
same-named module in this folder is loaded by path: our own implementation of the same interface and output names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EvaluationError

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent
#: Metric modules shipped with hfsoup, by the name `evaluate.load` knows them under.
SHIPPED = {"glue": SHIPPED_DIR / "glue", "accuracy": SHIPPED_DIR / "accuracy"}


@dataclass
class LoadedMetric:
    """An `evaluate` metric and where it came from (`source`: "hub" or "shipped"), recorded in reports."""

    metric: Any
    name: str
    config: str
    source: str

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        return {
            key: float(value)
            for key, value in self.metric.compute(predictions=predictions, references=references).items()
        }


def load_metric(name: str, config: str) -> LoadedMetric:
    """`evaluate.load(name, config)` from the Hub, falling back to the shipped module of that name.

    Example:
        ```py
        >>> load_metric("glue", "cola").compute(predictions=[1, 0, 1], references=[1, 0, 0])
        {'matthews_correlation': 0.5}
        ```
    """
    import evaluate

    _forget_stale_modules()
    try:
        # keep_in_memory: no cache files, so concurrent evaluations (several processes, several tests) never meet.
        metric = evaluate.load(name, config, module_type="metric", keep_in_memory=True)
        return LoadedMetric(metric, name, config, "hub")
    except (OSError, ImportError) as exc:  # OSError covers connection errors and a module missing from the Hub.
        if name not in SHIPPED:
            raise EvaluationError(
                f"Could not load the metric {name!r} ({config}) from the Hub: {exc}",
                fix="Check your network or HF_ENDPOINT.",
            ) from exc
        # Unreachable is expected offline; a module that came but would not import (a missing package) is news.
        log = logger.warning if isinstance(exc, ImportError) else logger.info
        log("Metric %s (%s) not loaded from the Hub (%s); using the one shipped with hfsoup.", name, config, exc)
    metric = evaluate.load(str(SHIPPED[name]), config, keep_in_memory=True)
    return LoadedMetric(metric, name, config, "shipped")


def _forget_stale_modules() -> None:
    """Drop `evaluate_modules` from `sys.modules` when it was imported from another modules cache.

    `evaluate` imports downloaded metric scripts as `evaluate_modules.metrics...` from `HF_MODULES_CACHE`; Python
    keeps the package bound to the folder of the first import, and that folder stays first on `sys.path`, so after
    the cache moved (a notebook or a test that switched `HF_HOME`) every newly downloaded module would fail to import.
    """
    import sys

    import evaluate.config

    package = sys.modules.get("evaluate_modules")
    if package is None:
        return
    current = Path(evaluate.config.HF_MODULES_CACHE).resolve()
    if all(Path(p).resolve().parent == current for p in getattr(package, "__path__", [])):
        return
    for module in [m for m in sys.modules if m == "evaluate_modules" or m.startswith("evaluate_modules.")]:
        del sys.modules[module]
    # The old folder is still on sys.path, ahead of the new one: put the current cache first.
    if str(current) in sys.path:
        sys.path.remove(str(current))
    sys.path.insert(0, str(current))
