"""The evaluation tasks: where each task's data lives, which fields hold its text, its labels and its metric.

One explicit table, `TASKS`. A task names a dataset on the Hub (`nyu-mll/glue` and a config for GLUE), the fields
holding the text (one sentence, or a pair), the label names in the dataset's id order (none for a regression task),
and the `evaluate` metric with its config. Adding a task is adding a line.

Example:
    ```py
    >>> from hfsoup.evaluation.tasks import get_task
    >>> task = get_task("mnli")
    >>> task.text_fields, task.label_names
    (('premise', 'hypothesis'), ('entailment', 'neutral', 'contradiction'))
    >>> task.dataset_splits("validation")
    ('validation_matched', 'validation_mismatched')
    ```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import EvaluationError, option

GLUE_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    Args:
        name (`str`):
            The name users type (`--task sst2`).
        dataset (`str`):
            The dataset repo on the Hub.
        config (`str`):
            The dataset config (`load_dataset(dataset, config)`).
        text_fields (`tuple[str, ...]`):
            The columns holding the text: one, or a pair that is tokenized as a pair.
        label_names (`tuple[str, ...]`):
            The class names in the dataset's label-id order; empty for a regression task.
        metric (`str`):
            The `evaluate` module (`evaluate.load(metric, metric_config)`).
        metric_config (`str`):
            Its config.
        primary_metric (`str`):
            The one number to rank models by (a greedy soup's criterion).
        split_aliases (`dict[str, tuple[str, ...]]`):
            User split names that stand for several dataset splits (MNLI's `validation` is matched + mismatched).
        label_field (`str`):
            The column holding the label id (or float score).
        image_field (`str`):
            The column holding the image, for an image task (whose `text_fields` are empty); empty for a text task.
            A task with an empty `label_field` has no labels (`perplexity`: the text is its own target).
    """

    name: str
    dataset: str
    config: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    metric: str
    metric_config: str
    primary_metric: str
    split_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_field: str = "label"
    image_field: str = ""

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The columns a model reads: the text fields, or the image field."""
        return (*self.text_fields, *((self.image_field,) if self.image_field else ()))

    @property
    def is_regression(self) -> bool:
        return not self.label_names and bool(self.label_field)

    @property
    def labelled(self) -> bool:
        """Whether rows carry a label (every task but language modelling, whose targets are the text itself)."""
        return bool(self.label_field)

    @property
    def num_labels(self) -> int:
        """How many outputs a model needs: one per class, or one score for regression."""
        return len(self.label_names) or 1

    def dataset_splits(self, split: str) -> tuple[str, ...]:
        """The dataset splits a user split stands for (usually itself)."""
        return self.split_aliases.get(split, (split,))


def _glue(
    name: str,
    text_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    primary_metric: str = "accuracy",
    **extra: object,
) -> Task:
    return Task(name, GLUE_DATASET, name, text_fields, label_names, "glue", name, primary_metric, **extra)


ENTAILMENT_2 = ("entailment", "not_entailment")

#: The tasks `hfsoup eval --task` knows, by name. Label names and fields as in `nyu-mll/glue`.
TASKS: dict[str, Task] = {
    "cola": _glue("cola", ("sentence",), ("unacceptable", "acceptable"), "matthews_correlation"),
    "sst2": _glue("sst2", ("sentence",), ("negative", "positive")),
    "mrpc": _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "f1"),
    "qqp": _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "f1"),
    "stsb": _glue("stsb", ("sentence1", "sentence2"), (), "pearson"),
    "mnli": _glue(
        "mnli",
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        split_aliases={
            "validation": ("validation_matched", "validation_mismatched"),
            "test": ("test_matched", "test_mismatched"),
        },
    ),
    "qnli": _glue("qnli", ("question", "sentence"), ENTAILMENT_2),
    "rte": _glue("rte", ("sentence1", "sentence2"), ENTAILMENT_2),
    "wnli": _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
}


#: The task of classifying the images of any dataset with an image column and a `ClassLabel` label column.
IMAGE_CLASSIFICATION = "image-classification"


#: Classifying texts of any dataset or local files with a `text` column and a `label` column (ids or names).
TEXT_CLASSIFICATION = "text-classification"


def text_classification_task(
    label_names: tuple[str, ...] | list[str],
    *,
    dataset: str = "",
    text_field: str = "text",
    label_field: str = "label",
) -> Task:
    """A text-classification task scored by accuracy, with the class names of the models being scored.

    Labels in the data may be ids (in `label_names` order) or names; a model's labels are matched by name, as for
    GLUE. `hfsoup soup --task text-classification` takes `label_names` from the first ingredient's `id2label`.

    Example:
        ```py
        >>> task = text_classification_task(["negative", "neutral", "positive"])
        >>> task.text_fields, task.num_labels
        (('text',), 3)
        ```
    """
    return Task(
        TEXT_CLASSIFICATION,
        dataset,
        "default",
        (text_field,),
        tuple(str(n) for n in label_names),
        "accuracy",
        "default",
        "accuracy",
        label_field=label_field,
    )


#: Language modelling: the token-level perplexity of a causal LM on the texts of any dataset or local files.
PERPLEXITY = "perplexity"
#: The primary metric of `perplexity`: minus the perplexity, so that higher is better as for every other task (a
#: greedy soup keeps a candidate when the perplexity does not rise; the table shows `perplexity` beside it).
NEG_PERPLEXITY = "neg_perplexity"


def perplexity_task(*, dataset: str = "", text_field: str = "text") -> Task:
    """Language modelling on the `text_field` column: scored by token-level perplexity (`exp` of the mean negative
    log-likelihood of every token after the first), ranked by `neg_perplexity` (higher is better).

    Example:
        ```py
        >>> task = perplexity_task(text_field="review")
        >>> task.text_fields, task.primary_metric, task.labelled
        (('review',), 'neg_perplexity', False)
        ```
    """
    return Task(
        PERPLEXITY, dataset, "default", (text_field,), (), PERPLEXITY, "default", NEG_PERPLEXITY, label_field=""
    )


def get_task(
    name: str, *, dataset: str | None = None, token: str | bool | None = None, text_field: str = "text"
) -> Task:
    """The task called `name` (case-insensitive; `sst-2` and `SST2` both work), or an `EvaluationError`.

    `image-classification` is not in `TASKS`: its labels are those of `dataset`, read from the Hub. Nor is
    `text-classification`, whose labels are a model's (`hfsoup.evaluation.evaluator.resolve_task`), nor
    `perplexity`, language modelling on the `text_field` column of any data (`perplexity_task`).
    """
    if name.lower() == PERPLEXITY:
        return perplexity_task(dataset=dataset or "", text_field=text_field)
    if name.strip().lower().startswith("lm-eval:"):  # hfsoup.evaluation.harness.PREFIX (that module imports this)
        raise EvaluationError(
            f"Task {name!r} is scored by EleutherAI's lm-eval harness, which hfsoup runs to select soups (hfsoup "
            "soup --task lm-eval:...), not in hfsoup eval.",
            fix="Score a model or soup folder on it with the harness itself: lm-eval run --model hf --model_args "
            "pretrained=FOLDER --tasks NAME; or pick a task of hfsoup eval (see hfsoup eval --help).",
        )
    if name.lower().replace("_", "-") == IMAGE_CLASSIFICATION:
        if dataset is None:
            raise EvaluationError(
                "Task image-classification needs the dataset whose images to classify.",
                fix=f"Name it with {option('dataset', 'org/name')}.",
            )
        return image_classification_task(dataset, token=token)
    if name.lower().replace("_", "-") == TEXT_CLASSIFICATION:
        raise EvaluationError(
            "Task text-classification takes its class names from the model being scored.",
            fix="Score it with evaluate_model(MODEL, 'text-classification', data_files=...) or "
            "Evaluator('text-classification', labels_from=MODEL, ...), which read the model's id2label; or pass "
            "text_classification_task(label_names).",
        )
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key not in TASKS:
        raise EvaluationError(
            f"Unknown task {name!r}.",
            fix=f"Pick one of: {', '.join(TASKS)} (the GLUE tasks; see hfsoup.evaluation.tasks.TASKS), or "
            f"{IMAGE_CLASSIFICATION} with {option('dataset', 'org/name')}, or {PERPLEXITY} (a causal LM, with "
            f"{option('dataset', 'org/text')} or --data-files).",
        )
    return TASKS[key]


def image_classification_task(
    dataset: str,
    *,
    config: str | None = None,
    image_field: str = "image",
    label_field: str = "label",
    token: str | bool | None = None,
) -> Task:
    """An image-classification task on `dataset` (`org/name`, `org/name@rev` or a folder), scored by accuracy.

    The class names are those of the dataset's `ClassLabel` column `label_field`, in its id order; a model's labels
    are matched to them by name, as for GLUE.

    Example:
        ```py
        >>> task = image_classification_task("hfsoup-testing/digits")
        >>> task.label_names[:3], task.image_field
        (('zero', 'one', 'two'), 'image')
        ```
    """
    import os

    import datasets

    path, _, revision = (dataset, "", "") if os.path.isdir(dataset) else dataset.partition("@")
    try:
        builder = datasets.load_dataset_builder(path, config, revision=revision or None, token=token)
    except FileNotFoundError as exc:
        raise EvaluationError(
            f"Dataset {dataset!r} was not found ({exc}).", fix=f"Check {option('dataset', ...)} and HF_ENDPOINT."
        ) from exc
    features = builder.info.features or {}
    if image_field not in features or not hasattr(features.get(label_field), "names"):
        raise EvaluationError(
            f"Dataset {dataset!r} needs an image column {image_field!r} and a ClassLabel column {label_field!r} for "
            f"image classification; its columns are: {', '.join(features) or 'none declared'}.",
            fix="Declare the features in the dataset card (dataset_info: features) with a class_label for the labels.",
        )
    return Task(
        IMAGE_CLASSIFICATION,
        path,
        builder.config.name,
        (),
        tuple(features[label_field].names),
        "accuracy",
        "default",
        "accuracy",
        label_field=label_field,
        image_field=image_field,
    )


def normalize_label(name: object) -> str:
    """Label names compared loosely: `NOT_ENTAILMENT`, `not-entailment` and `Not Entailment` are one label."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


_GENERIC = re.compile(r"^(label_?)?\d+$")


def is_generic_label(name: object) -> bool:
    """`LABEL_0`, `label1`, `0`: the placeholder names `transformers` gives a head nobody named."""
    return bool(_GENERIC.match(normalize_label(name)))


def label_mapping(id2label: dict[int, str], task: Task, *, model_name: str) -> tuple[list[int], bool]:
    """Map each of a classifier's output ids to the dataset's label id for `task`.

    Returns the mapping (`mapping[model_id] == dataset_id`) and whether it was assumed from generic names
    (`LABEL_0`, ...) rather than matched by name. Raises `EvaluationError` when the labels cannot fit the task,
    spelling out both label sets.
    """
    names = [id2label[i] for i in sorted(id2label)]
    wanted = ", ".join(task.label_names) if task.label_names else "one regression output"
    if len(names) != task.num_labels:
        found = ", ".join(map(str, names))
        raise EvaluationError(
            f"Model {model_name!r} has {len(names)} output(s) ({found}) but task {task.name!r} needs "
            f"{task.num_labels} ({wanted}).",
            fix=f"Evaluate it on a task with these labels, or fine-tune a head with {task.num_labels} output(s) "
            f"for {task.name}.",
        )
    if task.is_regression:
        return [0], False
    if all(is_generic_label(n) for n in names):
        return list(range(len(names))), True
    wanted_ids = {normalize_label(n): i for i, n in enumerate(task.label_names)}
    missing = [n for n in task.label_names if normalize_label(n) not in {normalize_label(m) for m in names}]
    unknown = [n for n in names if normalize_label(n) not in wanted_ids]
    if missing or unknown:
        raise EvaluationError(
            f"Model {model_name!r} has labels ({', '.join(map(str, names))}) that do not match task "
            f"{task.name!r} ({wanted}): the model has {', '.join(map(repr, unknown))} where the task has "
            f"{', '.join(map(repr, missing))}.",
            fix="Check that the model was fine-tuned for this task; if its labels only have other names, set "
            "id2label in its config.json to the task's names.",
        )
    return [wanted_ids[normalize_label(n)] for n in names], False
