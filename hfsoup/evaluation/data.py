"""Evaluation data: load a task's split with `datasets`, check its labels, tokenize it once, batch it by length.

Tokenization runs through `Dataset.map` under a fingerprint of (dataset version, tokenizer, predictor, task,
max_length), so `datasets` caches it next to the data: evaluating many models of one tokenizer on the same data (a
greedy soup search) pays for it once, and a second run of `hfsoup eval` not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EvaluationError, option
from ..hub.errors import HubTarget, failure, hub_errors, raise_translated
from ..hub.retries import with_retries
from ..scrub import cut
from .splitspec import SplitSpec, parse_split
from .tasks import GLUE_DATASET, Task, normalize_label

logger = logging.getLogger(__name__)

# The data options as fixes name them: the same keywords in evaluate_model(), Evaluator and Selection.
_DATASET, _DATA_FILES = option("dataset", ...), option("data_files", ...)

#: Bump when `encode` changes what it writes, so stale cached encodings are not reused.
ENCODING_VERSION = 1
#: The `datasets` builder of each data file suffix.
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def data_files_problem(value: Any) -> str | None:
    """Why `value` is not a mapping of split name to a file or a list of files, or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(f, str) for f in v)))
        for k, v in value.items()
    ):
        return "expected a mapping of split name to a file or a list of files"
    return None


@dataclass
class SplitData:
    """One dataset split (or a spec's rows of some), ready to score: its rows, its references in the task's label ids
    (or scores), and each row's identity `(base split, row in it)`, so parts given as two specs can be compared."""

    name: str
    rows: Any  # datasets.Dataset
    references: list
    keys: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Batch:
    """Padded model inputs for some examples, and where those examples sit in the split."""

    positions: list[int]
    inputs: dict[str, Any]


def load_splits(
    task: Task,
    split: str,
    *,
    dataset: str | None = None,
    data_files: dict[str, list[str]] | None = None,
    limit: int | None = None,
    token: str | bool | None = None,
) -> tuple[list[SplitData], dict[str, Any]]:
    """The dataset splits that `split` stands for, each checked and limited, and the data's provenance.

    `split` is a split name (MNLI's `validation` stands for two) or a `datasets` spec (`validation[:50%]`,
    `train+validation`), read as one part whose rows keep their identity in the base splits.
    """
    spec = parse_split(split)
    if dataset is None and data_files is None:
        for base in spec.bases:
            if base.startswith("test"):
                _refuse_unlabelled(task, base)
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit (--limit) must be at least 1, got {limit}.", fix="Drop it to use every example.")
    if data_files is not None:
        splits, provenance = _load_files(data_files)
    else:
        splits, provenance = _load_repo(task, dataset or task.dataset, token=token)
    names = spec.bases if spec.sliced else task.dataset_splits(split)
    for name in names:
        if name not in splits:
            choices = [*splits]
            if not spec.sliced:  # an alias stands for several splits: it cannot be sliced as one
                choices += [a for a, targets in task.split_aliases.items() if set(targets) <= set(splits)]
            raise EvaluationError(
                f"Split {name!r} does not exist in {provenance['source']}: it has {', '.join(splits)}.",
                fix=f"Pass one of these with {option('split', ...)}: {', '.join(choices)}"
                + (", or a slice of one, such as validation[:50%]." if spec.sliced else "."),
            )
    if spec.sliced:
        parts = [_sliced(spec, splits, provenance["source"])]
    else:
        parts = [(name, splits[name], [(name, i) for i in range(splits[name].num_rows)]) for name in names]
    out = []
    for name, rows, keys in parts:
        if limit is not None:
            rows, keys = rows.select(range(min(limit, rows.num_rows))), keys[:limit]
        out.append(_checked(task, name, rows, provenance["source"], keys))
    return out, provenance


def _sliced(spec: SplitSpec, splits: dict[str, Any], source: str) -> tuple[str, Any, list[tuple[str, int]]]:
    """The rows a sliced spec reads, as `datasets` would read them, and where each comes from."""
    import datasets

    ranges = spec.ranges({name: splits[name].num_rows for name in spec.bases})
    pieces = [splits[base].select(range(start, stop)) for base, start, stop in ranges]
    try:
        rows = pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)
    except ValueError as exc:  # the base splits' columns differ
        raise EvaluationError(
            f"The splits of {spec.text!r} in {source} cannot be read as one ({cut(str(exc), 200)}).",
            fix="Join splits with the same columns, or name one split.",
        ) from None
    return spec.text, rows, [(base, i) for base, start, stop in ranges for i in range(start, stop)]


def _refuse_unlabelled(task: Task, split: str) -> None:
    choices = " or ".join(option("split", name) for name in ["validation", *task.split_aliases.get("validation", ())])
    raise EvaluationError(
        f"The GLUE {split!r} split of {task.name} has no labels (every label is -1): GLUE keeps its test labels "
        "private to the leaderboard at gluebenchmark.com, so no metric can be computed on it.",
        fix=f"Evaluate on a labelled split: {choices}.",
    )


def _load_repo(task: Task, spec: str, *, token: str | bool | None) -> tuple[dict, dict]:
    import datasets

    path, _, revision = (spec, "", "") if os.path.isdir(spec) else spec.partition("@")
    provenance: dict[str, Any] = {"id": path, "config": task.config, "revision": revision or None}
    if not os.path.isdir(path):
        provenance["sha"] = _dataset_sha(path, revision or None, token=token)
    source = f"{spec} ({task.config})"
    pinned = provenance.get("sha") or revision or None
    reaching = {"revision": revision or None, "label": source}
    # `datasets` reads the dataset card's YAML (its `configs:`) with an unbounded `yaml.safe_load`: read it with
    # hfsoup's bounds first, so a few aliases in someone's README cannot expand into gigabytes here.
    with hub_errors("dataset", path, **reaching):
        with_retries(lambda: _check_card(path, pinned, token=token), what=source)
    try:
        # `datasets` retries no HTTP 5xx of a data file download: hfsoup's bounded retries do (see hub/retries.py).
        with hub_errors("dataset", path, **reaching):
            loaded = with_retries(
                lambda: datasets.load_dataset(path, task.config, revision=pinned, token=token),
                what=f"loading dataset {source}",
            )
    except ValueError as exc:
        _raise_if_empty(exc, source)
        if "BuilderConfig" in str(exc):
            raise EvaluationError(
                f"Dataset {path!r} has no config {task.config!r} for task {task.name} ({exc}).",
                fix=f"Name a GLUE-shaped dataset with {_DATASET}, or pass the split's files with {_DATA_FILES}.",
            ) from exc
        raise
    except FileNotFoundError as exc:
        raise EvaluationError(
            f"Dataset {spec!r} was not found ({exc}).",
            fix=f"Check {_DATASET} (default {GLUE_DATASET}) and HF_ENDPOINT, or pass local files with {_DATA_FILES}.",
        ) from exc
    return dict(loaded), {**provenance, "source": source}


def _check_card(path: str, revision: str | None, *, token: str | bool | None) -> None:
    """Parse the dataset card's front matter with `safeyaml`'s bounds (a local folder's or the pinned Hub repo's),
    raising `InputLimitError` naming the card when it would expand past them. No card, or no Hub to ask, is fine:
    `datasets` then has nothing (or nothing new) to parse."""
    import yaml
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled

    from ..errors import InputLimitError
    from ..io import safeyaml

    if os.path.isdir(path):
        card = Path(path, "README.md")
        if not card.is_file():
            return
        where = str(card)
    else:
        try:
            card = Path(hf_hub_download(path, "README.md", repo_type="dataset", revision=revision, token=token))
        except (EntryNotFoundError, OfflineModeIsEnabled):
            return
        where = f"the card (README.md) of dataset {path!r}"
    try:
        safeyaml.card_metadata(card)
    except InputLimitError as exc:
        raise InputLimitError(f"{where}: {exc.message}", fix=exc.fix) from None
    except yaml.YAMLError as exc:  # `datasets` would fail on it too; say which file
        raise EvaluationError(
            f"The metadata (YAML front matter) of {where} does not parse: {cut(str(exc).splitlines()[0], 300)}.",
            fix="Fix the dataset card, or pass the split's files with --data-files.",
        ) from None


def _dataset_sha(repo_id: str, revision: str | None, *, token: str | bool | None) -> str | None:
    """Pin the dataset to a commit SHA; None when the Hub cannot be reached (datasets may still find it cached)."""
    from huggingface_hub import HfApi

    try:
        return HfApi(token=token).dataset_info(repo_id, revision=revision).sha
    except Exception as exc:
        how = failure(exc)
        if how == "offline":
            return None
        if how == "connection":
            logger.warning("Could not reach the Hub to pin dataset %s (%s); using it unpinned.", repo_id, exc)
            return None
        raise_translated(exc, HubTarget("dataset", repo_id, revision=revision))


def _load_files(data_files: dict[str, list[str]]) -> tuple[dict, dict]:
    import datasets

    files = [Path(f) for paths in data_files.values() for f in paths]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise EvaluationError(
            f"Data files not found: {', '.join(missing)}.", fix=f"Check the paths given to {_DATA_FILES}."
        )
    builders = {FILE_BUILDERS.get("".join(f.suffixes[-1:]).lower()) for f in files}
    if None in builders or len(builders) != 1:
        raise EvaluationError(
            f"Cannot tell the format of data files {', '.join(map(str, files))}.",
            fix="Give files of one format: .csv, .tsv, .json, .jsonl or .parquet.",
        )
    builder = builders.pop()
    kwargs = {"delimiter": "\t"} if all(f.suffix.lower() == ".tsv" for f in files) else {}
    resolved = {split: [str(Path(f).resolve()) for f in paths] for split, paths in data_files.items()}
    source = "data files " + ", ".join(f"{split}={','.join(paths)}" for split, paths in data_files.items())
    try:
        loaded = datasets.load_dataset(builder, data_files=resolved, **kwargs)
    except ValueError as exc:
        _raise_if_empty(exc, source)
        raise
    return dict(loaded), {"data_files": resolved, "source": source}


def _raise_if_empty(exc: ValueError, source: str) -> None:
    """`datasets` refuses to load a split without rows; say so as an evaluation error."""
    found = re.search(r'Instruction "(.+?)" corresponds to no data', str(exc))
    if found:
        raise EvaluationError(
            f"Split {found.group(1)!r} of {source} has no examples: there is nothing to evaluate.",
            fix=f"Check the data files or {_DATASET}.",
        ) from exc


def _checked(task: Task, name: str, rows: Any, source: str, keys: list[tuple[str, int]]) -> SplitData:
    """Check the columns, turn labels into the task's ids, drop unlabelled rows, refuse an empty split."""
    needed = (*task.input_fields, *((task.label_field,) if task.labelled else ()))
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise EvaluationError(
            f"Split {name!r} of {source} lacks the column(s) {', '.join(missing)} that task {task.name} needs "
            f"(it has {', '.join(rows.column_names)}).",
            fix=f"Give data with columns {', '.join(needed)}.",
        )
    if rows.num_rows == 0:
        raise EvaluationError(
            f"Split {name!r} of {source} has no examples: there is nothing to evaluate.",
            fix=f"Check the data files or {_DATASET}, and that {option('limit', ...)} is at least 1.",
        )
    if not task.labelled:  # language modelling: the text is its own target, every row counts
        return SplitData(name, rows, [0] * rows.num_rows, keys)
    references = _references(task, name, rows, source)
    labelled = [i for i, ref in enumerate(references) if ref != -1]
    if not labelled:
        raise EvaluationError(
            f"Split {name!r} of {source} has no labels (every label is -1, as in GLUE's test splits, whose labels "
            "are private), so no metric can be computed.",
            fix="Evaluate on a labelled split, such as validation.",
        )
    if len(labelled) < len(references):
        logger.warning("Split %s: skipping %d unlabelled rows (label -1).", name, len(references) - len(labelled))
        rows = rows.select(labelled)
        references = [references[i] for i in labelled]
        keys = [keys[i] for i in labelled]
    return SplitData(name, rows, references, keys)


def _references(task: Task, name: str, rows: Any, source: str) -> list:
    values = rows[task.label_field]
    if task.is_regression:
        return [float(v) for v in values]
    wanted = {normalize_label(n): i for i, n in enumerate(task.label_names)}
    feature = rows.features[task.label_field]
    if hasattr(feature, "names"):  # A ClassLabel: its names say which id is which.
        given = [normalize_label(n) for n in feature.names]
        if sorted(given) != sorted(wanted):
            raise EvaluationError(
                f"Split {name!r} of {source} has labels ({', '.join(feature.names)}) where task {task.name} has "
                f"({', '.join(task.label_names)}).",
                fix="Check that the data is for this task.",
            )
        remap = [wanted[n] for n in given]
        return [-1 if v == -1 else remap[v] for v in values]
    if values and isinstance(values[0], str):
        unknown = sorted({v for v in values if normalize_label(v) not in wanted})
        if unknown:
            raise EvaluationError(
                f"Split {name!r} of {source} has labels {unknown} that task {task.name} does not know.",
                fix=f"Use its label names ({', '.join(task.label_names)}) or ids 0..{task.num_labels - 1}.",
            )
        return [wanted[normalize_label(v)] for v in values]
    bad = sorted({int(v) for v in values if not -1 <= int(v) < task.num_labels})
    if bad:
        raise EvaluationError(
            f"Split {name!r} of {source} has label ids {bad}; task {task.name} has ids 0..{task.num_labels - 1}.",
            fix="Check that the data is for this task.",
        )
    return [int(v) for v in values]


def preprocessing_fingerprint(tokenizer: Any) -> str:
    """A hash of what a loaded tokenizer does to text, blind to the truncation and padding settings a call leaves
    behind: the key of the encodings cache (not `compat.tokenizer_fingerprint`, which compares ingredients' vocabulary
    files before anything is loaded).

    Image models' preprocessors are hashed too: an image processor by its settings (size, crop, mean, std, ...),
    a processor (CLIP's: a tokenizer and an image processor) by both of its parts.
    """
    if hasattr(tokenizer, "image_processor"):  # A processor: ProcessorMixin
        parts = [preprocessing_fingerprint(tokenizer.image_processor)]
        if getattr(tokenizer, "tokenizer", None) is not None:
            parts.append(preprocessing_fingerprint(tokenizer.tokenizer))
        return hashlib.sha256(json.dumps([type(tokenizer).__name__, *parts]).encode()).hexdigest()[:16]
    if not hasattr(tokenizer, "get_vocab"):  # An image processor: what it does is its settings.
        return hashlib.sha256(tokenizer.to_json_string().encode()).hexdigest()[:16]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
    else:
        state = sorted(tokenizer.get_vocab().items())
    extra = [type(tokenizer).__name__, tokenizer.padding_side, str(tokenizer.special_tokens_map)]
    return hashlib.sha256(json.dumps([state, extra], sort_keys=True).encode()).hexdigest()[:16]


def encode(split: SplitData, predictor: Any, task: Task, tokenizer: Any, *, max_length: int) -> Any:
    """`split.rows` through `predictor.encode`, cached by `datasets` under a fingerprint of everything it reads."""
    key = [split.rows._fingerprint, preprocessing_fingerprint(tokenizer), predictor.name, task.name, max_length]
    fingerprint = hashlib.sha256(json.dumps([*key, ENCODING_VERSION]).encode()).hexdigest()[:16]
    return split.rows.map(
        predictor.encode,
        batched=True,
        fn_kwargs={"task": task, "tokenizer": tokenizer, "max_length": max_length},
        remove_columns=split.rows.column_names,
        new_fingerprint=fingerprint,
        desc=f"Tokenizing {task.name}/{split.name}",
    )


def make_batches(encoded: Any, predictor: Any, tokenizer: Any, *, batch_size: int) -> list[Batch]:
    """Every example in batches of similar length, longest first (a memory problem shows at once), padded."""
    columns = encoded[:]
    examples = [{k: columns[k][i] for k in columns} for i in range(encoded.num_rows)]
    order = sorted(range(len(examples)), key=lambda i: -predictor.length(examples[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        batches.append(Batch(positions, predictor.collate([examples[i] for i in positions], tokenizer)))
    return batches
