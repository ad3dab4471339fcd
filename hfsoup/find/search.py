"""`hfsoup find`: a base model's fine-tunes and adapters on the Hub, each pinned and vetted before any download.

Each repo the listing returns (`query.list_children`) is pinned to its SHA and put through the checks that need no
weights, against the base and against the first candidate that passed (the one a soup's config would come from):
architecture, tensor shapes from the safetensors headers, labels and their order (with `--task`, the task's labels
and the datasets the card declares), tokenizer and license; then the sampled shared-initialization estimate
(`sampled`), which refuses an independently initialized impostor before its weights download. A LoRA adapter is
vetted as the model it makes with the base: its config must name the base, and its tensors must fit the base at
the rank the config declares.

Candidates are vetted `jobs` at a time and in the listing's order, and the search stops once `limit` have passed.
Nothing but small files, headers and the sampled slices is downloaded.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import hub
from ..compat import IngredientFacts, check_before_download
from ..compat.similarity import MIN_BODY_COSINE
from ..constants import FIND_JOBS
from ..errors import HfsoupError, IngredientNotFoundError
from ..hub.adapters import attach_bases
from ..hub.refs import PinnedIngredient, hub_id_problem, parse_hub_ref
from ..texttable import text_table
from .query import Listed, Query, list_children
from .sampled import cosine, plan_samples, read_samples

logger = logging.getLogger(__name__)

# The checks that compare a candidate with its base; labels are judged against the task or the first candidate.
_BASE_CHECKS = ("architecture", "tensors", "tokenizer", "dtypes")
_GLUE_NAMES = ("glue", "nyu-mll/glue")


@dataclass
class Candidate:
    """One repo found, and what the checks said of it.

    Attributes:
        repo_id (`str`), sha (`str`): the repo and the commit it is pinned to.
        relation (`str`): `finetune` or `adapter`, from the Hub's model tree.
        verdict (`str`): `pass` (may be souped with the base's other passing children) or `refused`.
        reasons (`list[str]`): why it was refused; `notes`: what passed with a remark (labels reordered, a license
            unlike the base's).
        cosine (`float`, *optional*): the sampled body cosine to the base (None for adapters, which are the base
            plus a low-rank update by construction, and where it could not be measured).
    """

    repo_id: str
    sha: str | None
    relation: str
    downloads: int = 0
    likes: int = 0
    license: str | None = None
    labels: list[str] | None = None
    verdict: str = "refused"
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cosine: float | None = None

    @property
    def spec(self) -> str:
        return f"{self.repo_id}@{self.sha}" if self.sha else self.repo_id

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


@dataclass
class FindResult:
    """What `find` found: the query, the pinned base, and every candidate vetted (in the listing's order)."""

    query: Query
    base_sha: str | None
    candidates: list[Candidate]
    listed: int

    @property
    def passed(self) -> list[Candidate]:
        return [c for c in self.candidates if c.passed]

    @property
    def refused(self) -> list[Candidate]:
        return [c for c in self.candidates if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query.to_dict(),
            "base": {"repo_id": self.query.base, "sha": self.base_sha},
            "listed": self.listed,
            "candidates": [{**asdict(c), "spec": c.spec} for c in self.candidates],
        }

    def format_table(self) -> str:
        rows = [["ID", "SHA", "downloads", "labels", "license", "verdict", "reason"]]
        for c in self.candidates:
            why = "; ".join(c.reasons or c.notes) or (f"sampled cosine {c.cosine:.3f}" if c.cosine is not None else "")
            rows.append(
                [
                    c.repo_id,
                    (c.sha or "-")[:10],
                    str(c.downloads),
                    ",".join(c.labels or []) or "-",
                    c.license or "-",
                    c.verdict,
                    why if len(why) <= 160 else why[:157] + "...",
                ]
            )
        checked = f"{self.listed} listed, {len(self.candidates)} checked"
        lines = [f"Fine-tunes and adapters of {self.query.base} ({checked})"]
        lines += text_table(rows, indent="  ")
        lines += ["", f"{len(self.passed)} passed, {len(self.refused)} refused."]
        return "\n".join(lines)


class NoCandidatesError(HfsoupError):
    """The Hub lists no fine-tune or adapter of the base (with the filters given)."""


def find_ingredients(
    base: str,
    *,
    task: str | None = None,
    pipeline_tag: str | None = None,
    author: str | None = None,
    search: str | None = None,
    sort: str = "downloads",
    limit: int | None = None,
    jobs: int = FIND_JOBS,
    token: str | bool | None = None,
) -> FindResult:
    """List the fine-tunes and adapters of `base` on the Hub and vet each before any weights download.

    Args:
        base (`str`): the base model's Hub ID (`org/name`; a revision is not part of the model tree).
        task (`str`, *optional*): a GLUE task (`sst2`): candidates must have its labels, and a card that declares
            datasets must declare GLUE.
        pipeline_tag, author, search (`str`, *optional*): narrow the listing as `HfApi.list_models` does.
        sort (`str`, *optional*, defaults to `"downloads"`): `downloads`, `likes` or `modified`, largest first.
        limit (`int`, *optional*): stop once this many candidates passed.
        jobs (`int`, *optional*, defaults to 8): candidates vetted at once.
        token (`str`, *optional*): a Hub token for private repos.

    Returns:
        `FindResult`: `.passed` are the ingredients (pinned), `.refused` the rest with the reasons.

    Example:
        ```py
        >>> found = hfsoup.find_ingredients("org/base", task="sst2", limit=20)
        >>> [c.spec for c in found.passed]
        ['org/ft-a@4f1c...', 'org/lora-b@9d2e...']
        ```
    """
    from .. import progress
    from ..pipeline import gather_facts

    wanted = _task_labels(task)
    if limit is not None and limit < 1:
        raise HfsoupError(f"--limit must be at least 1, got {limit}.", fix="Pass a positive number.")
    if "@" in base:
        raise IngredientNotFoundError(
            f"The base {base!r} names a revision; the Hub's model tree links repos, not commits.",
            fix="Name the base as 'org/name'.",
        )
    problem = hub_id_problem(base)
    if problem is not None:
        raise IngredientNotFoundError(
            f"The base {base!r} is not a Hub model ID (org/name): hfsoup find searches the Hub's model tree, which "
            "links Hub IDs, and reads no local folder.",
            fix="Name the base by its Hub ID (org/name); to check local folders against each other, use hfsoup check.",
        )
    query = Query(base, task=task, pipeline_tag=pipeline_tag, author=author, search=search, sort=sort, limit=limit)
    base_pinned = hub.resolve(parse_hub_ref(base), token=token)  # the Hub's repo, even beside a folder of its name
    if base_pinned.is_adapter:
        raise HfsoupError(f"The base {base!r} is itself an adapter.", fix="Name the model the adapter was made for.")
    base_facts = gather_facts([base_pinned], token=token, allow_pickle=False)[0]
    samples = plan_samples(base_pinned.structure)
    base_values = read_samples(base_pinned, samples, base_pinned.structure, token=token) if samples else None
    listed = list_children(query, token=token)
    if not listed:
        filters = ", ".join(f"{k}={v!r}" for k, v in query.to_dict().items() if k not in ("base", "sort", "limit"))
        raise NoCandidatesError(
            f"The Hub lists no fine-tune or adapter of {base}{f' ({filters})' if filters else ''}: no model card "
            f"names it as base_model.",
            fix="Check the base's ID (the one its fine-tunes' cards name), or loosen --author, --search or "
            "--pipeline-tag.",
        )
    progress.stage("Checking %d fine-tunes and adapters of %s from their headers and samples", len(listed), base)
    context = _Context(base_pinned, base_facts, base_values, samples, wanted, task, token)
    candidates: list[Candidate] = []
    reference: IngredientFacts | None = None
    with (
        ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
        progress.bar(total=len(listed), desc=f"checking children of {base}", unit="repo") as bar,
    ):
        pending: list[Future] = []
        queue = iter(listed)
        passed = 0

        def top_up() -> None:
            for entry in queue:
                pending.append(pool.submit(_vet, entry, context))
                if len(pending) >= max(1, jobs):
                    return

        top_up()
        while pending and (limit is None or passed < limit):
            candidate, facts = pending.pop(0).result()
            bar.update(1)
            if candidate.passed and facts is not None:
                if reference is None:
                    reference = facts
                else:
                    _against_reference(candidate, facts, reference)
            candidates.append(candidate)
            passed += candidate.passed
            top_up()
        for future in pending:  # the limit was reached: what is still queued is not needed
            future.cancel()
    return FindResult(query, base_pinned.sha, candidates, len(listed))


@dataclass(frozen=True)
class _Context:
    base: PinnedIngredient
    facts: IngredientFacts
    values: np.ndarray | None
    samples: list
    labels: tuple[str, ...] | None
    task: str | None
    token: str | bool | None


def _task_labels(task: str | None) -> tuple[str, ...] | None:
    if task is None:
        return None
    from ..evaluation.tasks import get_task

    labels = get_task(task).label_names
    return tuple(labels) if labels else None


def _vet(entry: Listed, context: _Context) -> tuple[Candidate, IngredientFacts | None]:
    """Every check of one candidate against the base; never raises for what the candidate holds."""
    from ..pipeline import gather_facts

    candidate = Candidate(
        entry.repo_id, entry.sha, entry.relation, entry.downloads, entry.likes, license=entry.license
    )
    try:
        pinned = hub.resolve(candidate.spec, token=context.token)
        candidate.sha = pinned.sha
        if pinned.is_adapter:
            attach_bases([pinned], base=context.base, token=context.token)
            candidate.notes.append("a LoRA adapter of the base")
        elif entry.relation == "adapter":
            candidate.notes.append("listed as an adapter but holds a full model")
        facts = gather_facts([pinned], token=context.token, allow_pickle=False)[0]
        card = _card(hub.fetch(pinned, token=context.token, weights=False))
    except HfsoupError as e:  # a broken repo, an adapter of another base or rank: refused, the search goes on
        candidate.reasons.append(e.message)
        return candidate, None
    candidate.labels = facts.labels
    _against_base(candidate, facts, context)
    _labels_and_data(candidate, facts, card, context)
    base_license = _card(context.facts.folder).get("license")
    if candidate.license is None and isinstance(card.get("license"), str):
        candidate.license = card["license"]
    if base_license and candidate.license != base_license:
        candidate.notes.append(f"license {candidate.license or 'not declared'}, the base's is {base_license}")
    if not pinned.is_adapter and not candidate.reasons:
        _sampled(candidate, pinned, context)
    candidate.verdict = "refused" if candidate.reasons else "pass"
    return candidate, facts


def _card(folder: Path) -> dict[str, Any]:
    from ..io import safeyaml

    path = folder / hub.CARD_FILE
    try:
        return (safeyaml.card_metadata(path) or {}) if path.is_file() else {}
    except Exception:  # noqa: BLE001 - a broken card is evidence of nothing
        return {}


def _against_base(candidate: Candidate, facts: IngredientFacts, context: _Context) -> None:
    base = context.facts
    if base.config.get("architectures") == facts.config.get("architectures"):
        report, _ = check_before_download([base, facts])
        candidate.reasons += [f"{f.check}: {f.message}" for f in report.errors if f.check in _BASE_CHECKS]
        return
    # A task model of a bare base (BertForSequenceClassification of a BertModel): the body must be the base's.
    if facts.config.get("model_type") != base.config.get("model_type"):
        candidate.reasons.append(
            f"architecture: model_type {facts.config.get('model_type')!r}, the base's is "
            f"{base.config.get('model_type')!r}"
        )
    if base.tokenizer and facts.tokenizer and base.tokenizer.vocab != facts.tokenizer.vocab:
        candidate.reasons.append("tokenizer: its vocabulary differs from the base's")


def _labels_and_data(candidate: Candidate, facts: IngredientFacts, card: dict, context: _Context) -> None:
    if context.labels is None:
        return
    labels = facts.labels
    if labels is None:
        candidate.reasons.append(f"labels: it is not a classifier, and task {context.task} has labels")
        return
    wanted = list(context.labels)
    generic = [f"LABEL_{i}" for i in range(len(wanted))]
    if labels == wanted:
        pass
    elif labels == generic:
        candidate.notes.append("labels LABEL_0.. read in the task's order")
    elif sorted(labels) == sorted(wanted):
        candidate.notes.append(f"labels reordered ({', '.join(labels)}); aligned when souped")
    else:
        candidate.reasons.append(f"labels: {', '.join(labels)}, task {context.task} has {', '.join(wanted)}")
    declared = card.get("datasets")
    declared = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
    names = [d.lower() for d in declared if isinstance(d, str)]
    if names and not any(n in _GLUE_NAMES or n.endswith(f"/{context.task}") or n == context.task for n in names):
        candidate.reasons.append(f"datasets: its card declares {', '.join(names[:5])}, not GLUE {context.task}")


def _sampled(candidate: Candidate, pinned: PinnedIngredient, context: _Context) -> None:
    if context.values is None:
        candidate.notes.append("shared initialization not estimated (the base has no float matrices to sample)")
        return
    values = read_samples(pinned, context.samples, context.base.structure, token=context.token)
    if values is None:
        candidate.reasons.append("tensors: the base's largest matrices are missing or have other shapes")
        return
    candidate.cosine = cosine(values, context.values)
    if candidate.cosine < MIN_BODY_COSINE:
        candidate.reasons.append(
            f"shared-init: sampled body cosine {candidate.cosine:.3f} to the base (fine-tunes of one base score "
            f"above {MIN_BODY_COSINE}); it was not fine-tuned from {context.base.name}"
        )


def _against_reference(candidate: Candidate, facts: IngredientFacts, reference: IngredientFacts) -> None:
    """A passing candidate against the first one that passed, whose config and tokenizer a soup would keep."""
    report, static = check_before_download([reference, facts])
    errors = [f"{f.check}: {f.message}" for f in report.errors]
    if errors:
        candidate.reasons += errors
        candidate.verdict = "refused"
    elif facts.spec in static.label_alignment and not any("reordered" in n for n in candidate.notes):
        candidate.notes.append("labels reordered; aligned when souped")


def refuse_unless_enough(result: FindResult, *, at_least: int = 2) -> list[Candidate]:
    """The passing candidates, or an error naming every refusal when fewer than `at_least` passed."""
    if len(result.passed) >= at_least:
        return result.passed
    raise NoCandidatesError(
        f"Of the {result.listed} fine-tunes and adapters of {result.query.base} the Hub lists, {len(result.passed)} "
        f"passed the checks; a soup needs at least {at_least}.",
        fix="Loosen the search (--task, --author, --search), or name the ingredients yourself.",
        problems=[f"{c.repo_id}: {'; '.join(c.reasons)}" for c in result.refused],
    )
