"""The pipeline: the one module that wires the stages together.

resolve (pin SHAs) -> structure check (headers only) -> fetch weights -> stream the soup -> provenance -> move the
finished folder into place. Every check that can fail on user input runs before anything is downloaded or written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, distributed, hub, progress
from .compat import (
    CompatReport,
    IngredientFacts,
    SimilarityMeter,
    StaticResult,
    check_before_download,
    leave_out_outliers,
)
from .constants import DEFAULT_MAX_SHARD_SIZE, DTYPE_NAMES, PROVENANCE_FILE, RECIPE_FILE
from .errors import IncompatibleIngredientsError, InvalidSoupArgumentsError, option
from .hub.adapters import attach_bases
from .io import guard
from .io.adapter import ADAPTER_WEIGHTS_NAME, AdapterReader, plan_expansion
from .io.checkpoint import (
    SAFE_WEIGHTS_INDEX_NAME,
    CheckpointReader,
    StructureMap,
    parse_size,
    read_safetensors_header,
    write_index,
)
from .io.confine import allowed_roots, confined
from .io.output import limit_bytes
from .io.staging import check_output, staged_output
from .publish import naming, reproduce
from .publish.card import local_card_metadata
from .selection.results import RESULTS_FILE, ResultsTable
from .soups import SOUPS, SoupContext, SoupMethod, make_method
from .soups.engine import BaseWeights, collect_meter, measure, plan_soup, resolve_device, write_shards

if TYPE_CHECKING:
    from .recipe import Recipe
    from .selection.options import Selection

logger = logging.getLogger(__name__)


@dataclass
class SoupResult:
    """What `soup` made: the folder, the pinned ingredients and the weights used.

    Attributes:
        output_dir (`Path`): the finished soup folder; loads with `from_pretrained`.
        method (`str`): the soup method's name in `SOUPS`.
        weights (`tuple[float, ...]`): the mixing weight of each ingredient, in order.
        ingredients (`list[dict]`): per ingredient, what was asked for and the commit SHA it was pinned to.
        files (`list[str]`): the files written into `output_dir`.
        report (`CompatReport`): the compatibility report, shared-initialization figures included.
        results (`ResultsTable`, *optional*): with a `selection`, every ingredient, soup and ensemble scored on the
            held-out and reported parts (also in `results.json`).
        evaluation (`dict`, *optional*): with a `selection`, the soup's own scores (the `evaluation` of `hfsoup.json`).
        method_record (`dict`): the greedy soup's decisions or the learned soup's weights and losses.
        records (`dict[str, dict]`): with a `selection`, the record of every soup scored (the baselines' too).
        base (`dict`, *optional*): with `base=`, the base model's record (what was asked for, its commit SHA).
    """

    output_dir: Path
    method: str
    weights: tuple[float, ...]
    ingredients: list[dict]
    files: list[str] = field(default_factory=list)
    report: CompatReport | None = None
    results: ResultsTable | None = None
    evaluation: dict | None = None
    method_record: dict = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)
    base: dict | None = None

    @property
    def provenance_path(self) -> Path:
        return self.output_dir / PROVENANCE_FILE


def _check_memory(
    chosen: SoupMethod, selection: Selection | None, facts: IngredientFacts, *, n: int, base: bool, limit: int | None
) -> None:
    """Estimate the memory of the chosen method and every method scored beside it; refuse over `limit`."""
    from .soups.memory import MemoryContext, check_limit, estimate

    methods = [chosen]
    if selection is not None:  # the baselines are made and scored too (`selection.stage.methods_to_run`)
        for item in selection.compared:
            if isinstance(item, SoupMethod) and item.name != chosen.name:
                methods.append(item)
            elif isinstance(item, str) and item in SOUPS and item != chosen.name:
                methods.append(make_method(item))
    context = MemoryContext(
        facts.structure,
        n,
        config=facts.config,
        base=base,
        scored=selection is not None,
        batch_size=selection.batch_size if selection is not None else 32,
        max_length=selection.max_length if selection is not None else None,
    )
    found = estimate(methods, context)
    logger.info("memory: the %s soup needs %s", found.method, found.describe())
    streamed = [name for name, cls in SOUPS.items() if not cls.needs_scores]
    check_limit(found, limit, chosen=chosen.name, streamed=streamed)


def _parse_dtype(dtype: str | None) -> str | None:
    if dtype in (None, "auto"):
        return None
    if dtype not in DTYPE_NAMES:
        raise InvalidSoupArgumentsError(
            f"Unknown output dtype {dtype!r}.", fix=f"Use one of: auto, {', '.join(DTYPE_NAMES)}."
        )
    return dtype


def soup(
    ingredients: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    method: str | SoupMethod = "uniform",
    options: Any = None,
    dtype: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    allow_pickle: bool = False,
    token: str | bool | None = None,
    device: str = "auto",
    force: bool = False,
    align_labels: bool = True,
    resume: bool = False,
    selection: Selection | None = None,
    recipe: dict | None = None,
    base: str | os.PathLike | None = None,
    found: dict | None = None,
    max_memory: str | int | None = None,
) -> SoupResult:
    """Average fine-tuned models named by Hub ID or folder into a new checkpoint folder.

    Args:
        ingredients (`Sequence[str]`):
            At least two models: `org/name`, `org/name@revision` (branch, tag or commit SHA) or local folders.
        output_dir (`str` or `os.PathLike`):
            Where the soup is written. It appears only once complete; an existing folder is kept unless `overwrite`.
        method (`str` or `SoupMethod`, *optional*, defaults to `"uniform"`):
            A method's name in `hfsoup.soups.SOUPS`, or a method object with its options
            (`UniformSoup(weights=[0.5, 0.3, 0.2])`, `GreedySoup(accept="gt")`).
        options (`Options` or `dict`, *optional*):
            With a method's name, its options (`{"weights": [0.5, 0.3, 0.2]}`); see each method's `Options`.
        dtype (`str`, *optional*):
            `float32`, `float16` or `bfloat16` for the output; by default the first ingredient's dtype.
        max_shard_size (`str` or `int`, *optional*, defaults to `"5GB"`):
            Larger outputs are split into shards with a `model.safetensors.index.json`.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing `output_dir`.
        allow_pickle (`bool`, *optional*, defaults to `False`):
            Accept `pytorch_model.bin` ingredients, loaded with `torch.load(weights_only=True)`.
        token (`str` or `bool`, *optional*):
            A Hub token for private repos; by default the one from `HF_TOKEN` or `hf auth login`.
        device (`str`, *optional*, defaults to `"auto"`):
            Where the arithmetic runs: `auto` (a GPU when present), `cpu`, `cuda` or `cuda:N`.
        force (`bool`, *optional*, defaults to `False`):
            Soup even when the compatibility report refuses; the override is recorded in the provenance file.
        align_labels (`bool`, *optional*, defaults to `True`):
            Reorder the classification head rows of an ingredient whose labels are the first's in another order;
            with `False` such ingredients are refused.
        resume (`bool`, *optional*, defaults to `False`):
            Reuse the shards an interrupted run of the same soup completed: each is recomputed from the ingredients
            and compared with the staged bytes (only the write is saved; the staging folder is never trusted).
        selection (`Selection`, *optional*):
            Score on a task: required by the methods that select on held-out scores (`needs_scores`: greedy,
            learned), optional for the others. Every ingredient, the soups and the output ensemble are then scored
            on the held-out and the reported parts, and the table is written beside the soup (`results.json`,
            `.csv`, `.png`).
        recipe (`dict`, *optional*):
            The recipe this soup was cooked from (`Recipe.to_dict()`), recorded in `hfsoup.json` and the model card.
        found (`dict`, *optional*):
            How the ingredients were found on the Hub (`find.FindResult.record()`: the query, the pinned base, the
            passing candidates and the excluded ones with their reasons), recorded in `hfsoup.json` and the card.
        base (`str`, *optional*):
            The shared pretrained model (Hub ID or folder), required by the methods defined by task vectors
            (`needs_base`: task-arithmetic, ties, dare-linear, dare-ties, model-stock, wise-ft). It is pinned, its
            shapes checked against the ingredients' before any download, fetched, measured against every ingredient
            (shared initialization) and recorded in `hfsoup.json`. Its tensor names may lack the task model's prefix
            (a bare `BertModel`); a tensor it lacks (the classifier) is the ingredients' mean.
        max_memory (`str` or `int`, *optional*):
            Refuse (`MemoryLimitError`), before any weight is downloaded, a soup whose memory estimated from the
            safetensors headers exceeds it (`"8GB"`, `"500MB"`, bytes): the scoring model and a batch with a task,
            the learned soup's ingredients, Fisher's and RegMean's statistics. None (the default): no limit.

    Under `accelerate launch` or `torchrun`, the processes split the output shards between them (so use a
    `max_shard_size` that gives at least one shard per process); the output is identical to a single process's.

    Returns:
        `SoupResult`: the output folder, the pinned ingredients and the weights used.

    Example:
        ```py
        >>> import hfsoup
        >>> result = hfsoup.soup(["org/ft-a", "org/ft-b@v1", "./ft-c"], output_dir="soup/")
        >>> result.ingredients[1]["sha"]
        '3f1c...'
        >>> selection = hfsoup.Selection(task="sst2")  # held-out: half of validation; report: the other half
        >>> greedy = hfsoup.soup(["org/ft-a", "org/ft-b", "org/ft-c"], "greedy/", method="greedy", selection=selection)
        >>> greedy.method_record["kept"], greedy.evaluation["report"]["metrics"]
        (['org/ft-b', 'org/ft-a'], {'accuracy': 0.91})
        ```
    """
    # Everything that depends only on the arguments is checked first: no network, no disk.
    specs = [os.fspath(i) for i in ingredients]
    fewest = getattr(method, "min_ingredients", None) or getattr(SOUPS.get(method), "min_ingredients", 2)  # type: ignore[arg-type]
    if len(specs) < fewest or not specs:
        alone = " (WiSE-FT takes one fine-tune and --base)" if fewest == 2 else ""
        raise InvalidSoupArgumentsError(
            f"A soup needs at least {'two ingredients' if fewest == 2 else 'one ingredient'}; got {len(specs)} "
            f"({', '.join(specs) or 'none'}){alone}.",
            fix="Name two or more fine-tuned models of the same base, e.g. hfsoup soup org/ft-a org/ft-b -o out/.",
        )
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise InvalidSoupArgumentsError(
            f"Ingredient {repeated[0]!r} is named more than once.",
            fix="Name each ingredient once; to give one model more weight, use weights: "
            f"{option('weights', [0.6, 0.4])}.",
        )
    chosen = make_method(method, options)
    method = chosen.name
    if chosen.needs_base and base is None:
        raise InvalidSoupArgumentsError(
            f"A {method} soup is defined relative to the pretrained model the ingredients were fine-tuned from "
            "(their task vectors are each fine-tune minus it), and no base was given.",
            fix=f"Name it: {option('base', 'org/pretrained', within='hfsoup.soup')} (a Hub ID or a folder; the "
            "recipe key is base:).",
        )
    if chosen.needs_scores and selection is None:
        raise InvalidSoupArgumentsError(
            f"A {method} soup is selected by held-out scores, so it needs a task to score on.",
            fix=f"Name the task to score on: {option('task', 'sst2', within='selection=Selection')}.",
        )
    candidates = chosen.candidates()  # options given as lists: one soup per candidate, chosen on held-out data
    if len(candidates) > 1 and selection is None:
        _refuse_unscored_candidates(chosen)
    if len(candidates) == 1:
        chosen = candidates[0][1]  # a one-item list is that value
    # A method that needs no data decides now, before any download (and its errors come first): every candidate.
    decided = None
    if not chosen.needs_scores:
        decided = [candidate.run(SoupContext(names=specs)) for _, candidate in candidates][0]
    mixing = None if decided is None else decided.mixing
    merge = None if decided is None else decided.merge
    # What the options mean for this many ingredients (after `run`, whose own checks say more where it has them).
    for _, candidate in candidates:
        for key, message in candidate.problems(len(specs)):
            raise InvalidSoupArgumentsError(
                f"Invalid {method} soup: {message}.",
                fix=f"Check the {key} option against the {len(specs)} ingredients given (see hfsoup soup --help).",
            )
    asked = selection  # as given, for recipe.yaml (the defaults filled in below are not the user's choices)
    if selection is not None:
        selection = _default_baselines(selection, has_base=base is not None, n_ingredients=len(specs))
        selection.check(chosen)
    out_dtype = _parse_dtype(dtype)
    device = resolve_device(device)  # a missing GPU is refused before any work
    try:
        shard_bytes = parse_size(max_shard_size)
    except ValueError as e:
        raise InvalidSoupArgumentsError(f"Invalid --max-shard-size: {e}.") from e
    try:
        memory_limit = limit_bytes(max_memory)
    except ValueError as e:
        raise InvalidSoupArgumentsError(f"Invalid --max-memory: {e}.", fix="Give a size such as 8GB, or none.") from e
    refs = [hub.parse_ingredient(spec) for spec in specs]  # local only: a Hub ID is not looked up yet
    naming.refuse_same_folder(specs, [ref.path for ref in refs])
    base_ref = None if base is None else hub.parse_ingredient(os.fspath(base))
    data_files = [f for fs in ((selection.data_files or {}) if selection else {}).values() for f in _listed(fs)]
    local_inputs = [(s, r.path) for s, r in zip(specs, refs, strict=True) if r.path]
    if base_ref is not None and base_ref.path is not None:
        local_inputs.append((os.fspath(base), base_ref.path))
    protected = guard.inputs_protected(local_inputs, files=data_files)
    out = check_output(output_dir, overwrite=overwrite, protected=protected)
    # What the soup publishes names a local folder by its place under the current folder, or its name alone.
    labels = naming.local_labels(specs, base=Path.cwd(), local=[ref.is_local for ref in refs])
    refs = [replace(ref, spec=label) if ref.is_local else ref for ref, label in zip(refs, labels, strict=True)]
    if base_ref is not None and base_ref.is_local:
        label = naming.local_labels([os.fspath(base)], base=Path.cwd(), local=[True])[0]
        base_ref = replace(base_ref, spec=label)

    progress.stage("Pinning %s to commits", _counted(len(refs), "ingredient"))
    pinned = [hub.resolve(ref, token=token, allow_pickle=allow_pickle) for ref in refs]
    naming.refuse_same_commit(specs, [(i.ref.repo_id, i.sha) if i.sha else None for i in pinned])  # type: ignore[misc]
    base_pinned = None
    if base_ref is not None and any(i.is_adapter for i in pinned):  # --base is also the adapters' base
        base_pinned = hub.resolve(base_ref, token=token, allow_pickle=allow_pickle)
    attach_bases(pinned, base=base_pinned, token=token, allow_pickle=allow_pickle)
    local_bases = [
        (f"{i.name}'s base", i.adapter_base.ref.path) for i in pinned if i.adapter_base and i.adapter_base.ref.path
    ]
    if local_bases:  # a local base an adapter's config names is an input too: the output must not destroy it
        protected += guard.inputs_protected(local_bases)  # type: ignore[arg-type]
        guard.refuse_collisions(out, protected)
    progress.stage("Checking that they can be merged (configs, tokenizers, labels, safetensors headers)")
    facts = gather_facts(pinned, token=token, allow_pickle=allow_pickle)
    report, static = check_before_download(facts, align_labels=align_labels)
    _refuse_unless_forced(report, force=force)  # before a single weight file is downloaded
    if base_ref is not None:
        base_pinned = base_pinned or hub.resolve(base_ref, token=token, allow_pickle=allow_pickle)
        gather_facts([base_pinned], token=token, allow_pickle=allow_pickle)  # its headers: no weights yet
        _check_base_shapes(base_pinned, pinned[0], method)
    # The memory the run needs, from the headers: refused over --max-memory before any weight is downloaded.
    _check_memory(chosen, selection, facts[0], n=len(pinned), base=base_pinned is not None, limit=memory_limit)

    _stage_fetch(pinned, base_pinned)
    readers = [_fetch_and_open(i, token=token, allow_pickle=allow_pickle) for i in pinned]
    base_weights = None
    if base_pinned is not None:
        base_reader = CheckpointReader(hub.fetch(base_pinned, token=token), allow_pickle=allow_pickle)
        base_weights = BaseWeights.open(base_reader, readers[0].structure)
    alignment = _alignment_kwargs(pinned, static)
    selected = None
    left_out: dict[int, str] = {}
    measured = chosen.drops_ingredients and selection is not None
    if measured:
        # A method that drops ingredients needs the verdicts before it searches: one weights pass measures them,
        # the outliers are left out (weight 0), and only what else fails still refuses.
        progress.stage("Measuring shared initialization, to leave outliers out before the search")
        left_out = _leave_out(pinned, readers, report, alignment)
        _refuse_unless_forced(report, force=force)
    if selection is not None:  # Scored before anything is written: a failure leaves no output behind.
        from .selection.stage import select_soup

        skipped = set(alignment["exclude"])
        selected = select_soup(
            pinned,
            readers,
            method=chosen,
            selection=selection,
            names=sorted(n for n in readers[0].structure if n not in skipped),
            alignment=alignment["alignment"],
            label_indexed=sorted(alignment["label_indexed"]),
            token=token,
            excluded=left_out,
            base=base_weights,
        )
        mixing, merge = selected.mixing, selected.merge
    assert mixing is not None
    provenance = {
        "hfsoup_version": __version__,
        "hfsoup_install": reproduce.install_record(),  # the card's install line: how this hfsoup was installed
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "weights": list(mixing.weights),
        "dtype": dtype or "auto",
        "ingredients": [_provenance(i) for i in pinned],
        "config_from": (pinned[0].adapter_base or pinned[0]).name,
    }
    if recipe is not None:
        provenance["recipe"] = recipe
    if found is not None:
        provenance["found"] = found
    if base_pinned is not None:
        provenance["base"] = _provenance(base_pinned)
        missing = sorted(
            n
            for n, m in readers[0].structure.items()
            if m.is_float and base_weights.get_array(n) is None  # type: ignore[union-attr]
        )
        if missing:
            provenance["base"]["missing_tensors"] = missing
            if chosen.needs_base:
                logger.warning(
                    "the base lacks %d of the soup's tensors (e.g. %s): they are the ingredients' mean",
                    len(missing),
                    missing[0],
                )
    if decided is not None and decided.record and selection is None:
        provenance[method] = decided.record  # the options it was made with, for the card's command
    if left_out:
        provenance["excluded"] = [{"ingredient": pinned[i].name, "reason": why} for i, why in sorted(left_out.items())]
    if selected is not None:
        provenance["evaluation"] = selected.evaluation
        if selected.records.get(method):
            provenance[method] = selected.records[method]
        baselines = {name: record for name, record in selected.records.items() if name != method and record}
        if baselines:  # the baselines' greedy decisions and learned weights, for the results table's rows
            provenance["baselines"] = baselines
    identity = [_identity(i) for i in pinned] + [method, list(mixing.weights), mixing.per_tensor, alignment]
    if base_pinned is not None or merge is not None:  # only then: the fingerprints of earlier soups stay as they were
        identity += [
            None if base_pinned is None else _identity(base_pinned),
            mixing.base_weight,
            # The chosen candidate's options, not the others' scores: its weights are what they are however chosen.
            {k: v for k, v in (provenance.get(method) or {}).items() if k != "candidates"},
        ]
    plan = plan_soup(
        readers,
        dtype=out_dtype,
        max_shard_size=shard_bytes,
        exclude=alignment.pop("exclude"),
        identity=identity,
    )
    procs = distributed.current()
    meter = SimilarityMeter([i.name for i in pinned], base=None if base_pinned is None else base_pinned.name)
    progress.stage(
        "Writing the %s soup: %s in %s",
        method,
        _counted(sum(len(names) for names in plan.shards), "tensor"),
        _counted(len(plan.files), "shard"),
    )
    with staged_output(out, overwrite=overwrite, resume=resume, is_main=procs.is_main, protected=protected) as staging:
        procs.barrier()  # the main process has prepared the staging folder
        try:
            reused = write_shards(
                plan,
                readers,
                mixing,
                staging,
                shard_ids=procs.mine(len(plan.files)),
                meter=meter,
                device=device,
                metadata={"hfsoup_method": method},
                resume=resume,
                base=base_weights,
                merge=merge,
                **alignment,
            )
        except IncompatibleIngredientsError as e:
            # The engine meets unequal integer buffers mid-stream and knows no report: the refusal carries this one.
            if e.report is not None:
                raise
            report.add("error", "dtypes", None, e.message, e.fix)
            raise IncompatibleIngredientsError(e.message, fix=e.fix, report=report) from e
        if reused:
            logger.warning("resumed: reused %d completed shards (recomputed and compared byte for byte)", reused)
        procs.barrier()  # every shard is on disk
        if procs.is_main:
            if not measured:
                # Shared initialization was measured in the same pass that wrote the shards; a refusal now discards
                # them. (A method that drops ingredients had it measured, and judged, before selection.)
                collect_meter(plan, staging, meter)
                meter.judge(report)
                _refuse_unless_forced(report, force=force)
            files = list(plan.files)
            if len(plan.files) > 1:
                write_index(staging, plan.weight_map(), plan.total_size)
                files.append(SAFE_WEIGHTS_INDEX_NAME)
            files += _copy_support_files(pinned[0].adapter_base or pinned[0], staging, out_dtype)
            public = _public_names(refs, specs, data_files) + _adapter_base_names(pinned)
            if selected is not None:
                files += selected.table.save(staging, plot=selection.plot)  # type: ignore[union-attr]
                table = json.loads((staging / RESULTS_FILE).read_text())
                (staging / RESULTS_FILE).write_text(json.dumps(naming.scrub_paths(table, public), indent=2) + "\n")
            data = reproduce.local_data(asked)
            if data:  # they cannot be pushed: named, with what tells a copy of them from another file
                provenance["local_data_files"] = data
            made = reproduce.soup_recipe(
                pinned,
                method=chosen,
                selection=asked,
                evaluation=provenance.get("evaluation"),
                # The adapters' base pinned too: a config naming it without a revision would take a moved main.
                base=base_pinned or next((i.adapter_base for i in pinned if i.adapter_base), None),
                dtype=dtype,
                max_shard_size=max_shard_size,
                force=force,
                cooked=recipe,
            )
            text = reproduce.recipe_text(naming.scrub_paths(made, public), data_files=data)
            (staging / RECIPE_FILE).unlink(missing_ok=True)  # a resumed staging folder's entry: replaced, not followed
            (staging / RECIPE_FILE).write_text(text)
            files.append(RECIPE_FILE)
            provenance["compatibility"] = _compat_provenance(report, force=force)
            provenance["files"] = sorted(files)
            provenance = naming.scrub_paths(provenance, public)
            (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
            files.append(PROVENANCE_FILE)
    procs.barrier()  # the output is in place before any process returns
    for reader in readers:
        reader.close()
    if base_weights is not None:
        base_weights.reader.close()
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    logger.info("wrote a %s soup of %d ingredients to %s", method, len(pinned), out)
    return SoupResult(
        out,
        method,
        mixing.weights,
        provenance["ingredients"],  # type: ignore[arg-type]
        files,
        report,
        selected.table if selected else None,
        selected.evaluation if selected else None,
        selected.records.get(method, {}) if selected else {},
        selected.records if selected else {},
        provenance.get("base"),
    )


def _default_baselines(selection: Selection, *, has_base: bool, n_ingredients: int) -> Selection:
    """The selection with its default baselines filled in (the weighted averages: `default_baseline`); a baseline
    named that is defined relative to the base is refused without one, and one that cannot take this many
    ingredients (SLERP takes two) is refused."""
    from .selection.options import default_baselines
    from .soups import SOUPS

    if selection.compare is None:
        return replace(selection, compare=list(default_baselines()))
    for item in selection.compare:
        cls = type(item) if isinstance(item, SoupMethod) else SOUPS.get(item)
        if cls is not None and cls.needs_base and not has_base:
            raise InvalidSoupArgumentsError(
                f"The {cls.name} baseline merges task vectors (each fine-tune minus the base), and no base was given.",
                fix=f"Name the pretrained model with {option('base', 'org/pretrained', within='hfsoup.soup')}, or "
                f"leave {cls.name} out of {option('compare', metavar='LIST', within='Selection')}.",
            )
        baseline = item if isinstance(item, SoupMethod) else make_method(item) if cls is not None else None
        for _, candidate in baseline.candidates() if baseline is not None else []:
            for _, message in candidate.problems(n_ingredients):
                raise InvalidSoupArgumentsError(
                    f"Invalid {cls.name} baseline: {message}.",  # type: ignore[union-attr]
                    fix=f"Leave it out of {option('compare', metavar='LIST', within='Selection')}.",
                )
    return selection


def _refuse_unscored_candidates(method: SoupMethod) -> None:
    """Several candidates without a task: nothing could choose between them."""
    import dataclasses

    from .options import candidate_lists, flag_of

    fields = {f.name: f for f in dataclasses.fields(method.options)}
    lists = {k: v for k, v in candidate_lists(method.options).items() if len(v) > 1}
    name, values = next(iter(lists.items()))
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    raise InvalidSoupArgumentsError(
        f"The {method.name} option {flag_of(fields[name])} ({name}=) has {len(values)} candidates ({shown}), and "
        "candidates are chosen between by their held-out scores: without a task there is nothing to choose with.",
        fix=f"Add --task (e.g. --task sst2; Selection(task=...), or evaluation.task in a recipe) to score each "
        f"candidate on held-out data and keep the best, or give {flag_of(fields[name])} one value.",
    )


def _check_base_shapes(base: hub.PinnedIngredient, first: hub.PinnedIngredient, method: str) -> None:
    """Refuse a base whose tensors do not have the ingredients' shapes (from the headers, before any download).
    Names map as in `BaseWeights` (a bare `BertModel` base lacks the task model's `bert.` prefix)."""
    names = [n for n, m in first.structure.items() if m.is_float]
    mapped = {n: b for n in names if (b := _base_name(n, base.structure)) is not None}
    if not mapped:
        raise IncompatibleIngredientsError(
            f"The base {base.name!r} shares no tensor with the ingredients (e.g. the ingredients' {names[0]!r} is not "
            "in it, with or without its first name component), so it cannot be the model they were fine-tuned from.",
            fix="Name the pretrained model the ingredients were fine-tuned from (their cards' base_model).",
        )
    for name, other in sorted(mapped.items()):
        mine, theirs = list(first.structure[name].shape), list(base.structure[other].shape)
        if mine != theirs:
            raise IncompatibleIngredientsError(
                f"The base {base.name!r} has tensor {other!r} of shape {theirs}, where the ingredients' {name!r} has "
                f"shape {mine}: a {method} soup subtracts the base from each ingredient, tensor by tensor, so the "
                "shapes must be the same.",
                fix="Name the pretrained model the ingredients were fine-tuned from (their cards' base_model), "
                "with the same vocabulary and layer sizes.",
            )


def _base_name(name: str, structure: StructureMap) -> str | None:
    """The base's name for the soup's tensor `name` (the rule of `BaseWeights.open`), or None."""
    if name in structure:
        return name
    if "." in name and name.split(".", 1)[1] in structure:
        return name.split(".", 1)[1]
    return None


def _listed(files: str | Sequence[str]) -> list[str]:
    return [files] if isinstance(files, str) else list(files)


def _provenance(ingredient: hub.PinnedIngredient) -> dict:
    """An ingredient's record in `hfsoup.json`; a local one carries its card's metadata, since its path is not
    recorded and the card is built later from the output folder alone."""
    record = ingredient.provenance()
    if ingredient.ref.path is not None and (card := local_card_metadata(ingredient.ref.path)):
        record["card"] = card
    return record


def _public_names(refs: list[hub.IngredientRef], specs: list[str], data_files: list[str]) -> list[tuple[str, str]]:
    """Local paths that may appear in the provenance (in a finding, a data file's record) and what replaces them."""
    cwd = Path.cwd()
    pairs = [(str(Path.home()), "~"), (os.path.abspath(cwd), "."), (os.path.realpath(cwd), ".")]
    for ref, spec in zip(refs, specs, strict=True):
        if ref.path is not None:
            pairs += [(os.path.abspath(os.path.expanduser(spec)), ref.spec), (str(ref.path), ref.spec)]
    for f in data_files:
        public = naming.public_path(f, cwd)
        pairs += [(os.path.abspath(f), public), (os.path.realpath(f), public)]
    return pairs


def _adapter_base_names(pinned: list[hub.PinnedIngredient]) -> list[tuple[str, str]]:
    """A local adapter base's paths, and the path its config names it by (peft's card repeats it), as its spec."""
    pairs = []
    for ingredient in pinned:
        base, config = ingredient.adapter_base, ingredient.adapter_config
        if base is None or base.ref.path is None:
            continue
        pairs.append((str(base.ref.path), base.ref.spec))
        if config is not None and config.base and os.path.isabs(config.base):
            pairs.append((config.base.rstrip("/"), base.ref.spec))
    return pairs


def _identity(ingredient: hub.PinnedIngredient) -> object:
    """What pins an ingredient's weights, for the resume fingerprint: the commit SHA, or a local file's size+mtime
    (an adapter's with its base's)."""
    if ingredient.adapter_base is not None:
        return [_own_identity(ingredient), _own_identity(ingredient.adapter_base)]
    return _own_identity(ingredient)


def _own_identity(ingredient: hub.PinnedIngredient) -> object:
    if ingredient.sha:
        return [ingredient.name, ingredient.sha]
    folder = ingredient.local_dir
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())  # type: ignore[union-attr]
    return [ingredient.name, stats]


def check(
    ingredients: Sequence[str | os.PathLike],
    *,
    base: str | os.PathLike | None = None,
    weights: bool = True,
    align_labels: bool = True,
    allow_pickle: bool = False,
    token: str | bool | None = None,
) -> CompatReport:
    """Decide whether `ingredients` can be souped, and say why.

    First everything that needs no weights (config, card, tokenizer files, safetensors headers read remotely). Only if
    that passes, and `weights=True`, the weights are downloaded and streamed once to measure shared initialization
    (pairwise, and against `base` when given).

    Args:
        ingredients (`Sequence[str]`): Hub IDs (`org/name[@revision]`) or folders.
        base (`str`, *optional*): the pretrained model the ingredients claim to be fine-tuned from.
        weights (`bool`, *optional*, defaults to `True`): measure shared initialization (downloads the weights);
            with `False`, it is estimated from a few kilobytes of each remote ingredient (`find.sampled`).
        align_labels (`bool`, *optional*, defaults to `True`): accept the same labels in another order.
        allow_pickle (`bool`, *optional*, defaults to `False`): accept `pytorch_model.bin` (weights_only loading).
        token (`str`, *optional*): a Hub token for private repos.

    Returns:
        `CompatReport`: `report.ok` says whether souping may proceed; `report.format_table()` explains.

    Example:
        ```py
        >>> report = hfsoup.check(["org/ft-a", "org/ft-b"], base="org/base")
        >>> report.ok, [f.message for f in report.errors]
        (True, [])
        ```
    """
    specs = [os.fspath(i) for i in ingredients]
    if len(specs) < 2 and base is None:
        raise InvalidSoupArgumentsError(
            f"Checking needs at least two ingredients, or one and --base; got {len(specs)}.",
            fix=f"Name two or more fine-tuned models, or add {option('base', metavar='MODEL')}.",
        )
    progress.stage("Pinning %s to commits", _counted(len(specs), "ingredient"))
    pinned = [hub.resolve(spec, token=token, allow_pickle=allow_pickle) for spec in specs]
    base_pinned = None
    if base is not None and any(i.is_adapter for i in pinned):  # --base is also the adapters' base
        base_pinned = hub.resolve(os.fspath(base), token=token, allow_pickle=allow_pickle)
    attach_bases(pinned, base=base_pinned, token=token, allow_pickle=allow_pickle)
    progress.stage("Checking configs, tokenizers, labels and safetensors headers (no weights yet)")
    facts = gather_facts(pinned, token=token, allow_pickle=allow_pickle)
    report, static = check_before_download(facts, align_labels=align_labels)
    if not weights and report.ok:  # the sampled estimate: a few kB of each remote ingredient, by Range requests
        from .find.sampled import judge_sampled

        reference = base_pinned or (hub.resolve(os.fspath(base), token=token) if base is not None else None)
        if reference is not None and not reference.structure and not reference.ref.is_local:
            gather_facts([reference], token=token, allow_pickle=allow_pickle)
        reference = reference or next((i for i in pinned if i.locations and not i.is_adapter), None)
        if reference is not None:
            judge_sampled(report, pinned, reference, token=token)
    if not weights or not report.ok:
        return report
    _stage_fetch(pinned, base_pinned)
    readers = [_fetch_and_open(i, token=token, allow_pickle=allow_pickle) for i in pinned]
    base_weights = None
    if base is not None:
        base_ingredient = base_pinned or hub.resolve(os.fspath(base), token=token, allow_pickle=allow_pickle)
        base_reader = CheckpointReader(hub.fetch(base_ingredient, token=token), allow_pickle=allow_pickle)
        base_weights = BaseWeights.open(base_reader, readers[0].structure)
    meter = SimilarityMeter([i.name for i in pinned], base=os.fspath(base) if base is not None else None)
    progress.stage("Measuring shared initialization: every tensor of every ingredient, compared")
    measure(readers, meter, base=base_weights, **_alignment_kwargs(pinned, static))
    meter.judge(report)
    return report


def _leave_out(
    pinned: list[hub.PinnedIngredient], readers: list[CheckpointReader], report: CompatReport, alignment: dict
) -> dict[int, str]:
    """Measure shared initialization now and leave out the ingredients it blames (a minority): position -> why."""
    meter = SimilarityMeter([i.name for i in pinned])
    measure(readers, meter, **alignment)
    meter.judge(report)
    reasons = leave_out_outliers(report)
    for name, why in reasons.items():
        logger.info("leaving %s out of the soup: %s", name, why)  # the report's warning says so to the user
    return {i: reasons[ingredient.name] for i, ingredient in enumerate(pinned) if ingredient.name in reasons}


def _alignment_kwargs(pinned: list[hub.PinnedIngredient], static: StaticResult) -> dict:
    position = {ingredient.name: i for i, ingredient in enumerate(pinned)}
    return {
        "alignment": {position[spec]: order for spec, order in static.label_alignment.items()},
        "label_indexed": static.label_indexed,
        "exclude": static.skipped_tied,
    }


def _refuse_unless_forced(report: CompatReport, *, force: bool) -> None:
    if report.ok:
        return
    if force:
        logger.warning("souping despite a failed compatibility check (--force): %s", report.summary())
        return
    raise IncompatibleIngredientsError.from_report(
        report, fix=f"Run 'hfsoup check' on them for the full report; {option('force')} soups anyway."
    )


def _compat_provenance(report: CompatReport, *, force: bool) -> dict:
    data = report.to_dict()
    data["forced"] = bool(force and not report.ok)
    data.pop("ingredients", None)
    return data


def gather_facts(
    pinned: list[hub.PinnedIngredient], *, token: str | bool | None, allow_pickle: bool
) -> list[IngredientFacts]:
    """Configs, cards, tokenizers and tensor structure of every ingredient, from small files and headers only."""
    facts = []
    for ingredient in pinned:
        if ingredient.adapter_base is not None:
            facts.append(_adapter_facts(ingredient, token=token, allow_pickle=allow_pickle))
            continue
        folder = hub.fetch(ingredient, token=token, weights=False)
        structure: StructureMap | None = hub.remote_structure(ingredient, token=token)
        if structure is None:  # local folder or pickle weights: read what is on disk
            hub.fetch(ingredient, token=token)
            with CheckpointReader(ingredient.local_dir, allow_pickle=allow_pickle) as reader:  # type: ignore[arg-type]
                structure = reader.structure
        ingredient.structure = structure
        facts.append(IngredientFacts.load(ingredient.name, ingredient.sha, folder, structure))
    return facts


def _adapter_facts(
    ingredient: hub.PinnedIngredient, *, token: str | bool | None, allow_pickle: bool
) -> IngredientFacts:
    """An adapter's facts are its merged model's: the base's config, tokenizer and card, and the tensors the
    adapter makes of the base's, planned from the two headers (read remotely: no weights downloaded)."""
    base = ingredient.adapter_base
    assert base is not None and ingredient.adapter_config is not None
    if not base.structure:
        gather_facts([base], token=token, allow_pickle=allow_pickle)
    structure = hub.remote_structure(ingredient, token=token)
    if structure is None:  # a local adapter, or HF_HUB_OFFLINE: the header of the file on disk
        folder = hub.fetch(ingredient, token=token)
        where = f"Adapter {ingredient.name!r}"
        path = confined(folder, ADAPTER_WEIGHTS_NAME, where=where, what="adapter weights")
        structure = read_safetensors_header(path, where=f"{where}: {ADAPTER_WEIGHTS_NAME}")
    where = f"Adapter {ingredient.name!r} on {base.name!r}"
    expansion = plan_expansion(base.structure, structure, ingredient.adapter_config, where=where)
    ingredient.structure = expansion.structure
    return IngredientFacts.load(
        ingredient.name, ingredient.sha, hub.fetch(base, token=token, weights=False), ingredient.structure
    )


def _counted(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _stage_fetch(pinned: Sequence[hub.PinnedIngredient], base: hub.PinnedIngredient | None) -> None:
    remote = sum(1 for i in [*pinned, *([base] if base else [])] if not i.ref.is_local)
    if remote:
        progress.stage(
            "Fetching the weights of %s (into the Hub cache, each file checked against its checksum)",
            _counted(remote, "model"),
        )
    else:
        progress.stage("Opening the weights of %s", _counted(len(pinned), "ingredient"))


def _fetch_and_open(
    ingredient: hub.PinnedIngredient, *, token: str | bool | None, allow_pickle: bool
) -> CheckpointReader | AdapterReader:
    """Download an ingredient's weights (an adapter's, and its base's) and open them for the engine."""
    hub.fetch(ingredient, token=token)
    if ingredient.adapter_base is None:
        return CheckpointReader(ingredient.local_dir, allow_pickle=allow_pickle)  # type: ignore[arg-type]
    base = CheckpointReader(hub.fetch(ingredient.adapter_base, token=token), allow_pickle=allow_pickle)
    where = f"Adapter {ingredient.name!r} on {ingredient.adapter_base.name!r}"
    return AdapterReader(base, ingredient.local_dir, ingredient.adapter_config, where=where)  # type: ignore[arg-type]


def _copy_support_files(first: hub.PinnedIngredient, staging: Path, dtype: str | None) -> list[str]:
    """Config, tokenizer and processor files, always from the first ingredient so the choice is reproducible.

    The ingredient's model card is not copied: it describes that model, not the soup.
    """
    assert first.local_dir is not None
    copied = []
    roots = allowed_roots(first.local_dir)
    for name in first.files:
        if name == hub.CARD_FILE:
            continue
        # Checked again here, just before the read: only a regular file inside the folder (or its snapshot's blob
        # store) is copied, and the copy is a new regular file, never a link.
        source = confined(first.local_dir, name, where=f"Ingredient {first.name!r}", roots=roots)
        if not source.is_file():
            continue
        (staging / name).unlink(missing_ok=True)  # a resumed staging folder's entry is replaced, never followed
        if name == "config.json" and dtype is not None:
            config = json.loads(source.read_text())
            for key in ("dtype", "torch_dtype"):
                if key in config or key == "dtype":
                    config[key] = dtype
            (staging / name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copyfile(source, staging / name)
        copied.append(name)
    return copied


@dataclass
class CookResult:
    """What `cook` did: the soup (None when a finished soup of the same recipe was reused) and the push."""

    output_dir: Path
    soup: SoupResult | None
    reused: bool
    push: object | None = None


def cook_recipe(
    recipe: str | os.PathLike | Recipe,
    *,
    output_dir: str | os.PathLike | None = None,
    push_to: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    hub_metrics: bool | None = None,
    refresh: bool = False,
    max_memory: str | int | None = None,
) -> CookResult:
    """Run a recipe: fetch, check, soup (scored and selected when it names a task), then card and push.

    A rerun picks up where an interrupted one stopped: a finished output of the same recipe is not made again, an
    interrupted soup resumes from its completed shards, and pushing an unchanged soup makes no new commit.

    Args:
        recipe (`str`, `os.PathLike` or `Recipe`): a YAML recipe file, or a loaded one.
        output_dir (`str` or `os.PathLike`, *optional*): overrides the recipe's `output.dir`.
        push_to (`str`, *optional*): `org/name` to push to, overriding (or adding) the recipe's `push.repo_id`.
        token (`str`, *optional*): the Hub token for private ingredients and the push.
        overwrite (`bool`, *optional*): replace an existing output made by something else (or `output.overwrite`).
        dry_run (`bool`, *optional*): make the soup, but only show what would be pushed.
        hub_metrics (`bool`, *optional*): score with the Hub's metric module (see `Selection`).
        refresh (`bool`, *optional*): for a recipe whose ingredients are a search (`ingredients: {search: ...}`),
            search the Hub again instead of reusing the pinned list its finished output records; the soup is made
            again only when the list changed.
        max_memory (`str` or `int`, *optional*): overrides the recipe's `output.max_memory` (see `soup`); `"none"`
            lifts it.

    Example:
        ```py
        >>> result = hfsoup.cook_recipe("recipes/glue-bert-base-mrpc.yaml", push_to="me/bert-mrpc-soup")
        ```
    """
    from .recipe import Recipe, load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    from .recipe import protected_inputs

    out = Path(output_dir if output_dir is not None else recipe.output.dir).expanduser().resolve()
    protected = protected_inputs(recipe)
    guard.refuse_collisions(out, protected)  # an -o given on the command line meets the recipe's rules too
    as_data = recipe.to_dict()
    soup_result = None
    reused = not overwrite and _made_by(out, as_data)
    specs = [i.spec for i in recipe.ingredients]
    found = None
    if recipe.search is not None and (refresh or not reused):
        found, specs = _search(recipe, token=token)
        if reused and specs != _recorded_specs(out):  # the Hub changed: soup the new list, over our own output
            logger.warning("the search finds other ingredients than %s was made of; cooking again", out)
            reused, overwrite = False, True
    if reused:
        logger.warning("%s already holds the soup of this recipe; it is reused (delete it to cook again)", out)
    else:
        # Before the sweep trains for hours: the output must be writable under the rules `soup` applies again.
        check_output(out, overwrite=overwrite or recipe.output.overwrite, protected=protected)
        if recipe.sweep is not None:  # the ingredients are the sweep's runs: train those not complete yet
            from .finetune import run_sweep

            specs = [os.fspath(output) for output in run_sweep(recipe.sweep, token=token)]
        soup_result = soup(
            specs,
            out,
            method=recipe.method.make(),
            dtype=recipe.output.dtype,
            max_shard_size=recipe.output.max_shard_size,
            max_memory=recipe.output.max_memory if max_memory is None else max_memory,
            overwrite=overwrite or recipe.output.overwrite,
            token=token,
            force=recipe.force,
            resume=True,  # shards completed by an interrupted run of this recipe are reused (recomputed and compared)
            selection=replace(recipe.evaluation, hub_metrics=hub_metrics) if recipe.evaluation else None,
            recipe=as_data,
            base=recipe.base,
            found=found,
        )
    pushed = None
    repo_id = push_to or (recipe.push.repo_id if recipe.push else None)
    if repo_id is not None:
        from .publish.target import Push
        from .publish.upload import push

        # The recipe's push options, the repo overridden by --push: the fields are push()'s keywords.
        options = dataclasses.replace(recipe.push or Push(repo_id), repo_id=repo_id)
        pushed = push(out, token=token, dry_run=dry_run, **dataclasses.asdict(options))
    return CookResult(out, soup_result, reused, pushed)


def _search(recipe: Recipe, *, token: str | None) -> tuple[dict, list[str]]:
    """A search recipe's ingredients: the passing children, pinned, and the record of how they were found."""
    from .find import find_ingredients, refuse_unless_enough

    result = find_ingredients(**dataclasses.asdict(recipe.search), token=token)
    passed = refuse_unless_enough(result, at_least=SOUPS[recipe.method.name].min_ingredients)
    for candidate in result.refused:
        logger.warning("excluded %s: %s", candidate.spec, "; ".join(candidate.reasons))
    return result.to_dict(), [c.spec for c in passed]


def _recorded_specs(out: Path) -> list[str]:
    """The pinned ingredients a finished soup was made of (`repo@sha`), from its `hfsoup.json`."""
    try:
        provenance = json.loads((out / PROVENANCE_FILE).read_text())
        return [f"{i['repo_id']}@{i['sha']}" for i in provenance["ingredients"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _made_by(out: Path, recipe: dict) -> bool:
    """Whether `out` is a finished soup of exactly this recipe."""
    try:
        provenance = json.loads((out / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return _comparable(provenance.get("recipe")) == _comparable(json.loads(json.dumps(recipe)))


def _comparable(recipe: object) -> object:
    """A recipe record as compared: the method with only its own options, the evaluation without the options left
    at None (absent from records written before they existed), and one reported set as a string. Before methods
    declared their options, `hfsoup.json` recorded every method's options at their defaults (`{name: greedy, accept:
    ge, steps: 20, ...}`); a soup cooked then is still this recipe's soup. `report: [validation]` is `report:
    validation`, the only form before several sets could be reported. The output's `max_memory` is left out."""
    if not isinstance(recipe, dict):
        return recipe
    output = recipe.get("output")
    if isinstance(output, dict):  # a memory limit (`max_memory`, added since) refuses or not: it makes no other soup
        recipe = {**recipe, "output": {k: v for k, v in output.items() if k != "max_memory"}}
    evaluation = recipe.get("evaluation")
    if isinstance(evaluation, dict):
        # An option added since (`kind`) is absent from older records: there, absent means its default, None.
        evaluation = {k: v for k, v in evaluation.items() if v is not None}
        if isinstance(evaluation.get("report"), list) and len(evaluation["report"]) == 1:
            evaluation["report"] = evaluation["report"][0]
        recipe = {**recipe, "evaluation": evaluation}
    if not isinstance(recipe.get("method"), dict):
        return recipe
    from .soups import SOUPS

    method = recipe["method"]
    cls = SOUPS.get(method.get("name", "uniform"))
    if cls is None:
        return recipe
    own = {f.name for f in dataclasses.fields(cls.Options)}
    return {**recipe, "method": {k: v for k, v in method.items() if k == "name" or k in own}}
