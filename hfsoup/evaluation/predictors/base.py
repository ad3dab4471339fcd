"""The predictor protocol (`Predictor`) and the sequence-classification predictor the other kinds build on.

The registry of kinds, `PREDICTORS`, is in `registry.py`; see its docstring for the steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from ..tasks import Task, label_mapping

logger = logging.getLogger(__name__)


class Predictor:
    """The steps of an evaluation that depend on the kind of model. Subclass it and add it to `PREDICTORS`."""

    #: The key in `PREDICTORS` and the `kind` users may name.
    name: ClassVar[str]
    #: The `transformers` auto class (or model class) that loads this kind of model with `from_pretrained`.
    auto_class_name: ClassVar[str]
    #: Whether an output ensemble of such models is their per-answer log-probabilities averaged (a predictor whose
    #: scores are no per-answer scores, a causal LM's likelihood sums, has no ensemble row).
    ensembles: ClassVar[bool] = True
    #: Whether the learned soup's loss is the predictor's own `loss(scores)` (a causal LM's summed negative
    #: log-likelihood) rather than the cross-entropy of the scores over the answers.
    sums_own_loss: ClassVar[bool] = False

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
        """Check that `model` can be evaluated on `task`; return what the other steps need and what does not depend
        on the model's weights (a label mapping, the answers' token ids, the class prompts tokenized): made once,
        whatever weights are scored afterwards. `tokenizer` is what `encode` receives."""
        raise NotImplementedError

    def condition(self, model: Any, prepared: Any) -> Any:
        """What `scores` needs that depends on the model's weights (CLIP zero-shot: the class embeddings, from the
        text tower), computed once per set of weights scored; `prepared` itself by default. Runs inside the same
        call as `scores` when a soup's weights are swapped in, so it must reach the weights only through `model`."""
        return prepared

    def answers(self, prepared: Any) -> list | None:
        """The prediction each column of `scores` stands for (dataset label ids, or numbers such as T5's stsb
        answers); `None` for a regression head, whose one column is the prediction itself."""
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

    def scores(self, model: Any, batch: dict[str, Any], conditioned: Any) -> Any:
        """One padded batch to a float32 tensor `(examples, len(answers))`: how strongly the model gives each
        answer, as logits or log-likelihoods (higher is likelier; a softmax over a row gives the model's
        distribution over the label set). Differentiable in the model's weights: a learned soup's objective is the
        cross-entropy of these scores, and the output ensemble averages their log-softmax."""
        raise NotImplementedError

    def readout(self, scores: Any, prepared: Any) -> list:
        """One prediction per row of `scores`: the answer scored highest, or a regression head's value."""
        values = self.answers(prepared)
        if values is None:
            return scores[:, 0].tolist()
        return [values[i] for i in scores.argmax(dim=-1).tolist()]

    def predict(self, model: Any, batch: dict[str, Any], prepared: Any) -> list:
        """One prediction per example of a batch, with the model's weights as they are (`condition` is recomputed:
        callers scoring many batches call `condition` once and `scores`/`readout` per batch)."""
        return self.readout(self.scores(model, batch, self.condition(model, prepared)).detach().cpu(), prepared)


def head_order(mapping: Any) -> Any:
    """The model output of each dataset label id: the inverse of `mapping` (model output id -> dataset label id)."""
    import torch

    order = torch.empty_like(mapping)
    order[mapping] = torch.arange(len(mapping))
    return order


@dataclass(frozen=True)
class Head:
    """How a classification head's outputs read in the dataset's label space.

    Attributes:
        order (`torch.Tensor`): the model output of each dataset label id, so `logits[:, order]` is in label order.
        regression (`bool`): a one-output regression head (its output is the prediction).
    """

    order: Any
    regression: bool = False


class SequenceClassificationPredictor(Predictor):
    """Models with a classification (or regression) head: BERT-style encoders, GPT-2, RoBERTa, DeBERTa,
    `T5ForSequenceClassification`, ...: scored by their logits, reordered into the dataset's label order."""

    name = "sequence-classification"
    auto_class_name = "AutoModelForSequenceClassification"

    def accepts(self, architectures: list[str]) -> bool:
        return any(arch.endswith("ForSequenceClassification") for arch in architectures)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> Head:
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
        if tokenizer is not None:
            _pad_with_eos(model, tokenizer, model_name=model_name)
        return Head(head_order(torch.tensor(mapping)), regression=task.is_regression)

    def answers(self, prepared: Head) -> list | None:
        return None if prepared.regression else list(range(len(prepared.order)))

    def scores(self, model: Any, batch: dict[str, Any], conditioned: Head) -> Any:
        logits = model(**batch).logits.float()
        if conditioned.regression:
            return logits
        return logits[:, conditioned.order.to(logits.device)]


def _pad_with_eos(model: Any, tokenizer: Any, *, model_name: str) -> None:
    """Let a decoder-only classifier without a pad token (GPT-2) be scored in padded batches.

    Such a model reads its prediction at the last token that is not padding, found by `config.pad_token_id`; with
    none it refuses batches of more than one example. Its end-of-sequence token is the usual stand-in (what
    `transformers`' own examples set): padding after the text, it is never the last real token.
    """
    if getattr(tokenizer, "pad_token", True) is not None and model.config.pad_token_id is not None:
        return
    eos = getattr(tokenizer, "eos_token", None)
    if tokenizer.pad_token is None:
        if eos is None:
            return  # nothing to pad with; batches of one still work, larger ones get transformers' own error
        tokenizer.pad_token = eos
        logger.info("Model %s has no pad token; padding its batches with its end-of-sequence token.", model_name)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
