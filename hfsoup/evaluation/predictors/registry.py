"""Predictors: how one kind of model turns a task's examples into predictions.

The evaluator does the shared work (load the data, tokenize once, batch by length, place the model, split across
processes, gather, compute the metric), and so does the selection stage's scorer, which runs the same steps with a
soup's weights swapped in; a predictor supplies the steps that depend on the kind of model:

1. `accepts(architectures)`: is a model of these classes my kind? (`predictor_for` takes the first that says yes)
2. `prepare(model, task)`: check the model fits the task (labels, heads) and return what the other steps need that
   does not depend on the weights (a label mapping, the answers' token ids, the class prompts tokenized).
3. `encode(examples, ...)`: a batch of raw dataset rows to model inputs; runs once per dataset and tokenizer, through
   `datasets.map`, so its output is cached on disk. Must depend only on its arguments.
4. `scores(model, batch, conditioned)`: one padded batch to a score per answer (`answers(prepared)`: the dataset's
   label ids, or T5's stsb numbers), differentiable in the weights: predictions are the best-scored answers, the
   learned soup minimizes their cross-entropy, the output ensemble averages their log-softmax. `condition(model,
   prepared)`, by default `prepared`, computes once per set of weights what `scores` needs from the weights (CLIP
   zero-shot: the class embeddings).

Adding a kind of model is adding a class (subclassing `base.Predictor`) and a line in `PREDICTORS`; the evaluator,
greedy and learned soups and the results table then score it.
"""

from __future__ import annotations

from ...errors import EvaluationError
from .base import Predictor, SequenceClassificationPredictor
from .causal_lm import CausalLMPredictor
from .image import CLIPZeroShotPredictor, ImageClassificationPredictor
from .t5 import T5TextToTextPredictor

__all__ = ["PREDICTORS", "Predictor", "SequenceClassificationPredictor", "predictor_for"]

#: Kinds of model the evaluator knows, tried in order by `predictor_for`.
PREDICTORS: dict[str, Predictor] = {
    SequenceClassificationPredictor.name: SequenceClassificationPredictor(),
    T5TextToTextPredictor.name: T5TextToTextPredictor(),
    ImageClassificationPredictor.name: ImageClassificationPredictor(),
    CLIPZeroShotPredictor.name: CLIPZeroShotPredictor(),
    CausalLMPredictor.name: CausalLMPredictor(),
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
        "image classifier or a CLIPModel (zero-shot) on an image task; a causal LM (LlamaForCausalLM, ...) on "
        "perplexity.",
    )
