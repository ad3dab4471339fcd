"""The compatibility report: findings per ingredient, a verdict, and the two ways to show it (table, JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from ..texttable import text_table

Level = Literal["error", "warning", "info"]
_MARK = {"error": "FAIL", "warning": "WARN", "info": "note"}


@dataclass(frozen=True)
class Finding:
    """One thing the checks found.

    Attributes:
        level (`str`): `error` (souping must not proceed), `warning` (it may, but read this) or `info`.
        check (`str`): which check: `architecture`, `tensors`, `dtypes`, `labels`, `tokenizer`, `base-model`,
            `shared-init` or `head`.
        ingredient (`str`, *optional*): the ingredient concerned (as the user named it); None for all of them.
        message (`str`): what differs, between which ingredients.
        fix (`str`, *optional*): what to do about it.
    """

    level: Level
    check: str
    ingredient: str | None
    message: str
    fix: str | None = None


@dataclass
class IngredientSummary:
    """What the before-download phase learned about one ingredient."""

    spec: str
    sha: str | None
    model_type: str | None
    architectures: list[str] | None
    num_labels: int | None
    labels: list[str] | None
    tokenizer: str | None  # short fingerprint of the vocabulary, None when the ingredient ships no tokenizer
    base_model: list[str] | None  # as declared in the model card
    dtypes: list[str]
    n_tensors: int


@dataclass
class Similarity:
    """Pairwise similarity of the ingredients' weights (matrices only: norms and biases start equal in any init).

    `body_*` cover everything but the task head, `head_*` the head alone (empty when there is no head);
    `*_to_base` compare each ingredient with `--base`.
    """

    names: list[str]
    body_cosine: list[list[float]]
    body_rel_l2: list[list[float]]
    head_cosine: list[list[float]] | None = None
    head_rel_l2: list[list[float]] | None = None
    base: str | None = None
    body_cosine_to_base: list[float] | None = None
    body_rel_l2_to_base: list[float] | None = None


@dataclass
class CompatReport:
    """Everything `hfsoup check` found; `ok` says whether souping may proceed."""

    ingredients: list[IngredientSummary]
    findings: list[Finding] = field(default_factory=list)
    label_alignment: dict[str, list[int]] = field(default_factory=dict)
    similarity: Similarity | None = None
    weights_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def add(self, level: Level, check: str, ingredient: str | None, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(level, check, ingredient, message, fix))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def summary(self) -> str:
        """One paragraph for an error message: every failure, grouped per ingredient."""
        groups: dict[str, list[str]] = {}
        for f in self.errors:
            groups.setdefault(f.ingredient or "all ingredients", []).append(f.message)
        body = " ".join(f"{name}: {'; '.join(msgs)}." for name, msgs in groups.items())
        fixes = list(dict.fromkeys(f.fix for f in self.errors if f.fix))
        return f"The ingredients must not be souped together. {body} " + " ".join(fixes)

    def format_table(self) -> str:
        """The human-readable report `hfsoup check` prints."""
        lines = ["Ingredients"]
        rows = [["#", "ingredient", "commit", "model_type", "labels", "tokenizer", "dtypes", "tensors"]]
        for i, s in enumerate(self.ingredients):
            labels = ",".join(s.labels) if s.labels else "-"
            rows.append(
                [
                    str(i),
                    s.spec,
                    (s.sha or "local")[:10],
                    _cut(s.model_type or "?"),
                    _cut(labels),
                    s.tokenizer or "-",
                    ",".join(s.dtypes),
                    str(s.n_tensors),
                ]
            )
        lines += text_table(rows, indent="  ")
        if self.similarity is not None:
            lines += ["", "Shared initialization (cosine similarity of weight matrices; 1 = identical)"]
            lines += _matrix(self.similarity, "body", self.similarity.body_cosine)
            if self.similarity.head_cosine:
                lines += _matrix(self.similarity, "head", self.similarity.head_cosine)
            if self.similarity.body_cosine_to_base is not None:
                to_base = ", ".join(f"{c:.3f}" for c in self.similarity.body_cosine_to_base)
                lines.append(f"  body vs base {self.similarity.base}: {to_base}")
        elif not self.weights_checked:
            lines += ["", "Shared initialization: not measured (weights not downloaded)."]
        lines += ["", "Findings"]
        if not self.findings:
            lines.append("  none")
        for f in sorted(self.findings, key=lambda f: ("error", "warning", "info").index(f.level)):
            where = f"[{f.ingredient}] " if f.ingredient else ""
            lines.append(f"  {_MARK[f.level]} {f.check}: {where}{f.message}")
            if f.fix:
                lines.append(f"       fix: {f.fix}")
        verdict = (
            "OK: these ingredients can be souped." if self.ok else "REFUSED: these ingredients must not be souped."
        )
        lines += ["", verdict]
        return "\n".join(lines)


def _cut(text: str, width: int = 32) -> str:
    """A cell from an ingredient's config: the publisher chose its length."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _matrix(similarity: Similarity, label: str, values: list[list[float]]) -> list[str]:
    n = len(similarity.names)
    rows = [[label, *map(str, range(n))]]
    rows += [[str(i), *(f"{values[i][j]:.3f}" for j in range(n))] for i in range(n)]
    return text_table(rows, indent="  ")
