"""Predictors: how one kind of model turns a task's examples into predictions.

The evaluator does the shared work (load the data, tokenize once, batch by length, place the model, split across
processes, gather, compute the metric); a predictor supplies the four steps that depend on the kind of model:

1. `accepts(architectures)`: is a model of these classes my kind? (`predictor_for` takes the first that says yes)
2. `prepare(model, task)`: check the model fits the task (labels, heads) and return what `predict` needs.
3. `encode(examples, ...)`: a batch of raw dataset rows to model inputs; runs once per dataset and tokenizer, through
   `datasets.map`, so its output is cached on disk. Must depend only on its arguments.
4. `predict(model, batch, prepared)`: one padded batch to one prediction per example, in the dataset's label space.

Adding a kind of model (T5 text-to-text, CLIP zero-shot) is adding a class and a line in `PREDICTORS`.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from .errors import EvaluationError
from .tasks import Task, label_mapping

logger = logging.getLogger(__name__)


class Predictor:
    """The steps of an evaluation that depend on the kind of model. Subclass it and add it to `PREDICTORS`."""

    #: The key in `PREDICTORS` and the `kind` users may name.
    name: ClassVar[str]
    #: The `transformers` auto class (or model class) that loads this kind of model with `from_pretrained`.
    auto_class_name: ClassVar[str]

    def accepts(self, architectures: list[str]) -> bool:
        """Whether a model of these classes (`config.architectures`, or the loaded model's class) is of this kind."""
        raise NotImplementedError

    def load(self, path: str, **kwargs: Any) -> Any:
        """The model at `path`; `kwargs` (placement, dtype) go to `from_pretrained`."""
        import transformers

        # Never code from the model's repo (auto_map): hfsoup loads only architectures transformers ships.
        return getattr(transformers, self.auto_class_name).from_pretrained(path, trust_remote_code=False, **kwargs)

    def load_tokenizer(self, path: str) -> Any:
        """What `encode` and `collate` receive as `tokenizer`, from a model folder (a processor for image models)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> Any:
        """Check that `model` can be evaluated on `task`; return what `predict` needs (e.g. a label mapping).
        `tokenizer` is what `encode` receives (a text-to-text model encodes its answers with it)."""
        raise NotImplementedError

    def encode(self, examples: dict[str, list], *, task: Task, tokenizer: Any, max_length: int) -> dict[str, list]:
        """Rows of the dataset (a `datasets` batch: column -> values) to model inputs, unpadded."""
        texts = [examples[name] for name in task.text_fields]
        return dict(tokenizer(*texts, truncation=True, max_length=max_length))

    def length(self, example: dict[str, Any]) -> int:
        """The size of one encoded example, by which examples are sorted into batches."""
        return len(example["input_ids"])

    def collate(self, features: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        """Encoded examples to one batch of tensors, padded to the longest (dynamic padding)."""
        return dict(tokenizer.pad(features, return_tensors="pt"))

    def predict(self, model: Any, batch: dict[str, Any], prepared: Any) -> list:
        """One prediction per example: the dataset's label id, or a float score for regression."""
        raise NotImplementedError


class SequenceClassificationPredictor(Predictor):
    """Models with a classification (or regression) head: BERT-style encoders, `T5ForSequenceClassification`, ..."""

    name = "sequence-classification"
    auto_class_name = "AutoModelForSequenceClassification"

    def accepts(self, architectures: list[str]) -> bool:
        return any(arch.endswith("ForSequenceClassification") for arch in architectures)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> Any:
        import torch

        mapping, assumed = label_mapping(dict(model.config.id2label), task, model_name=model_name)
        if assumed:
            logger.warning(
                "Model %s has generic label names (%s); assuming they are in the dataset's order for %s (%s).",
                model_name,
                ", ".join(model.config.id2label[i] for i in sorted(model.config.id2label)),
                task.name,
                ", ".join(task.label_names),
            )
        elif mapping != list(range(len(mapping))):
            logger.info("Model %s orders its labels differently from %s; mapping them by name.", model_name, task.name)
        return torch.tensor(mapping)

    def predict(self, model: Any, batch: dict[str, Any], prepared: Any) -> list:
        logits = model(**batch).logits
        if logits.shape[-1] == 1:  # Regression: prepare() let a one-output head through only for such a task.
            return logits[:, 0].float().cpu().tolist()
        return prepared[logits.argmax(dim=-1).cpu()].tolist()


# Predictors of other modules subclass `Predictor`, so they are imported once it exists.
from .predictors_image import CLIPZeroShotPredictor, ImageClassificationPredictor  # noqa: E402
from .predictors_t5 import T5TextToTextPredictor  # noqa: E402

#: Kinds of model the evaluator knows, tried in order by `predictor_for`.
PREDICTORS: dict[str, Predictor] = {
    SequenceClassificationPredictor.name: SequenceClassificationPredictor(),
    T5TextToTextPredictor.name: T5TextToTextPredictor(),
    ImageClassificationPredictor.name: ImageClassificationPredictor(),
    CLIPZeroShotPredictor.name: CLIPZeroShotPredictor(),
}


def predictor_for(architectures: list[str], *, kind: str | None = None, model_name: str = "the model") -> Predictor:
    """The predictor for a model of these classes: `PREDICTORS[kind]`, or the first that accepts them."""
    if kind is not None:
        if kind not in PREDICTORS:
            raise EvaluationError(f"Unknown model kind {kind!r}.", fix=f"Pick one of: {', '.join(PREDICTORS)}.")
        return PREDICTORS[kind]
    for predictor in PREDICTORS.values():
        if predictor.accepts(architectures):
            return predictor
    raise EvaluationError(
        f"hfsoup cannot evaluate {model_name!r} (architectures: {', '.join(architectures) or 'none declared'}): "
        "it evaluates "
        f"{', '.join(PREDICTORS)} models.",
        fix="Evaluate a model with a sequence-classification head (e.g. BertForSequenceClassification, "
        "T5ForSequenceClassification), fine-tuned for the task; a T5ForConditionalGeneration (as text-to-text); an "
        "image classifier or a CLIPModel (zero-shot) on an image task.",
    )
