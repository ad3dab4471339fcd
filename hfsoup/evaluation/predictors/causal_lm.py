"""Decoder-only language models (`LlamaForCausalLM`, `MistralForCausalLM`, `GPT2LMHeadModel`, ...) scored by the
likelihood of a text: the `perplexity` task.

Each text is its own target: every token after the first is predicted from those before it, and a text's score is
the pair (summed negative log-likelihood of those tokens, how many there are). The metric (`metrics.Perplexity`)
divides the totals, so perplexity is per token over the whole split, whatever the batching; the learned soup
minimizes the summed negative log-likelihood itself. Batches are padded on the right, whatever the tokenizer's
`padding_side`: the real tokens then keep the positions they have unpadded, so a text scores the same in any batch.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ...errors import EvaluationError, option
from ..tasks import PERPLEXITY, Task
from .base import Predictor

logger = logging.getLogger(__name__)


class CausalLMPredictor(Predictor):
    """A causal LM's per-text negative log-likelihood and token count, `(examples, 2)`."""

    name = "causal-lm"
    auto_class_name = "AutoModelForCausalLM"
    suffixes: ClassVar[tuple[str, ...]] = ("ForCausalLM", "LMHeadModel")
    #: Its scores are sums over tokens, not scores per answer: no label set to average an ensemble's
    #: probabilities over, and the learned soup's loss is their own sum.
    ensembles: ClassVar[bool] = False
    sums_own_loss: ClassVar[bool] = True

    def accepts(self, architectures: list[str]) -> bool:
        return any(arch.endswith(self.suffixes) for arch in architectures)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> int:
        if task.name != PERPLEXITY:
            raise EvaluationError(
                f"{model_name!r} is a causal language model; it is scored on {PERPLEXITY}, not on {task.name!r}.",
                fix=f"Use {option('task', PERPLEXITY)} with {option('dataset', 'org/text')} (or --data-files), or "
                "fine-tune a sequence-classification head for the task.",
            )
        if tokenizer is None:
            raise EvaluationError(
                f"Scoring {model_name!r} needs its tokenizer.", fix="Pass tokenizer= to Evaluator or to score()."
            )
        pad = tokenizer.pad_token_id
        if pad is None:  # padding is masked out of the loss, so any id will do
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        return int(pad)

    def answers(self, prepared: int) -> list | None:
        return None

    def encode(self, examples: dict[str, list], *, task: Task, tokenizer: Any, max_length: int) -> dict[str, list]:
        (field,) = task.text_fields
        encoded = tokenizer([str(text) for text in examples[field]], truncation=True, max_length=max_length)
        return {"input_ids": encoded["input_ids"]}

    def collate(self, features: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        ids = torch.full((len(features), longest), int(pad), dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def scores(self, model: Any, batch: dict[str, Any], conditioned: int) -> Any:
        """Per text: the summed negative log-likelihood of its tokens after the first, and their number."""
        import torch

        ids, mask = batch["input_ids"], batch["attention_mask"]
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        log_probs = logits.log_softmax(dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        predicted = mask[:, 1:].to(log_probs.dtype)
        return torch.stack([-(log_probs * predicted).sum(dim=1), predicted.sum(dim=1)], dim=1)

    def readout(self, scores: Any, prepared: int) -> list:
        return [[float(nll), int(count)] for nll, count in scores.tolist()]

    def loss(self, scores: Any) -> Any:
        """The learned soup's objective over a batch: the summed negative log-likelihood of its tokens."""
        return scores[:, 0].sum()

    def mean_loss(self, scores: Any) -> float:
        """Nats per token over every text of `scores`."""
        return float(scores[:, 0].sum() / scores[:, 1].sum().clamp(min=1))
