"""A tiny GLUE: a dataset repo shaped like `nyu-mll/glue`, and tiny classifiers with each task's labels.

`build_glue` writes, per GLUE config, one parquet file per split with the real columns, label names and dtypes
(`idx` int32, class labels as `ClassLabel`, stsb scores as float32, `-1` labels in the test splits as in the real
GLUE), and a README whose YAML `configs:` points `load_dataset("nyu-mll/glue", "sst2")` at them, exactly as on the
Hub. The text is random sentences from a small movie-review vocabulary; the labels are random. `publish_glue` pushes
it to the Hub that `HF_ENDPOINT` names (the local Hub in tests) in one commit.

Example:
    ```py
    >>> with LocalHubServer(root, anonymous_writes=True) as hub, use_local_hub(hub.url, home):
    ...     publish_glue(build_glue(tmp / "glue"))
    ...     datasets.load_dataset("nyu-mll/glue", "mnli", split="validation_matched").num_rows
    32
    ```
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..evaluation.tasks import GLUE_DATASET, TASKS, Task
from .publish import upload, write_dataset_card

#: Rows per split: small enough to build and tokenize in a blink, large enough for every metric to be defined.
ROWS = {"train": 8, "validation": 32, "test": 8}

_WORDS = {
    "noun": "movie film plot actor script scene ending story camera cast sequel hero villain comedy drama".split(),
    "adj": "good great bad awful boring lovely terrible wonderful slow funny dull brilliant clever silly".split(),
    "adv": "very really quite truly rather mostly barely".split(),
    "verb": "loved hated enjoyed liked watched admired".split(),
}
_TEMPLATES = [
    "the {noun} was {adv} {adj} .",
    "i {verb} this {noun} , it is {adj} !",
    "{adj} {noun} with a {adj} {noun} .",
    "was the {noun} {adj} or {adj} ?",
    "the {noun} and the {noun} are {adv} {adj} , {adv} {adj} .",
]


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        parts = template.split()
        out.append(" ".join(_pick(rng, p[1:-1]) if p.startswith("{") else p for p in parts))
    return out


def _pick(rng: np.random.Generator, kind: str) -> str:
    words = _WORDS[kind]
    return words[rng.integers(len(words))]


def glue_splits(task: Task, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """The splits of a task's config, as in the real GLUE (MNLI's are matched and mismatched), with their sizes
    (`sizes` per split, `ROWS` by default)."""
    splits = {}
    for split, rows in (sizes or ROWS).items():
        for name in task.dataset_splits(split):
            splits[name] = rows
    return splits


def glue_features(task: Task):
    """The `datasets.Features` of a task's config: its text fields, `label` and `idx`, as the real GLUE has them."""
    import datasets

    label = datasets.Value("float32") if task.is_regression else datasets.ClassLabel(names=list(task.label_names))
    columns = {name: datasets.Value("string") for name in task.text_fields}
    return datasets.Features({**columns, "label": label, "idx": datasets.Value("int32")})


def glue_rows(task: Task, split: str, n: int, *, seed: int = 0) -> dict[str, list]:
    """`n` random rows of `task` for `split`, seeded by task and split; a `test*` split is unlabelled (`-1`)."""
    rng = np.random.default_rng([seed, sum(map(ord, task.name)), sum(map(ord, split))])
    columns: dict[str, list] = {name: _sentences(rng, n) for name in task.text_fields}
    if split.startswith("test"):
        labels: list = [-1.0 if task.is_regression else -1] * n
    elif task.is_regression:
        # Scores on a 0.2 grid from 0 to 5, as in STS-B: ties exercise Spearman's average ranks.
        labels = [round(float(v), 1) for v in rng.integers(0, 26, size=n) / 5]
    else:
        labels = [int(i % task.num_labels) for i in range(n)]  # every class present ...
        labels = [int(v) for v in rng.permutation(labels)]  # ... in a random order
    return {**columns, "label": labels, "idx": list(range(n))}


#: Makes the rows of one split: `(task, split, n, seed=...)` to columns, as `glue_rows` does.
RowMaker = Callable[..., dict[str, list]]


def write_glue_csv(
    path: str | os.PathLike, task: Task | str, n: int, *, split: str = "validation", seed: int = 0
) -> Path:
    """`n` rows of the tiny GLUE's `task` (its text columns and `label`) as a local CSV, for `--data-files`."""
    import csv

    task = TASKS[task] if isinstance(task, str) else task
    rows = glue_rows(task, split, n, seed=seed)
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*task.text_fields, "label"])
        writer.writerows(zip(*(rows[name] for name in task.text_fields), rows["label"], strict=True))
    return path


def build_glue(
    root: str | os.PathLike,
    *,
    tasks: list[str] | None = None,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    make_rows: RowMaker = glue_rows,
    pretty_name: str = "GLUE (tiny, synthetic)",
    description: str = "Random sentences and labels in the shape of `nyu-mll/glue`, built by "
    "`hfsoup.testing.glue.build_glue` for tests.",
) -> Path:
    """Write a GLUE-shaped dataset folder: `{config}/{split}-00000-of-00001.parquet` and a README with `configs:`.

    Args:
        root (`str` or `os.PathLike`):
            The folder to write (created).
        tasks (`list[str]`, *optional*):
            The GLUE configs to write; all of `TASKS` by default.
        seed (`int`, *optional*, defaults to 0):
            Seeds the sentences and labels.
        sizes (`dict[str, int]`, *optional*):
            Rows per split (`train`, `validation`, `test`); `ROWS` by default.
        make_rows (`RowMaker`, *optional*, defaults to `glue_rows`):
            Writes each split's rows; `hfsoup.testing.sentiment.sentiment_rows` gives labels a model can learn.
        pretty_name (`str`, *optional*), description (`str`, *optional*):
            The dataset card's title and body.

    Returns:
        `Path`: `root`.
    """
    import datasets

    root = Path(root)
    configs, infos = [], []
    for name in tasks or list(TASKS):
        task = TASKS[name]
        features = glue_features(task)
        files, split_infos = [], []
        for split, n in glue_splits(task, sizes).items():
            path = root / task.config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = make_rows(task, split, n, seed=seed)
            table = datasets.Dataset.from_dict(rows, features=features)
            table.to_parquet(str(path))
            files.append({"split": split, "path": f"{task.config}/{split}-*"})
            split_infos.append({"name": split, "num_bytes": table.data.nbytes, "num_examples": n})
        configs.append({"config_name": task.config, "data_files": files})
        infos.append({"config_name": task.config, "features": features._to_yaml_list(), "splits": split_infos})
    card = {"pretty_name": pretty_name, "configs": configs, "dataset_info": infos}
    write_dataset_card(root, card, f"# {pretty_name}\n\n{description}")
    return root


def publish_glue(folder: str | os.PathLike, *, repo_id: str = GLUE_DATASET, api=None) -> str:
    """Push a folder from `build_glue` to the dataset repo `repo_id` in one commit; return the commit SHA."""
    return upload(folder, repo_id, repo_type="dataset", message="Tiny GLUE", api=api)


def publish_glue_metric(*, repo_id: str = "evaluate-metric/glue", api=None, script: str | None = None) -> str:
    """Push hfsoup's GLUE metric module (or `script`) as the space `evaluate.load("glue", ...)` fetches; return the
    commit SHA. A test gives `script` to publish a hostile module.

    `evaluate` 0.4.6 asks for `/spaces/evaluate-metric/glue/resolve/v0.4.6/glue.py`, then for `main`; hfsoup's
    `--hub-metrics` picks the same revision, and downloads it at its commit.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from ..evaluation.metrics import SHIPPED

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    card = "---\ntitle: GLUE\nsdk: gradio\ntags:\n- evaluate\n- metric\n---\n\n# GLUE metric (hfsoup's module)\n"
    operations = [
        CommitOperationAdd("glue.py", script.encode() if script is not None else str(SHIPPED["glue"] / "glue.py")),
        CommitOperationAdd("README.md", card.encode()),
    ]
    info = api.create_commit(repo_id, operations, repo_type="space", commit_message="GLUE metric module")
    return info.oid


def tiny_classifier(
    base: str | os.PathLike,
    task: Task | str,
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    labels: list[str] | None = None,
) -> Path:
    """A sequence classifier for `task` from a tiny family's base (BERT, or T5 as `T5ForSequenceClassification`).

    The body comes from `base`; the head is new and seeded, with the task's labels (or `labels`, to make a model that
    does not fit the task). A random head on a random body predicts one class for every input, which makes every
    metric degenerate; so the head's last layer is standardized on the task's training sentences (its inputs centred
    and scaled per feature), and its predictions vary from example to example. The folder gets the base's tokenizer.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    task = TASKS[task] if isinstance(task, str) else task
    names = list(labels) if labels is not None else (list(task.label_names) or ["score"])
    config = AutoConfig.from_pretrained(base)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    if len(names) == 1:
        config.problem_type = "regression"
    tokenizer = AutoTokenizer.from_pretrained(base)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # The new head's load report is expected, not news.
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                base, config=config, ignore_mismatched_sizes=True
            )
    finally:
        transformers_logging.set_verbosity(verbosity)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.eval()
        head = _head(model, len(names))
        _standardize(model, head, tokenizer, task, seed=seed)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def _head(model, n_outputs: int):
    """The classifier's last linear layer: the last `Linear` with one output per label."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_outputs][-1]


def _head_inputs(model, head, tokenizer, task: Task, *, seed: int):
    """What `head` receives on 64 of `task`'s training sentences (seeded apart from the model's own seed), one row per
    input vector."""
    import torch

    rows = glue_rows(task, "train", 64, seed=seed + 1)
    captured = []
    hook = head.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(**tokenizer(*[rows[f] for f in task.text_fields], padding=True, return_tensors="pt"))
    finally:
        hook.remove()
    return captured[0].reshape(-1, head.in_features)


def _standardize(model, head, tokenizer, task: Task, *, seed: int) -> None:
    """Give `head` weights N(0, 1) over its inputs standardized on `task`'s training sentences."""
    import torch

    features = _head_inputs(model, head, tokenizer, task, seed=seed)
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    with torch.no_grad():
        weight = torch.randn(head.out_features, head.in_features) / std
        head.weight.copy_(weight)
        head.bias.copy_(-(weight @ mean))


def build_glue_finetunes(
    base: str | os.PathLike,
    task: Task | str,
    root: str | os.PathLike,
    *,
    n_finetunes: int = 3,
    seed: int = 0,
    base_model: str | None = None,
) -> list[Path]:
    """Fine-tunes of one base for a GLUE task, `{root}/ft0`, `ft1`, ...: ingredients for a greedy soup on a tiny GLUE.

    The base gets the task's head once (`tiny_classifier`, seeded by `seed`), then each fine-tune is that model plus
    seeded noise, as the tiny families' fine-tunes are. So they share their initialization, head included, and may be
    souped; and since the head is standardized on the task's sentences, their predictions vary from example to
    example and from fine-tune to fine-tune, so each scores differently (on random labels: around chance).

    Args:
        base (`str` or `os.PathLike`):
            A tiny family's base folder (BERT, or T5 as `T5ForSequenceClassification`).
        task (`Task` or `str`):
            The GLUE task, e.g. `"mrpc"`.
        root (`str` or `os.PathLike`):
            The folder to write the fine-tunes in (created).
        n_finetunes (`int`, *optional*, defaults to 3):
            How many.
        seed (`int`, *optional*, defaults to 0):
            Seeds the head and, with each fine-tune's index, its noise.
        base_model (`str`, *optional*):
            The Hub ID to name as `base_model` in each fine-tune's model card (no card without it).

    Returns:
        `list[Path]`: the fine-tunes' folders.
    """
    import shutil
    import tempfile

    from huggingface_hub import ModelCard, ModelCardData
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from .tiny_models import derive_seed, perturb_

    task = TASKS[task] if isinstance(task, str) else task
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="hfsoup-glue-") as scratch:
        start = tiny_classifier(base, task, Path(scratch) / "start", seed=seed)
        tokenizer = AutoTokenizer.from_pretrained(start)
        folders = []
        for i in range(n_finetunes):
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()
            try:
                model = AutoModelForSequenceClassification.from_pretrained(start).eval()
            finally:
                transformers_logging.set_verbosity(verbosity)
            perturb_(model, seed=derive_seed(seed, f"{task.name}-ft{i}"))
            _recentre(model, tokenizer, task, seed=seed)
            folder = root / f"ft{i}"
            if folder.exists():  # a rebuild replaces the fine-tune whole
                shutil.rmtree(folder)
            shutil.copytree(start, folder)  # the tokenizer files; the weights and config are written over
            model.save_pretrained(folder)
            if base_model is not None:
                data = ModelCardData(base_model=base_model, library_name="transformers", license="apache-2.0")
                body = f"# {folder.name}\n\nA stand-in fine-tune of `{base_model}` for GLUE {task.name} (tiny).\n"
                ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(folder / "README.md")
            folders.append(folder)
    return folders


def _recentre(model, tokenizer, task: Task, *, seed: int) -> None:
    """Set the head's last bias so that its outputs are centred on `task`'s training sentences again.

    The noise of a stand-in fine-tune moves the body's features; without this, the standardized head would see them
    off centre and predict one class for every input.
    """
    import torch

    head = _head(model, model.config.num_labels)
    mean = _head_inputs(model, head, tokenizer, task, seed=seed).mean(dim=0)
    with torch.no_grad():
        head.bias.copy_(-(head.weight @ mean))
