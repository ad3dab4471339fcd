"""The predictor protocol (`Predictor`) and the sequence-classification predictor the other kinds build on.

The registry of kinds, `PREDICTORS`, is in `registry.py`; see its docstring for the four steps.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ..tasks import Task, label_mapping

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
