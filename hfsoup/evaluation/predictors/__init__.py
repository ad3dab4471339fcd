"""Predictors: what depends on the kind of model when it is scored (inputs, heads, how a prediction is read out).

Adding a kind of model is adding a module here and a line in `PREDICTORS`; nothing else dispatches on the kind.

Modules:
    base.py         the `Predictor` protocol, and the sequence-classification predictor the others build on
    t5.py           T5 as text-to-text: task prefixes in, one of the task's label words out, chosen by scoring
    causal_lm.py    decoder-only LMs scored by the likelihood of a text (task perplexity)
    image.py        image classifiers, and CLIP classifying zero-shot by class names in prompt templates
    registry.py     `PREDICTORS`, the one table of kinds, and `predictor_for` (which kind a model is)
"""
