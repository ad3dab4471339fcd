"""T5 as text-to-text: the T5 paper's task prefixes in, one of the task's label words out, by scoring.

Free generation can produce any string; a soup is judged on its labels, so hfsoup scores instead: each candidate
answer (the task's label words; for stsb the numbers 0.0, 0.2, ..., 5.0, the T5 paper's format) is a target token
sequence, its log-likelihood given the input is the sum of its tokens' log-probabilities (end-of-sequence included,
so `entailment` does not win by being a prefix of a longer word), and the best-scoring candidate is the prediction.
Every prediction is therefore a valid label, however the tokenizer splits the label words.

The formats come from Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (JMLR 2020), appendix D; they are data, in `T5_FORMATS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import EvaluationError
from ..tasks import Task
from .base import Predictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class T5Format:
    """How a task reads as text-to-text: `template` filled with the row's fields; `answers` in label-id order."""

    template: str
    answers: tuple[str, ...]


#: stsb's targets: similarity scores rounded to the nearest 0.2, written with one decimal (T5 paper, sec. 2.4).
STSB_ANSWERS = tuple(f"{i * 0.2:.1f}" for i in range(26))

#: The T5 paper's GLUE formats, by hfsoup task name; `answers` in the dataset's label-id order (`label_names`).
T5_FORMATS: dict[str, T5Format] = {
    "cola": T5Format("cola sentence: {sentence}", ("unacceptable", "acceptable")),
    "sst2": T5Format("sst2 sentence: {sentence}", ("negative", "positive")),
    "mrpc": T5Format("mrpc sentence1: {sentence1} sentence2: {sentence2}", ("not_equivalent", "equivalent")),
    "qqp": T5Format("qqp question1: {question1} question2: {question2}", ("not_duplicate", "duplicate")),
    "stsb": T5Format("stsb sentence1: {sentence1} sentence2: {sentence2}", STSB_ANSWERS),
    "mnli": T5Format("mnli hypothesis: {hypothesis} premise: {premise}", ("entailment", "neutral", "contradiction")),
    "qnli": T5Format("qnli question: {question} sentence: {sentence}", ("entailment", "not_entailment")),
    "rte": T5Format("rte sentence1: {sentence1} sentence2: {sentence2}", ("entailment", "not_entailment")),
    "wnli": T5Format("wnli sentence1: {sentence1} sentence2: {sentence2}", ("not_entailment", "entailment")),
}


@dataclass
class Candidates:
    """What `predict` scores: each answer's target token ids, and the prediction it stands for."""

    targets: list[Any]  # one 1-D LongTensor per answer
    values: list  # label ids, or floats for stsb


def t5_format(task: Task) -> T5Format:
    """The text-to-text format of `task`, or an `EvaluationError` naming the tasks that have one."""
    if task.name not in T5_FORMATS:
        raise EvaluationError(
            f"Task {task.name!r} has no T5 text-to-text format (task prefix and label words).",
            fix=f"Use one of {', '.join(T5_FORMATS)}, or add its format to "
            "hfsoup.evaluation.predictors.t5.T5_FORMATS.",
        )
    return T5_FORMATS[task.name]


class T5TextToTextPredictor(Predictor):
    """`T5ForConditionalGeneration` (and mT5, UMT5) answering in words, scored over the task's valid answers."""

    name = "t5-text"
    auto_class_name = "AutoModelForSeq2SeqLM"
    architectures: ClassVar[tuple[str, ...]] = (
        "T5ForConditionalGeneration",
        "MT5ForConditionalGeneration",
        "UMT5ForConditionalGeneration",
    )

    def accepts(self, architectures: list[str]) -> bool:
        return any(arch in self.architectures for arch in architectures)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> Candidates:
        import torch

        form = t5_format(task)
        if tokenizer is None:
            raise EvaluationError(
                f"Scoring {model_name!r} as text-to-text needs its tokenizer, to encode the answers.",
                fix="Pass tokenizer= to Evaluator or to score().",
            )
        targets = [torch.tensor(tokenizer(answer).input_ids, dtype=torch.long) for answer in form.answers]
        seen: dict[tuple[int, ...], str] = {}
        for answer, target in zip(form.answers, targets, strict=True):
            clash = seen.setdefault(tuple(target.tolist()), answer)
            if clash != answer:  # The tokenizer cannot tell them apart: the first always wins the tie.
                logger.warning("Answers %r and %r of %s encode to the same tokens.", clash, answer, task.name)
        values = [float(a) for a in form.answers] if task.is_regression else list(range(len(form.answers)))
        return Candidates(targets, values)

    def encode(self, examples: dict[str, list], *, task: Task, tokenizer: Any, max_length: int) -> dict[str, list]:
        template = t5_format(task).template
        rows = zip(*(examples[name] for name in task.text_fields), strict=True)
        texts = [template.format(**dict(zip(task.text_fields, row, strict=True))) for row in rows]
        return dict(tokenizer(texts, truncation=True, max_length=max_length))

    def answers(self, prepared: Candidates) -> list | None:
        return list(prepared.values)

    def scores(self, model: Any, batch: dict[str, Any], conditioned: Candidates) -> Any:
        """Each answer's log-likelihood, `(examples, answers)`: the sum of its target tokens' log-probabilities,
        end-of-sequence included; the encoder runs once per batch, the decoder once per answer."""
        import torch

        mask = batch["attention_mask"]
        encoded = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=mask)
        scores = []
        for target in conditioned.targets:  # One decoder pass per answer, over the whole batch.
            labels = target.to(mask.device).unsqueeze(0).expand(mask.shape[0], -1)
            logits = model(
                encoder_outputs=encoded,
                attention_mask=mask,
                decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels),
            ).logits
            log_probs = logits.float().log_softmax(dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            scores.append(log_probs.sum(dim=-1))
        return torch.stack(scores, dim=1)
