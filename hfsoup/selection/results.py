"""The results table: every ingredient, the soups and the output ensemble, on the held-out and reported parts.

Printed for people, saved beside the soup as `results.json`, `results.csv` and `results.png` (the paper's kinds of
plot: held-out score against reported score, or, reported on several sets, the in-distribution score against the
average score on the others, the distribution shift; ingredients as points, soups marked). The JSON shape is shared
with the model card (see `RESULTS_FILE`):

    {"metric": "accuracy", "held_out": "<how it was carved>", "report": "<how the first set was carved>",
     "reports": [{"name": "<the set as given>", "description": "<how it was carved>"}, ...],
     "rows": [{"name", "kind": "ingredient" | "soup" | "ensemble", "method", "sha", "kept",
               "held_out": {...metrics}, "report": {...metrics of the first set},
               "reports": {"<set>": {...metrics}, ...}}, ...]}

`reports` (every set, in-distribution first) is written only for several sets: a soup reported on one set writes
what it wrote before (`report` is always the first set's).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..constants import RESULTS_FILE
from ..errors import MissingDependencyError, option
from ..soups import SOUPS, PlotStyle
from ..texttable import text_table

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
RESULTS_PLOT = "results.png"


@dataclass
class Row:
    """One line of the table: an ingredient, a soup or the ensemble, with its metrics on every part.

    `report` holds the first reported set's metrics; `reports`, when there are several sets, every set's by set name,
    in order (empty for one reported set)."""

    name: str
    kind: str  # "ingredient" | "soup" | "ensemble"
    method: str | None = None
    sha: str | None = None
    kept: bool | None = None
    held_out: dict[str, float] = field(default_factory=dict)
    report: dict[str, float] = field(default_factory=dict)
    #: Why an ingredient was left out before the search (a failed similarity check); it is then not scored.
    excluded: str | None = None
    reports: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.excluded is None:  # the key appears only on the rows it concerns
            data.pop("excluded")
        if not self.reports:
            data.pop("reports")
        return data

    def on(self, name: str) -> dict[str, float]:
        """The metrics on the reported set `name` (none for an ingredient that was excluded, so not scored)."""
        return self.reports.get(name, {})


@dataclass
class ResultsTable:
    """The rows, the primary metric and how each part was carved.

    Attributes:
        metric (`str`): the primary metric, by which ingredients are ranked.
        held_out (`str`): how the held-out part was carved.
        report (`str`): how the (first) reported part was carved.
        rows (`list[Row]`): ingredients first (as given), then the soups, then the ensemble.
        metric_module (`dict`, *optional*): which metric implementation computed the scores (`LoadedMetric.record`).
        reports (`list[dict]`, *optional*): every reported set, in-distribution first: `{"name": the set as given,
            "description": how it was carved}`; the rows' `reports` are keyed by these names. With two or more, the
            table has a column per set and the plot shows the distribution shift.
    """

    metric: str
    held_out: str
    report: str
    rows: list[Row] = field(default_factory=list)
    metric_module: dict[str, str] | None = None
    reports: list[dict[str, str]] = field(default_factory=list)

    @property
    def sets(self) -> list[str]:
        """The reported sets' names, in-distribution first."""
        return [entry["name"] for entry in self.reports]

    @property
    def shifted(self) -> bool:
        """Whether the results are reported on several sets (one column each, and the distribution-shift plot)."""
        return len(self.reports) > 1

    def best_individual(self) -> Row | None:
        """The ingredient with the best held-out score (the first of equals): the baseline a soup must beat."""
        ingredients = [r for r in self.rows if r.kind == "ingredient"]
        return max(ingredients, key=lambda r: r.held_out.get(self.metric, float("-inf")), default=None)

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict:
        best = self.best_individual()
        return {
            "metric": self.metric,
            "held_out": self.held_out,
            "report": self.report,
            **({"reports": [dict(entry) for entry in self.reports]} if self.shifted else {}),
            "best_individual": best.name if best else None,
            "rows": [r.to_dict() for r in self.rows],
            **({"metric_module": self.metric_module} if self.metric_module is not None else {}),
        }

    def format_table(self) -> str:
        """The table as aligned text: one row per ingredient, soup and ensemble, the best individual marked.

        One reported set: every metric on the held-out and the reported part. Several: the primary metric on the
        held-out part and on each set, one column per set."""
        best = self.best_individual()
        if self.shifted:
            m = self.metric
            header = ["", "kind", "kept", f"held-out {m}", *(f"{name} {m}" for name in self.sets)]
            lines = [header]
            for r in self.rows:
                cells = [_cell(r.held_out, m), *(_cell(r.on(name), m) for name in self.sets)]
                lines.append([self._label(r, best), self._kind(r), self._kept(r), *cells])
            first, *others = self.reports
            described = [f"report {first['name']} (in-distribution): {first['description']}"]
            described += [f"report {entry['name']}: {entry['description']}" for entry in others]
        else:
            names = self._metric_names()
            header = ["", "kind", "kept", *(f"held-out {n}" for n in names), *(f"report {n}" for n in names)]
            lines = [header]
            for r in self.rows:
                cells = [_cell(r.held_out, n) for n in names] + [_cell(r.report, n) for n in names]
                lines.append([self._label(r, best), self._kind(r), self._kept(r), *cells])
            described = [f"report: {self.report}"]
        notes = [f"excluded {r.name}: {r.excluded}" for r in self.rows if r.excluded]
        return "\n".join([f"held-out: {self.held_out}", *described, *text_table(lines), *notes])

    def _metric_names(self, *, primary_first: bool = True) -> list[str]:
        """Every metric on the held-out and reported parts, in the order met (the primary metric first)."""
        parts = [[r.held_out, *(r.reports.values() if self.shifted else [r.report])] for r in self.rows]
        names = list(dict.fromkeys(n for row in parts for part in row for n in part))
        if primary_first:
            names.sort(key=lambda n: n != self.metric)
        return names

    @staticmethod
    def _label(r: Row, best: Row | None) -> str:
        return r.name + (" (best individual)" if r is best else "")

    @staticmethod
    def _kind(r: Row) -> str:
        return r.kind if r.method is None else f"{r.method} {r.kind}"

    @staticmethod
    def _kept(r: Row) -> str:
        return "" if r.kept is None else ("yes" if r.kept else "excluded" if r.excluded else "no")

    def save(self, folder: str | Path, *, plot: bool = True) -> list[str]:
        """Write `results.json`, `results.csv` and (with `plot`) `results.png` into `folder`; return their names."""
        folder = Path(folder)
        (folder / RESULTS_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        self._write_csv(folder / RESULTS_CSV)
        files = [RESULTS_FILE, RESULTS_CSV]
        if plot:
            self.plot(folder / RESULTS_PLOT)
            files.append(RESULTS_PLOT)
        return files

    def _write_csv(self, path: Path) -> None:
        # One reported set: `report/accuracy`; several: `report/<set>/accuracy`, one column per set and metric.
        names = self._metric_names(primary_first=False)
        columns = [(s, n) for s in self.sets for n in names] if self.shifted else [(None, n) for n in names]
        excluded = any(r.excluded for r in self.rows)  # the column appears only when an ingredient was left out
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["name", "kind", "method", "sha", "kept", *(f"held_out/{n}" for n in names)]
                + [f"report/{n}" if s is None else f"report/{s}/{n}" for s, n in columns]
                + (["excluded"] if excluded else [])
            )
            for r in self.rows:
                kept = "" if r.kept is None else str(r.kept).lower()
                cells = [r.held_out.get(n, "") for n in names]
                cells += [(r.report if s is None else r.on(s)).get(n, "") for s, n in columns]
                cells += [r.excluded or ""] if excluded else []
                writer.writerow([r.name, r.kind, r.method or "", r.sha or "", kept, *cells])

    def plot_points(self) -> list[tuple[Row, float, float]]:
        """What `plot` draws, per row with the scores it needs: (row, x, y) in the primary metric.

        One reported set: x is the held-out score, y the reported one. Several (the paper's distribution-shift plot):
        x is the score on the first, in-distribution set, y the mean of the scores on the other sets."""
        m, points = self.metric, []
        for r in self.rows:
            if self.shifted:
                first, *others = [r.on(name).get(m) for name in self.sets]
                if first is None or any(v is None for v in others):
                    continue
                points.append((r, first, sum(others) / len(others)))
            elif m in r.held_out and m in r.report:
                points.append((r, r.held_out[m], r.report[m]))
        return points

    def plot_labels(self) -> tuple[str, str]:
        """The plot's x and y axis labels, naming the parts or sets."""
        m = self.metric
        if self.shifted:
            first, *others = self.sets
            return (
                f"in-distribution {m}\n({first}: {self.reports[0]['description']})",
                f"mean {m} on the other sets\n({', '.join(others)})",
            )
        return f"held-out {m}\n({self.held_out})", f"reported {m}\n({self.report})"

    def plot(self, path: str | Path) -> None:
        """The points of `plot_points`: ingredients as points, each soup and the ensemble marked."""
        require_matplotlib()
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
        try:
            points = []
            for r, x, y in self.plot_points():
                points.append((x, y))
                if r.kind == "ingredient":
                    ax.scatter(x, y, marker="o", color="tab:blue", alpha=0.8, label="ingredients")
                elif r.kind == "ensemble":
                    ax.scatter(x, y, marker="D", color="tab:green", s=70, label=r.name)
                else:
                    style = SOUPS[r.method].plot_style if r.method in SOUPS else PlotStyle()
                    ax.scatter(x, y, marker=style.marker, color=style.color, s=style.size, label=r.name)
                ax.annotate(_short(r.name), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
            if points and not self.shifted:  # held-out and reported scores of one data: y = x is the no-gap line
                low = min(min(p) for p in points)
                high = max(max(p) for p in points)
                pad = max((high - low) * 0.1, 0.005)
                ax.plot([low - pad, high + pad], [low - pad, high + pad], ls=":", color="grey", lw=1)
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
            xlabel, ylabel = self.plot_labels()
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            title = "Model soup under distribution shift" if self.shifted else "Model soup: ingredients and soups"
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(path)
        finally:
            plt.close(fig)


def _cell(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "-"


def require_matplotlib() -> None:
    """Refuse early, with the fix, when matplotlib (the `plot` extra) is missing."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError(
            "Drawing the results plot (results.png) needs matplotlib, which is not installed.",
            fix=f'Install it with: pip install "hfsoup[plot]" (or pip install matplotlib), or pass '
            f"{option('plot', False, within='Selection')}.",
        )


def _short(name: str) -> str:
    """A point's label: the repo or folder name, with a pinned commit cut to 7 characters as git shows it."""
    if "/" in name and not name.endswith(" soup"):
        name = name.rstrip("/").rsplit("/", 1)[-1]
    base, at, revision = name.partition("@")
    return f"{base}@{revision[:7]}" if at and len(revision) == 40 else name
