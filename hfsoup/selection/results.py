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
        """Save `figure()` to `path` (a PNG for `results.png`)."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        try:
            fig.savefig(path)
        finally:
            plt.close(fig)

    def figure(self):
        """The results plot as a matplotlib `Figure`, laid out and labelled; the caller closes it (`plt.close`).

        The points of `plot_points`: ingredients as points, each soup and the ensemble marked. Every point's label is
        placed where it covers no other label and no marker, stacked beside the point when several points coincide
        (a greedy soup that kept one ingredient is that ingredient). The legend sits outside the axes, so it covers
        nothing, and names the dotted y = x line (held-out = report) where there is one.
        """
        require_matplotlib()
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100, layout="constrained")
        try:
            points = []  # (x, y, marker area in points², label)
            for r, x, y in self.plot_points():
                if r.kind == "ingredient":
                    size = plt.rcParams["lines.markersize"] ** 2  # scatter's default area
                    ax.scatter(x, y, marker="o", color="tab:blue", alpha=0.8, label="ingredients")
                elif r.kind == "ensemble":
                    size = 70
                    ax.scatter(x, y, marker="D", color="tab:green", s=size, label=r.name)
                else:
                    style = SOUPS[r.method].plot_style if r.method in SOUPS else PlotStyle()
                    size = style.size
                    ax.scatter(x, y, marker=style.marker, color=style.color, s=size, label=r.name)
                points.append((x, y, size, _short(r.name)))
            if points and not self.shifted:  # held-out and reported scores of one data: y = x is the no-gap line
                low = min(min(p[:2]) for p in points)
                high = max(max(p[:2]) for p in points)
                pad = max((high - low) * 0.1, 0.005)
                line = [low - pad, high + pad]
                ax.plot(line, line, ls=":", color="grey", lw=1, label="y = x (held-out = report)")
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
            xlabel, ylabel = self.plot_labels()
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            title = "Model soup under distribution shift" if self.shifted else "Model soup: ingredients and soups"
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            # Room inside the axes for the labels of the outermost points.
            ax.margins(x=0.25, y=0.15)
            fig.canvas.draw()  # the layout: from here on the axes' place and limits are final
            ax.set_xlim(ax.get_xlim())
            ax.set_ylim(ax.get_ylim())
            fig.set_layout_engine("none")  # labels are placed inside the axes; nothing may move after them
            _place_labels(ax, points)
        except BaseException:
            plt.close(fig)
            raise
        return fig


_LABEL_GAP = 2.0  # pixels kept clear between a label and any other label or marker


def _place_labels(ax, points: list[tuple[float, float, float, str]]) -> None:
    """Label each point at the nearest place (right of it first) that overlaps no label, no marker and stays inside.

    Candidates are stacked rows of the label's height to the right and the left of the point, and above and below it,
    nearest first; labels of coincident points thus stack beside them. Where nothing is free (a crowd too dense for
    the axes), the candidate that overlaps least is taken.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_pixels = fig.dpi / 72.0
    area = ax.get_window_extent(renderer)
    inside = (area.x0 + _LABEL_GAP, area.y0 + _LABEL_GAP, area.x1 - _LABEL_GAP, area.y1 - _LABEL_GAP)
    centers = [ax.transData.transform((x, y)) for x, y, _, _ in points]
    markers = []
    for (cx, cy), (_, _, size, _) in zip(centers, points, strict=True):
        half = size**0.5 * to_pixels / 2 + _LABEL_GAP
        markers.append((cx - half, cy - half, cx + half, cy + half))
    placed: list[tuple[float, float, float, float]] = []
    for (cx, cy), (x, y, _, text) in zip(centers, points, strict=True):
        label = ax.annotate(
            text, (x, y), textcoords="offset points", xytext=(0, 0), fontsize=7, ha="left", va="bottom"
        )
        extent = label.get_window_extent(renderer)
        width, height = extent.width, extent.height
        # Clear of the largest marker drawn here: a coincident point's marker may be bigger than this one's.
        gap = max(m[2] - cx for m in markers if m[0] <= cx <= m[2] and m[1] <= cy <= m[3]) + _LABEL_GAP
        best, best_cost = None, None
        for x0, y0 in _candidates(cx, cy, width, height, gap):
            box = (x0, y0, x0 + width, y0 + height)
            cost = sum(_overlap(box, other) for other in (*placed, *markers))
            within = inside[0] <= box[0] and inside[1] <= box[1] and box[2] <= inside[2] and box[3] <= inside[3]
            cost += 0.0 if within else width * height - _overlap(box, inside)  # the part outside the axes
            if cost == 0:
                best = box
                break
            if best_cost is None or cost < best_cost:
                best, best_cost = box, cost
        label.xyann = ((best[0] - cx) / to_pixels, (best[1] - cy) / to_pixels)
        placed.append(best)


def _candidates(cx: float, cy: float, width: float, height: float, gap: float):
    """Lower-left corners of label boxes around a point, nearest first: beside it (right, then left) in stacked rows,
    and above and below it."""
    step = height + _LABEL_GAP
    spots = []
    for row in range(12):
        for sign in (1, -1) if row else (1,):
            y0 = cy - height / 2 + sign * row * step
            spots += [(cx + gap, y0), (cx - gap - width, y0)]
        spots += [(cx - width / 2, cy + gap + row * step), (cx - width / 2, cy - gap - height - row * step)]

    def distance(spot: tuple[float, float]) -> float:  # from the point to the box's nearest edge; ties keep the order
        dx = max(spot[0] - cx, 0.0, cx - spot[0] - width)
        dy = max(spot[1] - cy, 0.0, cy - spot[1] - height)
        return (dx * dx + dy * dy) ** 0.5

    return sorted(spots, key=distance)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes (x0, y0, x1, y1) share, 0 when they only touch or are apart."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


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
