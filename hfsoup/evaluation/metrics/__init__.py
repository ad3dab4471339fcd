"""Metrics through `evaluate`: the modules shipped in this package, or the Hub's only when the user asks for them.

By default a task's metric is the same-named module in this folder, loaded with `evaluate.load(<path>)`: hfsoup's own
implementation of the Hub module's interface and output names, pinned with hfsoup (a score is reproducible from the
hfsoup version recorded beside it) and fetched from nowhere. The Hub's `evaluate-metric/<name>` space is a Python
script that `evaluate` downloads from `HF_ENDPOINT` and runs (it has no `trust_remote_code` switch), so it is used
only on request: `HFSOUP_HUB_METRICS=1`, `--hub-metrics`, or `hub_metrics=True` (`Evaluator`, `Selection`). Then the
space is downloaded at one commit (the tag of the installed `evaluate`, else `main`, as `evaluate` itself picks),
loaded by path from that snapshot, and the commit is recorded.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import __version__, constants
from ...errors import EvaluationError, MissingDependencyError
from ...hub.errors import HUB_METRICS_OPT_OUT, HubTarget, failure, raise_translated
from ...hub.retries import with_retries

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent
#: Metric modules shipped with hfsoup, by the name `evaluate.load` knows them under.
SHIPPED = {"glue": SHIPPED_DIR / "glue", "accuracy": SHIPPED_DIR / "accuracy"}
#: The Hub namespace of `evaluate`'s canonical metrics (`evaluate.load("glue")` is `evaluate-metric/glue`).
HUB_NAMESPACE = "evaluate-metric"
_OPT_OUT = HUB_METRICS_OPT_OUT


@dataclass
class LoadedMetric:
    """An `evaluate` metric and which implementation it is (`record`, written into every report).

    `record` is `{"name", "config", "source": "shipped", "hfsoup_version"}` for a module shipped with hfsoup, or
    `{"name", "config", "source": "hub", "repo", "revision"}` (the space's commit SHA) for the Hub's.
    """

    metric: Any
    record: dict[str, str]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def config(self) -> str:
        return self.record["config"]

    @property
    def source(self) -> str:
        return self.record["source"]

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        return {
            key: float(value)
            for key, value in self.metric.compute(predictions=predictions, references=references).items()
        }


class Perplexity:
    """Token-level perplexity from per-text `(summed negative log-likelihood, tokens predicted)` pairs: `exp` of the
    total NLL over the total tokens (a long text weighs by its tokens, not as one example). References are unused:
    the text is its own target. Reports `perplexity`, `neg_perplexity` (the ranking: higher is better) and `nll`
    (nats per token)."""

    name = "perplexity"

    def compute(self, *, predictions: list, references: list) -> dict[str, float]:
        import math

        nll = sum(float(p[0]) for p in predictions)
        tokens = sum(float(p[1]) for p in predictions)
        if tokens == 0:
            raise EvaluationError(
                "No token to score: every text is at most one token long after tokenization.",
                fix="Score longer texts, or check the --text-field column.",
            )
        mean = nll / tokens
        perplexity = math.exp(min(mean, 700.0))  # exp overflows past ~709; such a model is hopeless anyway
        return {"perplexity": perplexity, "neg_perplexity": -perplexity, "nll": mean}


def load_metric(name: str, config: str, *, hub: bool | None = None) -> LoadedMetric:
    """The metric `name` (`glue`, `accuracy`) with `config`: shipped with hfsoup, or with `hub` the Hub's module.

    `hub=None` reads `HFSOUP_HUB_METRICS`. The Hub's module is Python code from `HF_ENDPOINT`, run in this process.

    Example:
        ```py
        >>> load_metric("glue", "cola").compute(predictions=[1, 0, 1], references=[1, 0, 0])
        {'matthews_correlation': 0.5}
        ```
    """
    if name == Perplexity.name:  # a formula over the model's own sums, with no Hub module to stand in for
        return LoadedMetric(
            Perplexity(), {"name": name, "config": config, "source": "shipped", "hfsoup_version": __version__}
        )
    import evaluate

    _follow_modules_cache()
    if constants.hub_metrics() if hub is None else hub:
        return _from_hub(name, config)
    if name not in SHIPPED:
        raise EvaluationError(
            f"hfsoup ships no {name!r} metric module (it ships {', '.join(SHIPPED)}).",
            fix=f"To download and run the Hub's {HUB_NAMESPACE}/{name}, pass --hub-metrics (or HFSOUP_HUB_METRICS=1).",
        )
    # keep_in_memory: no cache files, so concurrent evaluations (several processes, several tests) never meet.
    metric = evaluate.load(str(SHIPPED[name]), config, keep_in_memory=True)
    return LoadedMetric(metric, {"name": name, "config": config, "source": "shipped", "hfsoup_version": __version__})


def _from_hub(name: str, config: str) -> LoadedMetric:
    """The space `evaluate-metric/<name>` at one commit: downloaded, then loaded by path from that snapshot.

    Loading by path (not `evaluate.load(name)`) is what pins it: `evaluate` would fall back, when the Hub fails, to
    whichever version of the module it cached last, and would not say which commit it ran.
    """
    import evaluate
    from huggingface_hub import snapshot_download

    repo = f"{HUB_NAMESPACE}/{name}"
    folder = None
    # `evaluate`'s own choice: the space's tag for the installed evaluate (`v0.4.6`), else `main`.
    for revision in (f"v{evaluate.__version__}", "main"):
        try:
            folder = with_retries(
                lambda revision=revision: snapshot_download(
                    repo, repo_type="space", revision=revision, allow_patterns=["*.py"]
                ),
                what=f"downloading the metric {repo}@{revision}",
            )
            break
        except Exception as exc:  # the Hub unreachable, the space missing or private: the user asked for it
            if failure(exc) == "revision":
                continue
            raise_translated(exc, HubTarget("metric", repo, revision=revision))
    script = Path(str(folder)) / f"{name}.py" if folder is not None else None
    if script is None or not script.is_file():
        raise EvaluationError(
            f"The space {repo} on {constants.hub_endpoint()} has no {name}.py at v{evaluate.__version__} or main.",
            fix=f"Check HF_ENDPOINT, or {_OPT_OUT}.",
        )
    try:
        metric = evaluate.load(str(script), config, keep_in_memory=True)
    except ImportError as exc:  # `evaluate` lists the packages the module imports that are not installed
        raise MissingDependencyError(
            f"The Hub's metric module {repo} needs packages that are not installed: {exc}",
            fix=f"pip install 'hfsoup[hub-metrics]' (scipy and scikit-learn), or {_OPT_OUT}.",
        ) from exc
    except Exception as exc:  # someone else's script, asked for: whatever it raises is about that script
        raise EvaluationError(
            f"The Hub's metric module {repo} ({script.parent.name}) failed to load: {type(exc).__name__}: {exc}",
            fix=f"Report it to the space's authors, or {_OPT_OUT}.",
        ) from exc
    # The Hub cache keeps a revision's files under snapshots/<commit SHA>/.
    record = {"name": name, "config": config, "source": "hub", "repo": repo, "revision": script.parent.name}
    logger.info("Metric %s (%s): the Hub's module %s at %s", name, config, repo, record["revision"])
    return LoadedMetric(metric, record)


def _follow_modules_cache() -> None:
    """Drop `evaluate_modules` from `sys.modules` when it was imported from another modules cache.

    Still needed with path loading: `evaluate.load(<path>)` copies the module into
    `HF_MODULES_CACHE/evaluate_modules/metrics/<name>/<hash>/` and imports it from there as
    `evaluate_modules.metrics...`. Python keeps that package bound to the folder of its first import, so after the
    cache moved within a process (a notebook or a test that switched `HF_HOME` through `use_local_hub`), the first
    load of another module (`accuracy` after `glue`) fails with "No module named 'evaluate_modules.metrics.accuracy'".
    The old folder is also left on `sys.path` ahead of the new one, so it is taken off again.
    """
    import evaluate.config

    package = sys.modules.get("evaluate_modules")
    if package is None:
        return
    current = Path(evaluate.config.HF_MODULES_CACHE).resolve()
    old = {Path(p).resolve().parent for p in getattr(package, "__path__", [])} - {current}
    if not old:
        return
    for module in [m for m in sys.modules if m == "evaluate_modules" or m.startswith("evaluate_modules.")]:
        del sys.modules[module]
    # evaluate appended each cache it used to sys.path; an old one would keep shadowing the current one.
    # (evaluate appends the current one itself, when it is missing, before it imports a module.)
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() not in old]
