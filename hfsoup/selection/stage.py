"""The selection stage of the pipeline: score the ingredients, run the soup methods, and lay out the results table.

Runs after the ingredients are fetched and before the soup is written. It carves the task's data into a held-out part
(where soups are selected) and one reported part per reported set (never used for selection: the methods get only
the held-out scorer), scores every ingredient on each, runs the chosen method and the baselines (every method in
`SOUPS` through the same `run(context)`, and the output ensemble), and returns the mixing weights that the streaming
engine then writes, with the table and the provenance that go beside them. Nothing here writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import progress
from ..errors import EvaluationError, option
from ..evaluation.evaluator import Evaluator, resolve_task
from ..evaluation.harness import is_harness_task
from ..evaluation.tasks import Task
from ..soups import SOUPS, Mixing, SoupContext, SoupMethod, TensorMerge, make_method
from .heldout import Part, carve, duplicate_inputs, refuse_shared, whole
from .options import ENSEMBLE, Selection
from .results import ResultsTable, Row
from .scorers import make_scorer

logger = logging.getLogger(__name__)


@dataclass
class SelectionResult:
    """What selection produced: the weights to write, the table and the provenance to write beside them.

    Attributes:
        mixing (`Mixing`): the chosen method's weights.
        table (`ResultsTable`): every ingredient, soup and the ensemble on the held-out part and each reported set.
        evaluation (`dict`): the chosen soup's own scores and where they come from.
        records (`dict[str, dict]`): per soup scored, its method's record (the greedy decisions, the learned weights
            and losses, the held-out loss; with candidate lists, every candidate's options and scores).
        merge (`TensorMerge`, *optional*): the chosen method's per-tensor merge (TIES, DARE, SLERP, Model Stock).
    """

    mixing: Mixing
    table: ResultsTable
    evaluation: dict
    records: dict[str, dict] = field(default_factory=dict)
    merge: TensorMerge | None = None


def methods_to_run(method: SoupMethod, selection: Selection) -> dict[str, SoupMethod]:
    """The chosen method and the compared ones, in `SOUPS` order (the table's rows); a baseline given as an object
    keeps its options, one given by name runs with its defaults (the chosen method's options when it is the same)."""
    chosen: dict[str, SoupMethod] = {method.name: method}
    for item in selection.compared:
        if isinstance(item, SoupMethod):
            chosen.setdefault(item.name, item)
        elif item in SOUPS:
            chosen.setdefault(item, make_method(item))
    return {name: chosen[name] for name in [*SOUPS, *chosen] if name in chosen}


def select_soup(
    ingredients: Sequence[Any],
    readers: Sequence[Any],
    *,
    method: SoupMethod,
    selection: Selection,
    names: Sequence[str],
    alignment: Mapping[int, Sequence[int]],
    label_indexed: Sequence[str],
    token: str | bool | None = None,
    excluded: Mapping[int, str] | None = None,
    model_from: Any = None,
    base: Any = None,
) -> SelectionResult:
    """Score, search and compare. `ingredients` are the pinned `hub.PinnedIngredient`s, `readers` their checkpoints,
    `names` the tensor names to mix, `alignment`/`label_indexed` how to put permuted heads in order.

    `excluded` (position -> why) are ingredients left out before the search (they failed a similarity check): they
    are neither scored nor offered to any method, get weight 0 in every soup, and appear in the table with the reason.
    `model_from` is the ingredient whose config and tokenizer the candidates are scored with (the first by default,
    excluded or not: the soup is written with its config, and the heads are aligned to its labels). `base` is the
    declared base (`engine.BaseWeights`), for the methods relative to it.

    A method whose options are lists of candidates (`SoupMethod.candidates`) is run and scored once per candidate;
    the best held-out score (the first of equals, in the given order) is its soup, every candidate has a row, and
    its record lists them all. The reported sets are scored for the table only: they choose nothing.
    """
    excluded = dict(excluded or {})
    if excluded:
        kept = [i for i in range(len(ingredients)) if i not in excluded]
        result = select_soup(
            [ingredients[i] for i in kept],
            [readers[i] for i in kept],
            method=method,
            selection=selection,
            names=names,
            alignment={new: alignment[old] for new, old in enumerate(kept) if old in alignment},
            label_indexed=label_indexed,
            token=token,
            model_from=ingredients[0],
            base=base,
        )
        return _with_excluded(result, ingredients, kept, excluded)
    from ..evaluation.placement import load_model, load_tokenizer
    from ..evaluation.predictors.registry import predictor_for

    progress.stage(
        "Scoring %d ingredients on %s (the model and the data loaded first)",
        len(ingredients),
        selection.task if isinstance(selection.task, str) else selection.task.name,
    )
    source = model_from or ingredients[0]
    # A LoRA adapter's model is its base's (config, tokenizer, architecture); the weights scored are the merged ones.
    first = str((getattr(source, "adapter_base", None) or source).local_dir)
    model, _ = load_model(first, kind=selection.kind, token=token)
    # The kind of model, as `hfsoup eval` chooses it (`kind` overrides): how it is scored, what its tokenizer is.
    predictor = predictor_for(
        [*(model.config.architectures or []), type(model).__name__],
        kind=selection.kind,
        model_name=ingredients[0].name,
    )
    tokenizer = load_tokenizer(first, token=token, loader=predictor.load_tokenizer)
    sets = [s.label for s in selection.report_sets]
    if is_harness_task(selection.task):  # lm-eval's harness scores the candidates, on its tasks' documents
        from .harness import harness_selection

        task, held_scorer, report_scorer, parts, metric_module, evaluation_of = harness_selection(
            selection, model, tokenizer
        )
        report_scorers: list[Any] = [report_scorer]
    else:
        task = _task(selection, model, token=token)
        held, reports, parts = _parts(task, selection, token=token)
        held_scorer = make_scorer(held, model, tokenizer, kind=predictor.name, model_name=ingredients[0].name)
        # One scorer per reported set; the methods below only ever get the held-out one.
        report_scorers = [
            make_scorer(r, model, tokenizer, kind=predictor.name, model_name=ingredients[0].name) for r in reports
        ]
        metric_module = dict(held.metric.record)

        def evaluation_of(metrics: dict) -> dict:
            return _evaluation(task, held, reports, parts, sets, metrics)

    logger.info("scoring %s models (%s) on %s", predictor.name, type(model).__name__, task.name)
    loaders = [state_loader(reader, names, alignment.get(i), label_indexed) for i, reader in enumerate(readers)]
    methods = methods_to_run(method, selection)
    labels = [i.name for i in ingredients]
    scorers = [held_scorer, *report_scorers]
    rows = sum(scorer.num_examples for scorer in scorers)
    progress.stage(
        "  on %d held-out rows (they select) and %d reported (they only report)",
        held_scorer.num_examples,
        rows - held_scorer.num_examples,
    )

    # Every ingredient on every part; all of them stay in memory only when a method needs them at once.
    keep_states = any(m.needs_states for m in methods.values())
    states, held_scores = [], []
    # Per reported set, its scorer and every ingredient's scores on it.
    per_set: list[tuple[Any, list[torch.Tensor]]] = [(scorer, []) for scorer in report_scorers]
    with _counting(scorers, desc="Scoring ingredients", total=rows * len(loaders)):
        for i, load in enumerate(loaders):
            state = load()
            held_scores.append(held_scorer.scores(state))
            for scorer, scores in per_set:
                scores.append(scorer.scores(state))
            if keep_states:
                states.append(state)
            logger.info("scored %s: held-out %s", labels[i], f"{held_scorer.primary_of(held_scores[-1]):.4f}")
    table = ResultsTable(
        task.primary_metric,
        parts[0].description,
        parts[1].description,
        metric_module=metric_module,
        reports=[
            {"name": label, "description": part.description} for label, part in zip(sets, parts[1:], strict=True)
        ],
    )
    n = len(loaders)
    for i, ingredient in enumerate(ingredients):
        row = Row(labels[i], "ingredient", sha=ingredient.sha, held_out=held_scorer.metrics(held_scores[i]))
        _report_on(row, sets, [scorer.metrics(scores[i]) for scorer, scores in per_set])
        table.rows.append(row)

    context = SoupContext(
        names=labels,
        loaders=loaders,
        scorer=held_scorer,
        objective=held_scorer,
        scores=[held_scorer.primary_of(scores) for scores in held_scores],
        states=states if keep_states else None,
        device=held_scorer.device,
        identities=WeightsIdentities(ingredients, readers, names, alignment, label_indexed),
    )
    soups: dict[str, tuple[Mixing, dict, TensorMerge | None]] = {}
    evaluation_metrics: dict[str, dict] = {}
    held_in_memory: list[dict] = []  # every ingredient at once, read when a per-tensor merge is first scored

    for name, soup_method in methods.items():
        candidates = soup_method.candidates()
        scored = []  # per candidate: (values, outcome, record, row)
        shown = f"{len(candidates)} candidates of the {name} soup" if len(candidates) > 1 else f"the {name} soup"
        progress.stage("Making and scoring %s", shown)
        for values, candidate in candidates:
            # No total: a search scores as many trial soups as it needs (greedy stops early on a hopeless one).
            with _counting(scorers, desc=f"{name} soup", unit="example"):
                outcome = candidate.run(context)
                state = _soup_state(outcome, states or loaders, held_in_memory, names, base)
                held_out_scores = held_scorer.scores(state)
                reported = [scorer.metrics(scorer.scores(state)) for scorer in report_scorers]
                del state
            record = dict(outcome.record)
            if candidate.records_loss and held_scorer.differentiable:
                record.setdefault("held_out_loss", held_scorer.mean_loss(held_out_scores))
            label = f" ({_values_label(values)})" if values else ""
            row = Row(f"{name} soup{label}", "soup", method=name)
            row.held_out = held_scorer.metrics(held_out_scores)
            _report_on(row, sets, reported)
            table.rows.append(row)
            scored.append((values, outcome, record, row, reported))
        # The first of the best held-out scores: selection sees the held-out part only.
        best = max(range(len(scored)), key=lambda k: scored[k][3].held_out.get(task.primary_metric, float("-inf")))
        values, outcome, record, row, reported = scored[best]
        if len(scored) > 1:
            for k, (_, _, _, other, _) in enumerate(scored):
                other.kept = k == best
            record["candidates"] = [
                {"options": v, "held_out": r.held_out, "reports": list(rep)} for v, _, _, r, rep in scored
            ]
            record["chosen"] = dict(values)
            logger.info("%s: chose %s on the held-out part", name, _values_label(values))
        if outcome.kept is not None:
            for i, ingredient_row in enumerate(table.rows[:n]):
                ingredient_row.kept = i in outcome.kept
        soups[name] = (outcome.mixing, record, outcome.merge)
        evaluation_metrics[name] = {"held_out": row.held_out, "reports": list(reported)}
    del states, context, held_in_memory
    if ENSEMBLE in selection.compared and not held_scorer.ensembles:
        logger.info("no output ensemble row: %s gives no per-answer scores to average", task.name)
    elif ENSEMBLE in selection.compared:
        row = Row(ENSEMBLE, ENSEMBLE)
        row.held_out = held_scorer.metrics(held_scorer.ensemble(held_scores))
        _report_on(row, sets, [scorer.metrics(scorer.ensemble(scores)) for scorer, scores in per_set])
        table.rows.append(row)

    evaluation = evaluation_of(evaluation_metrics[method.name])
    # At DEBUG: `hfsoup soup` prints the table itself (at INFO it would show twice with -v); the result holds it.
    logger.debug("results:\n%s", table.format_table())
    mixing, _, merge = soups[method.name]
    return SelectionResult(mixing, table, evaluation, {k: record for k, (_, record, _) in soups.items()}, merge)


@contextmanager
def _counting(scorers: Sequence[Any], *, desc: str, total: int | None = None, unit: str = "example") -> Iterator[Any]:
    """A progress bar that every row the scorers score moves (one bar for all of them: the step is the scoring)."""
    with progress.bar(desc=desc, total=total, unit=unit) as bar:
        for scorer in scorers:
            scorer.on_rows = bar.update
        try:
            yield bar
        finally:
            for scorer in scorers:
                scorer.on_rows = None


def _with_excluded(
    result: SelectionResult, ingredients: Sequence[Any], kept: Sequence[int], excluded: Mapping[int, str]
) -> SelectionResult:
    """The selection of the kept ingredients, laid out over all of them: weight 0 and a table row for each excluded."""
    n = len(ingredients)

    def widen(weights: Sequence[float]) -> tuple[float, ...]:
        full = [0.0] * n
        for new, old in enumerate(kept):
            full[old] = float(weights[new])
        return tuple(full)

    mixing = result.mixing
    mixing = Mixing(widen(mixing.weights), {k: widen(w) for k, w in mixing.per_tensor.items()}, mixing.base_weight)
    scored = {row.name: row for row in result.table.rows if row.kind == "ingredient"}
    rows = []
    for i, ingredient in enumerate(ingredients):
        if i in excluded:
            rows.append(Row(ingredient.name, "ingredient", sha=ingredient.sha, kept=False, excluded=excluded[i]))
        else:
            rows.append(scored[ingredient.name])
    result.table.rows = rows + [row for row in result.table.rows if row.kind != "ingredient"]
    return SelectionResult(mixing, result.table, result.evaluation, result.records, result.merge)


def _task(selection: Selection, model: Any, *, token: str | bool | None) -> Task:
    # The evaluator's own resolution: text-classification takes its class names from the loaded first ingredient.
    return resolve_task(
        selection.task,
        labels_from=model,
        dataset=selection.dataset,
        data_files=selection.data_files,
        token=token,
        text_field=selection.text_field,
    )


def _parts(
    task: Task, selection: Selection, *, token: str | bool | None
) -> tuple[Evaluator, list[Evaluator], list[Part]]:
    """Evaluators restricted to the held-out part and to each reported set's part, and the parts (held-out first).

    The first reported set is carved with the held-out part (`carve`); every other set is reported whole, and its rows
    that are held-out rows (same data, by row identity) are refused unless `force`. Another dataset's rows are other
    rows; its inputs that repeat held-out ones are only warned about, as across two splits of one dataset.
    """
    options = {
        "dataset": selection.dataset,
        "data_files": selection.data_files,
        "batch_size": selection.batch_size,
        "max_length": selection.max_length,
        "token": token,
        "hub_metrics": selection.hub_metrics,
        "text_field": selection.text_field,
    }
    sets = selection.report_sets
    reports = [
        Evaluator(
            task, s.split, **(options if s.dataset is None else {**options, "dataset": s.dataset, "data_files": None})
        )
        for s in sets
    ]
    held_split = selection.held_out or sets[0].split
    held = Evaluator(task, held_split, **options)
    same = [_same_data(held, evaluator) for evaluator in reports]  # their rows are compared by identity
    for evaluator in reports:
        if held.metric.record != evaluator.metric.record:  # the Hub's space got a new commit between two downloads
            raise EvaluationError(
                f"The metric module changed while it was loaded: {held.metric.record} then {evaluator.metric.record}.",
                fix="Run again (or drop --hub-metrics to use the module shipped with hfsoup).",
            )
    for evaluator in (*reports, held):
        if len(evaluator.splits) != 1:  # MNLI's validation is two dataset splits
            names = ", ".join(s.name for s in evaluator.splits)
            raise EvaluationError(
                f"Split {evaluator.split!r} of {task.name} stands for several dataset splits ({names}); soups are "
                "selected and reported on one split at a time.",
                fix=f"Name one of them with {option('report', ..., within='Selection')} (and "
                f"{option('held_out', ..., within='Selection')}): {names}.",
            )
    # (base split, row) of every row, before any part is carved: two specs may share rows.
    keys = {e.split: e.splits[0].keys for e in (reports[0], held)}
    held_part, report_part = carve(
        {split: len(rows) for split, rows in keys.items()},
        held_out=selection.held_out,
        report=sets[0].split,
        fraction=selection.fraction,
        size=selection.size,
        seed=selection.seed,
        force=selection.force,
        keys=keys,
    )
    parts = [held_part, report_part]
    # Inputs repeated across two splits (or datasets) are other rows, but the same texts: warned about, not refused.
    repeats = [(sets[0], reports[0])] if held_part.split != report_part.split else []
    for s, evaluator, ours in zip(sets[1:], reports[1:], same[1:], strict=True):
        part = whole(s.label, s.split, len(evaluator.splits[0].references))
        shared = 0
        if ours:  # rows of another dataset are other rows, whatever their (split, row) numbers
            shared = refuse_shared(held_part, keys[held_split], part, evaluator.splits[0].keys, force=selection.force)
        if not shared:  # shared rows, forced, were already warned about
            repeats.append((s, evaluator))
        parts.append(part)
    held.restrict(held_part.positions)
    reports[0].restrict(report_part.positions)
    inputs = list(task.input_fields)
    held_inputs = list(zip(*(held.splits[0].rows[f] for f in inputs), strict=True))
    for s, evaluator in repeats:
        repeated = duplicate_inputs(
            held_inputs, list(zip(*(evaluator.splits[0].rows[f] for f in inputs), strict=True))
        )
        if repeated:
            logger.warning(
                "%d reported examples have the same inputs as held-out ones (%s and %s repeat some texts)",
                repeated,
                held_part.split,
                s.label,
            )
    logger.info("held-out: %s; report: %s", held_part.description, "; ".join(p.description for p in parts[1:]))
    return held, reports, parts


def _same_data(a: Evaluator, b: Evaluator) -> bool:
    """Whether two evaluators read one dataset (at one commit): a set naming the selection's own dataset is that
    data, and its rows are the held-out rows by (split, row); another dataset's are other rows."""

    def which(dataset: dict) -> dict:
        return {k: v for k, v in dataset.items() if k not in ("source", "revision")}

    return which(a.dataset) == which(b.dataset)


def _report_on(row: Row, sets: Sequence[str], metrics: Sequence[dict[str, float]]) -> None:
    """A row's scores on every reported set: `report` is the first (in-distribution) set's; `reports`, with several
    sets, every set's (one set writes exactly what it wrote before sets: tests/test_contracts.py pins it)."""
    row.report = dict(metrics[0])
    if len(sets) > 1:
        row.reports = dict(zip(sets, metrics, strict=True))


class WeightsIdentities(Sequence):
    """Per ingredient, what pins its weights as `state_loader` reads them (JSON data), computed when first asked
    for: a Hub ingredient's repo and commit SHA (an adapter's with its base's), a local folder's weight files'
    sha256 (read once), with the tensors read and the head alignment; None for a local adapter (not cached)."""

    def __init__(
        self,
        ingredients: Sequence[Any],
        readers: Sequence[Any],
        names: Sequence[str],
        alignment: Mapping[int, Sequence[int]],
        label_indexed: Sequence[str],
    ) -> None:
        self.ingredients, self.readers, self.alignment = ingredients, readers, alignment
        self.read = [sorted(names), sorted(label_indexed)]
        self._known: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.ingredients)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if i not in self._known:
            own = _pinned(self.ingredients[i], self.readers[i])
            rows = self.alignment.get(i)
            self._known[i] = None if own is None else [own, self.read, None if rows is None else list(rows)]
        return self._known[i]


def _pinned(ingredient: Any, reader: Any) -> Any:
    from ..io.checkpoint import file_sha256

    base = getattr(ingredient, "adapter_base", None)
    if base is not None:
        return [ingredient.name, ingredient.sha, base.name, base.sha] if ingredient.sha and base.sha else None
    if ingredient.sha:
        return [ingredient.name, ingredient.sha]
    files = getattr(reader, "weight_files", None)
    return None if not files else ["sha256", [file_sha256(path) for path in files]]


def state_loader(
    reader: Any, names: Sequence[str], order: Sequence[int] | None = None, label_indexed: Sequence[str] = ()
) -> Callable[[], dict[str, torch.Tensor]]:
    """Read one ingredient's tensors (float ones as float32), its head rows put in the first ingredient's order."""

    rows, permuted = (list(order) if order is not None else None), set(label_indexed)

    def load() -> dict[str, torch.Tensor]:
        state = {}
        for name in names:
            tensor = reader.get(name)  # torch tensors: these states are scored with the model
            if rows is not None and name in permuted:
                tensor = tensor[rows]
            state[name] = tensor.float() if torch.is_floating_point(tensor) else tensor
        return state

    return load


def _mixed(ingredients: Sequence[Any], mixing: Mixing) -> dict:
    """The soup's weights for scoring: a weighted sum of the ingredients' states, or of what their loaders read (one
    ingredient in memory at a time besides the sum)."""
    out: dict | None = None
    for i, item in enumerate(ingredients):
        state = item() if callable(item) else item
        if out is None:
            out = {k: (t * mixing.weights_for(k)[i] if torch.is_floating_point(t) else t) for k, t in state.items()}
            continue
        for k, t in state.items():
            if torch.is_floating_point(t):
                out[k] = out[k] + t * mixing.weights_for(k)[i]
    assert out is not None
    return out


def _soup_state(outcome: Any, ingredients: Sequence[Any], cache: list, names: Sequence[str], base: Any) -> dict:
    """The soup of `outcome` to score: its own state, the weighted sum, or (relative to the base or tensor by tensor)
    built from every ingredient at once, read once into `cache` for all the merges and candidates scored."""
    if outcome.state is not None:
        return outcome.state
    if outcome.merge is None and outcome.mixing.base_weight == 0.0:
        return _mixed(ingredients, outcome.mixing)
    if not cache:
        cache.extend(item() if callable(item) else item for item in ingredients)
    return _merged(cache, names, outcome.mixing, outcome.merge, base)


def _merged(
    states: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
    mixing: Mixing,
    merge: TensorMerge | None,
    base: Any,
) -> dict:
    """The soup of a method relative to the base or tensor by tensor (task arithmetic, TIES, DARE, SLERP...), built
    in memory tensor by tensor by the engine's own code, in float32: what its candidate is scored with. Integer
    buffers are the first ingredient's (they must agree)."""
    from ..soups.engine import merged_tensor

    if merge is not None:
        merge.prepare(sorted(names))  # as the engine does before the first tensor
    out = {}
    for key, tensor in states[0].items():
        if not torch.is_floating_point(tensor):
            out[key] = tensor
            continue
        arrays = [s[key].detach().cpu().numpy() for s in states]
        out[key] = torch.from_numpy(merged_tensor(key, arrays, mixing, base=base, merge=merge))
    return out


def _values_label(values: Mapping[str, Any]) -> str:
    """A candidate's options as the table names it: `density=0.2, scale=1`."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _source(dataset: dict) -> tuple[str, str | None]:
    """A dataset's name for people and its config (data files have none)."""
    source = dataset.get("id") or ", ".join(f for files in dataset.get("data_files", {}).values() for f in files)
    return source, dataset.get("config") if dataset.get("id") else None


def _evaluation(
    task: Task, held: Evaluator, reports: Sequence[Evaluator], parts: list[Part], sets: Sequence[str], metrics: dict
) -> dict:
    """The `evaluation` entry of `hfsoup.json`: the soup's own scores and where they come from. `report` is the first
    (in-distribution) set, as before there were several; with several, `reports` is every set, each with its
    dataset."""
    source, config = _source(held.dataset)
    selected = set(held.splits[0].keys)
    reported = []
    for label, evaluator, part, scores in zip(sets, reports, parts[1:], metrics["reports"], strict=True):
        set_source, set_config = _source(evaluator.dataset)
        entry = {
            "name": label,
            "dataset": set_source,
            "dataset_config": set_config,
            "dataset_sha": evaluator.dataset.get("sha"),
            "split": part.split,
            "description": part.description,
            "metrics": scores,
        }
        # Only ever with --force: say in the provenance how many selection rows were also reported.
        shared = len(selected & set(evaluator.splits[0].keys)) if _same_data(held, evaluator) else 0
        if shared:
            entry["shared_rows"] = shared
        reported.append(entry)
    evaluation = {
        "task": task.name if task.dataset != "nyu-mll/glue" else f"glue/{task.name}",
        "dataset": source,
        "dataset_config": config,
        "dataset_sha": held.dataset.get("sha"),
        "metric": task.primary_metric,
        "metric_module": dict(held.metric.record),  # which implementation computed every score below
        "held_out": {"split": parts[0].split, "description": parts[0].description, "metrics": metrics["held_out"]},
        "report": {"split": parts[1].split, "description": parts[1].description, "metrics": reported[0]["metrics"]},
    }
    if len(reported) > 1:  # one set: the keys it had before sets (tests/test_contracts.py pins them)
        evaluation["reports"] = reported
    if "shared_rows" in reported[0]:
        evaluation["shared_rows"] = reported[0]["shared_rows"]
    return evaluation


__all__ = ["Selection", "SelectionResult", "methods_to_run", "select_soup", "state_loader"]
