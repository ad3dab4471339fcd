"""A learnable tiny sst2: GLUE-shaped sentences whose labels follow from their words, for models that must learn.

`hfsoup.testing.glue` labels its sentences at random, which is right for checking the machinery and useless for a
soup that should beat its ingredients. Here each sentence carries its sentiment in its adjectives: most are plain
(`the plot was very charming .`), a third are hard, with an adjective of each polarity where the one after `but` or
`yet` decides (`the film was dull but the cast was brilliant .`), and `NOISE` of the labels are flipped, so no model
reaches 100%. The rows keep the real sst2's columns and features (`sentence`, `label` as `ClassLabel(negative,
positive)`, `idx` int32, test labels `-1`), written by `build_glue`, so `--task sst2 --dataset SENTIMENT_REPO` loads
them as it would load `nyu-mll/glue`.

Example:
    ```py
    >>> with LocalHubServer(root, anonymous_writes=True) as hub, use_local_hub(hub.url, home):
    ...     publish_glue(build_sentiment(tmp / "sentiment"), repo_id=SENTIMENT_REPO)
    ...     evaluate_model("org/t5-ft", "sst2", dataset=SENTIMENT_REPO).metrics()
    {'accuracy': 0.71}
    ```
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..evaluation.tasks import Task
from .glue import build_glue

SENTIMENT_REPO = "hfsoup-testing/sentiment-glue"
#: Rows per split: validation is even, so `validation[:50%]` and `validation[50%:]` are halves of one size.
SENTIMENT_ROWS = {"train": 400, "validation": 200, "test": 20}
#: The share of train and validation labels flipped: the ceiling any model can score, about 1 - NOISE.
NOISE = 0.08

# Every word is in the tiny tokenizers' corpus (`tiny_tokenizers.MAIN_CORPUS`), so sentences stay a few tokens long.
POSITIVE = "good great lovely wonderful funny brilliant clever charming beautiful stunning memorable excellent".split()
NEGATIVE = "bad awful boring terrible slow dull silly weak predictable ugly forgettable mediocre".split()
_NOUNS = "movie film plot actor script scene ending story camera cast sequel hero villain comedy drama".split()
_ADVERBS = "very really quite truly rather mostly".split()
# `{adj}` takes the label's polarity, `{other}` the opposite one: the hard templates put the decisive word last.
_TEMPLATES = (
    "the {noun} was {adv} {adj} .",
    "{adj} {noun} with a {adj} {noun} .",
    "i thought the {noun} was {adv} {adj} !",
    "{adv} {adj} {noun} , {adv} {adj} {noun} .",
    "the {noun} was {other} but the {noun} was {adj} .",
    "a {other} {noun} , yet {adv} {adj} .",
)


def sentiment_rows(task: Task, split: str, n: int, *, seed: int = 0) -> dict[str, list]:
    """`n` rows of sst2 for `split` whose labels follow their adjectives (see the module docstring), seeded by
    split; balanced before the noise; `test*` splits unlabelled (`-1`) as in GLUE. A `glue.RowMaker`."""
    rng = np.random.default_rng([seed, 5723, sum(map(ord, split))])
    labels = [int(v) for v in rng.permutation([i % 2 for i in range(n)])]
    sentences = []
    for label in labels:
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        sentences.append(" ".join(_word(rng, w[1:-1], label) if w.startswith("{") else w for w in template.split()))
    flips = rng.random(n) < NOISE
    if split.startswith("test"):
        labels = [-1] * n
    else:
        labels = [1 - y if flip else y for y, flip in zip(labels, flips, strict=True)]
    return {"sentence": sentences, "label": labels, "idx": list(range(n))}


def _word(rng: np.random.Generator, slot: str, label: int) -> str:
    words = {"noun": _NOUNS, "adv": _ADVERBS, "adj": (NEGATIVE, POSITIVE)[label], "other": (POSITIVE, NEGATIVE)[label]}
    return words[slot][rng.integers(len(words[slot]))]


def build_sentiment(root: str | os.PathLike, *, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write the learnable sst2 as a GLUE-shaped dataset folder (config `sst2`); return `root`.

    Publish it with `glue.publish_glue(folder, repo_id=SENTIMENT_REPO)`.
    """
    return build_glue(
        root,
        tasks=["sst2"],
        seed=seed,
        sizes=sizes or SENTIMENT_ROWS,
        make_rows=sentiment_rows,
        pretty_name="Sentiment (tiny sst2 with learnable labels)",
        description="Sentences in the shape of `nyu-mll/glue` sst2 whose labels follow from their adjectives, "
        f"{NOISE:.0%} flipped; built by `hfsoup.testing.sentiment.build_sentiment` for tests.",
    )
