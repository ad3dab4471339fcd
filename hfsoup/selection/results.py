"""The results table: every ingredient, the soups and the output ensemble, on the held-out and reported parts.

Printed for people, saved beside the soup as `results.json`, `results.csv` and `results.png` (the paper's kind of
plot: held-out score against reported score, ingredients as points, soups marked). The JSON shape is shared with
the model card (see `RESULTS_FILE`):

    {"metric": "accuracy", "held_out": "<how it was carved>", "report": "<how it was carved>",
     "rows": [{"name", "kind": "ingredient" | "soup" | "ensemble", "method", "sha", "kept",
               "held_out": {...metrics}, "report": {...metrics}}, ...]}
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
    """One line of the table: an ingredient, a soup or the ensemble, with its metrics on both parts."""

    name: str
    kind: str  # "ingredient" | "soup" | "ensemble"
    method: str | None = None
    sha: str | None = None
    kept: bool | None = None
    held_out: dict[str, float] = field(default_factory=dict)
    report: dict[str, float] = field(default_factory=dict)
    #: Why an ingredient was left out before the search (a failed similarity check); it is then not scored.
    excluded: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.excluded is None:  # the key appears only on the rows it concerns
            data.pop("excluded")
        return data


@dataclass
class ResultsTable:
    """The rows, the primary metric and how each part was carved.

    Attributes:
        metric (`str`): the primary metric, by which ingredients are ranked.
        held_out (`str`): how the held-out part was carved.
        report (`str`): how the reported part was carved.
        rows (`list[Row]`): ingredients first (as given), then the soups, then the ensemble.
        metric_module (`dict`, *optional*): which metric implementation computed the scores (`LoadedMetric.record`).
    """

    metric: str
    held_out: str
    report: str
    rows: list[Row] = field(default_factory=list)
    metric_module: dict[str, str] | None = None

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
            "best_individual": best.name if best else None,
            "rows": [r.to_dict() for r in self.rows],
            **({"metric_module": self.metric_module} if self.metric_module is not None else {}),
        }

    def format_table(self) -> str:
        """The table as aligned text: one row per ingredient, soup and ensemble, the best individual marked."""
        names = list(dict.fromkeys(n for r in self.rows for n in [*r.held_out, *r.report]))
        names.sort(key=lambda n: n != self.metric)  # the primary metric first
        best = self.best_individual()
        header = ["", "kind", "kept", *(f"held-out {n}" for n in names), *(f"report {n}" for n in names)]
        lines = [header]
        for r in self.rows:
            kept = "" if r.kept is None else ("yes" if r.kept else "excluded" if r.excluded else "no")
            label = r.name + (" (best individual)" if r is best else "")
            cells = [f"{r.held_out[n]:.4f}" if n in r.held_out else "-" for n in names]
            cells += [f"{r.report[n]:.4f}" if n in r.report else "-" for n in names]
            lines.append([label, r.kind if r.method is None else f"{r.method} {r.kind}", kept, *cells])
        notes = [f"excluded {r.name}: {r.excluded}" for r in self.rows if r.excluded]
        return "\n".join([f"held-out: {self.held_out}", f"report: {self.report}", *text_table(lines), *notes])

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
        names = list(dict.fromkeys(n for r in self.rows for n in [*r.held_out, *r.report]))
        excluded = any(r.excluded for r in self.rows)  # the column appears only when an ingredient was left out
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["name", "kind", "method", "sha", "kept", *(f"held_out/{n}" for n in names)]
                + [f"report/{n}" for n in names]
                + (["excluded"] if excluded else [])
            )
            for r in self.rows:
                kept = "" if r.kept is None else str(r.kept).lower()
                cells = [r.held_out.get(n, "") for n in names] + [r.report.get(n, "") for n in names]
                cells += [r.excluded or ""] if excluded else []
                writer.writerow([r.name, r.kind, r.method or "", r.sha or "", kept, *cells])

    def plot(self, path: str | Path) -> None:
        """Held-out against reported primary metric: ingredients as points, each soup and the ensemble marked."""
        require_matplotlib()
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        m = self.metric
        fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
        try:
            points = []
            for r in self.rows:
                if m not in r.held_out or m not in r.report:
                    continue
                x, y = r.held_out[m], r.report[m]
                points.append((x, y))
                if r.kind == "ingredient":
                    ax.scatter(x, y, marker="o", color="tab:blue", alpha=0.8, label="ingredients")
                elif r.kind == "ensemble":
                    ax.scatter(x, y, marker="D", color="tab:green", s=70, label=r.name)
                else:
                    style = SOUPS[r.method].plot_style if r.method in SOUPS else PlotStyle()
                    ax.scatter(x, y, marker=style.marker, color=style.color, s=style.size, label=r.name)
                ax.annotate(_short(r.name), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
            if points:
                low = min(min(p) for p in points)
                high = max(max(p) for p in points)
                pad = max((high - low) * 0.1, 0.005)
                ax.plot([low - pad, high + pad], [low - pad, high + pad], ls=":", color="grey", lw=1)
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
            ax.set_xlabel(f"held-out {m}\n({self.held_out})", fontsize=8)
            ax.set_ylabel(f"reported {m}\n({self.report})", fontsize=8)
            ax.set_title("Model soup: ingredients and soups", fontsize=10)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(path)
        finally:
            plt.close(fig)


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
