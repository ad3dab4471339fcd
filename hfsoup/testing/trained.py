"""Tiny families that were really trained: T5 on a learnable sst2, CLIP classifying digits, CLIP zero-shot on digits.

The noise fine-tunes of `families.py` share a base but score at chance; a greedy or learned soup needs ingredients
that learned something, some better than others, and one that learned the wrong thing. Each family here is a shared
"pretrained" start (a seeded initialization trained briefly on the task) and real fine-tunes from it: 40 to 160
Adam steps each, with their own seed (data order), learning rate and number of steps, so they differ in weights and
in accuracy. Families `t5-sst2` and `clip-digits` also have `swapped`, fine-tuned from the same start on swapped
labels (sst2's negative and positive; digit `y` as `9 - y`), which scores well below chance.

Families, by name (members `start`, `ft0`, `ft1`, ..., and `swapped`):

- `t5-sst2`: `T5ForConditionalGeneration` (the tiny T5 of `tiny_models.t5_config`) trained text-to-text in the T5
  paper's format (`sst2 sentence: ...` -> `negative` / `positive`) on `sentiment.build_sentiment`'s train split;
  scored by the `t5-text` predictor with `--task sst2 --dataset SENTIMENT_REPO`.
- `clip-digits`: `CLIPForImageClassification` (the tiny CLIP's vision tower and a head) trained on the digits of
  `digits.build_digits(rows=DIGITS_ROWS)`; scored with `--task image-classification --dataset DIGITS_REPO`.
- `clip-zs`: `CLIPModel` trained contrastively, each image against the ten classes' prompts ("a photo of the number
  {name}." and the other digit templates of `CLIP_TEMPLATES`); scored zero-shot by `clip-zero-shot`. No `swapped`.

Everything is seeded and trained on one thread inside `torch.random.fork_rng`, so a build is byte-identical for a
seed and leaves the caller's random state and thread count alone; the whole build takes about 35 s of one CPU core
(T5: 25 s). `publish_trained` puts the datasets and every member on the Hub that `HF_ENDPOINT` names (the local one
in tests).

Example:
    ```py
    >>> fixtures = build_trained(tmp / "trained")
    >>> with LocalHubServer(root, anonymous_writes=True) as hub, use_local_hub(hub.url, home):
    ...     ids = publish_trained(fixtures)
    >>> ids.good("t5-sst2"), ids.swapped("t5-sst2")
    (['hfsoup-testing/t5-sst2-ft0', ..., 'hfsoup-testing/t5-sst2-ft3'], 'hfsoup-testing/t5-sst2-swapped')
    ```
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCardData

from .digits import DIGIT_NAMES, build_digits, digit_images, publish_digits
from .families import DEFAULT_ORG
from .glue import publish_glue
from .sentiment import SENTIMENT_REPO, SENTIMENT_ROWS, build_sentiment, sentiment_rows
from .tiny_models import ARCHS, clip_config, clip_image_processor, derive_seed, init_model, snapshot, t5_config
from .tiny_tokenizers import clip_tokenizer, t5_tokenizer

logger = logging.getLogger(__name__)

#: The digits' repo on the trained Hub: its name must end in `digits` for the zero-shot digit prompt templates.
DIGITS_REPO = "hfsoup-trained/digits"
#: Enough digits to learn from; validation is even, so `validation[:50%]` and `validation[50%:]` are equal halves.
DIGITS_ROWS = {"train": 400, "validation": 200}


@dataclass(frozen=True)
class Run:
    """One training run from the shared start (or, for `start`, from the initialization).

    Args:
        name (`str`): The member's name (`start`, `ft0`, ..., `swapped`); with the family's seed, seeds the run.
        steps (`int`): Adam steps, one batch of `batch_size` training rows (drawn with replacement) each.
        lr (`float`): The learning rate.
        labels (`str`): `"true"`, or `"swapped"` (trained to be wrong).
        batch_size (`int`): Training rows per step.
    """

    name: str
    steps: int
    lr: float
    labels: str = "true"
    batch_size: int = 32


@dataclass(frozen=True)
class Recipe:
    """How one family is trained: its start, its good fine-tunes, and the one on swapped labels (or none)."""

    start: Run
    finetunes: tuple[Run, ...]
    swapped: Run | None = None

    def runs(self) -> tuple[Run, ...]:
        return (*self.finetunes, *((self.swapped,) if self.swapped else ()))


# Learning rates and lengths differ per fine-tune, like the runs of a hyperparameter sweep that the paper soups.
RECIPES: dict[str, Recipe] = {
    # A T5 step of 64 rows costs ~1.4 times one of 32 (most of a step is per-op overhead): big batches buy steps.
    "t5-sst2": Recipe(
        Run("start", 80, 3e-3, batch_size=64),
        (
            Run("ft0", 40, 2e-3, batch_size=64),
            Run("ft1", 80, 2e-3, batch_size=64),
            Run("ft2", 120, 2e-3, batch_size=64),
            Run("ft3", 160, 1e-3, batch_size=64),
        ),
        Run("swapped", 200, 4e-3, labels="swapped", batch_size=64),
    ),
    "clip-digits": Recipe(
        Run("start", 30, 3e-3),
        (Run("ft0", 60, 2e-3), Run("ft1", 120, 2e-3), Run("ft2", 90, 3e-3), Run("ft3", 150, 1e-3)),
        Run("swapped", 150, 3e-3, labels="swapped"),
    ),
    "clip-zs": Recipe(Run("start", 60, 3e-3), (Run("ft0", 40, 2e-3), Run("ft1", 80, 2e-3), Run("ft2", 60, 3e-3))),
}


@dataclass
class TrainedFamily:
    """The folders of one trained family: `root / member` for each member."""

    name: str
    root: Path
    start: Path
    finetunes: list[Path]
    swapped: Path | None = None

    def folders(self) -> dict[str, Path]:
        """Every member by name: `start`, `ft0`, ..., and `swapped` where there is one."""
        folders = {"start": self.start, **{f"ft{i}": p for i, p in enumerate(self.finetunes)}}
        return folders | ({"swapped": self.swapped} if self.swapped else {})


@dataclass
class TrainedFixtures:
    """What `build_trained` wrote: the two dataset folders, the three families, and how long it took."""

    root: Path
    sentiment: Path
    digits: Path
    families: dict[str, TrainedFamily]
    seconds: float = 0.0


@dataclass
class TrainedHub:
    """The Hub IDs of published trained fixtures (`publish_trained`), and each repo's local folder."""

    sentiment_dataset: str
    digits_dataset: str
    ids: dict[str, dict[str, str]]  # family -> member -> repo id
    folders: dict[str, Path] = field(default_factory=dict)  # repo id -> local folder
    endpoint: str = ""  # the Hub they were published to

    def good(self, family: str) -> list[str]:
        """The good fine-tunes of `family`, `ft0`, `ft1`, ..., in order."""
        return [repo for member, repo in self.ids[family].items() if member.startswith("ft")]

    def swapped(self, family: str) -> str:
        """The member of `family` fine-tuned on swapped labels."""
        return self.ids[family]["swapped"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """One thread and a seeded global RNG (for any op that draws from it), both put back on exit.

    One thread because results of float reductions may depend on how many threads share them, and a build must be
    byte-identical on any machine; it is also the faster way for models this small.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


class _T5Sst2:
    """The tiny T5 learning sst2 text-to-text: inputs in the T5 format, the label word as the target."""

    def __init__(self) -> None:
        from ..evaluation.predictors.t5 import T5_FORMATS
        from ..evaluation.tasks import TASKS

        self.tokenizer = t5_tokenizer()
        form = T5_FORMATS["sst2"]
        rows = sentiment_rows(TASKS["sst2"], "train", SENTIMENT_ROWS["train"])
        self.inputs = self.tokenizer(
            [form.template.format(sentence=s) for s in rows["sentence"]], padding=True, return_tensors="pt"
        )
        self.targets = {}
        for labels, ids in _labellings(torch.tensor(rows["label"]), 2).items():
            ids = self.tokenizer([form.answers[y] for y in ids.tolist()], padding=True, return_tensors="pt").input_ids
            self.targets[labels] = ids.masked_fill(ids == self.tokenizer.pad_token_id, -100)
        self.n_rows = len(rows["label"])

    def init(self, *, seed: int):
        config = t5_config(self.tokenizer)
        config.dropout_rate = 0.0  # A few hundred steps on 400 rows: dropout would only slow them down.
        model = init_model(ARCHS["t5"], config, seed=seed)
        model.config.architectures = ["T5ForConditionalGeneration"]
        return model

    def loss(self, model, rows: torch.Tensor, *, labels: str) -> torch.Tensor:
        inputs = {k: v[rows] for k, v in self.inputs.items()}
        return model(**inputs, labels=self.targets[labels][rows]).loss

    def save(self, model, folder: Path) -> None:
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class _ClipDigits:
    """The tiny CLIP's vision tower with a 10-way head, learning the digits from the image processor's pixels."""

    def __init__(self) -> None:
        self.image_processor = clip_image_processor()
        images, labels = digit_images()
        n = DIGITS_ROWS["train"]  # build_digits writes the train split first: these are its rows
        self.pixels = torch.from_numpy(self.image_processor(images=images[:n], return_tensors="np")["pixel_values"])
        self.labels = _labellings(torch.tensor(labels[:n]), len(DIGIT_NAMES))
        self.n_rows = n

    def init(self, *, seed: int):
        from transformers import CLIPForImageClassification

        config = clip_config(clip_tokenizer())
        config.num_labels = len(DIGIT_NAMES)
        config.id2label = dict(enumerate(DIGIT_NAMES))
        config.label2id = {name: i for i, name in enumerate(DIGIT_NAMES)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPForImageClassification(config)
        model.config.architectures = ["CLIPForImageClassification"]
        return model

    def loss(self, model, rows: torch.Tensor, *, labels: str) -> torch.Tensor:
        logits = model(pixel_values=self.pixels[rows]).logits
        return torch.nn.functional.cross_entropy(logits, self.labels[labels][rows])

    def save(self, model, folder: Path) -> None:
        model.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


class _ClipZeroShot(_ClipDigits):
    """The tiny `CLIPModel`, each digit image pulled towards its class's prompts and away from the nine others'."""

    def __init__(self) -> None:
        from ..evaluation.predictors.image import CLIP_TEMPLATES

        super().__init__()
        self.tokenizer = clip_tokenizer()
        prompts = [template.format(name) for name in DIGIT_NAMES for template in CLIP_TEMPLATES["digits"]]
        self.prompts = self.tokenizer(prompts, padding=True, return_tensors="pt")
        self.per_class = len(CLIP_TEMPLATES["digits"])

    def init(self, *, seed: int):
        model = init_model(ARCHS["clip"], clip_config(self.tokenizer), seed=seed)
        model.config.architectures = ["CLIPModel"]
        return model

    def loss(self, model, rows: torch.Tensor, *, labels: str) -> torch.Tensor:
        # As the zero-shot predictor classifies: each class's prompt embeddings averaged, then cosine similarity.
        functional = torch.nn.functional
        texts = functional.normalize(model.text_projection(model.text_model(**self.prompts).pooler_output), dim=-1)
        classes = functional.normalize(texts.reshape(len(DIGIT_NAMES), self.per_class, -1).mean(dim=1), dim=-1)
        pooled = model.vision_model(pixel_values=self.pixels[rows]).pooler_output
        images = functional.normalize(model.visual_projection(pooled), dim=-1)
        logits = model.logit_scale.exp() * images @ classes.T
        return functional.cross_entropy(logits, self.labels[labels][rows])

    def save(self, model, folder: Path) -> None:
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


_TRAINERS = {"t5-sst2": _T5Sst2, "clip-digits": _ClipDigits, "clip-zs": _ClipZeroShot}
_PIPELINE_TAGS = {
    "t5-sst2": "text2text-generation",
    "clip-digits": "image-classification",
    "clip-zs": "zero-shot-image-classification",
}


def _labellings(labels: torch.Tensor, n_classes: int) -> dict[str, torch.Tensor]:
    """The labels a run may train on: as they are, and swapped (`y` as `n_classes - 1 - y`: sst2's negative and
    positive trade places, digit `y` becomes `9 - y`)."""
    return {"true": labels, "swapped": n_classes - 1 - labels}


def _train(model, trainer, run: Run, *, seed: int) -> None:
    """`run.steps` Adam steps on batches drawn with a generator seeded by `seed`; the model ends in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.lr)
    model.train()
    for _ in range(run.steps):
        rows = torch.randint(trainer.n_rows, (run.batch_size,), generator=generator)
        loss = trainer.loss(model, rows, labels=run.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _write(trainer, model, folder: Path, family: str, run: Run, *, seed: int) -> Path:
    if folder.exists():  # a rebuild replaces the member whole
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    trainer.save(model, folder)
    base_model = None if run.name == "start" else f"{DEFAULT_ORG}/{family}-start"
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=_PIPELINE_TAGS[family],
        tags=["hfsoup-testing", "tiny", family],
    )
    what = {"true": "trained", "swapped": "trained on swapped labels"}[run.labels]
    body = (
        f"# {family}-{run.name}\n\nA tiny model {what} for {run.steps} steps at learning rate {run.lr}, built for "
        f'tests by `hfsoup.testing.trained.build_trained(root, seed={seed})` (family "{family}").\n'
    )
    (folder / "README.md").write_text(f"---\n{data.to_yaml()}\n---\n\n{body}", encoding="utf-8")
    (folder / "training.json").write_text(json.dumps({"family": family, "seed": seed, **asdict(run)}, indent=2))
    return folder


def build_trained_family(name: str, root: str | os.PathLike, *, seed: int = 0) -> TrainedFamily:
    """Train one family of `RECIPES` (`t5-sst2`, `clip-digits` or `clip-zs`) into `root / member`.

    The start is a seeded initialization trained for `recipe.start`; each other member is the start trained again
    for its own run, from a fresh optimizer.
    """
    root, recipe = Path(root), RECIPES[name]
    with seeded(derive_seed(seed, name)):
        trainer = _TRAINERS[name]()
        model = trainer.init(seed=derive_seed(seed, f"{name}-init"))
        _train(model, trainer, recipe.start, seed=derive_seed(seed, f"{name}-start"))
        start_state = snapshot(model)
        members = {"start": _write(trainer, model, root / "start", name, recipe.start, seed=seed)}
        for run in recipe.runs():
            model.load_state_dict(start_state)
            _train(model, trainer, run, seed=derive_seed(seed, f"{name}-{run.name}"))
            members[run.name] = _write(trainer, model, root / run.name, name, run, seed=seed)
    finetunes = [members[run.name] for run in recipe.finetunes]
    return TrainedFamily(name, root, members["start"], finetunes, members.get("swapped"))


def build_trained(root: str | os.PathLike, *, seed: int = 0) -> TrainedFixtures:
    """Build the learnable sst2, the larger digits, and the three trained families (`RECIPES`) under `root`.

    Args:
        root (`str` or `os.PathLike`):
            The folder to build in: `sentiment/`, `digits/`, and one folder per family.
        seed (`int`, *optional*, defaults to 0):
            Seeds every weight and data order. The datasets and tokenizers do not depend on it.

    Returns:
        `TrainedFixtures`: the folders, and the build's duration in seconds.
    """
    started = time.perf_counter()
    root = Path(root)
    sentiment = build_sentiment(root / "sentiment")
    digits = build_digits(root / "digits", rows=DIGITS_ROWS)
    families = {name: build_trained_family(name, root / name, seed=seed) for name in RECIPES}
    seconds = time.perf_counter() - started
    logger.info("Built the trained fixtures in %s in %.1fs.", root, seconds)
    return TrainedFixtures(root, sentiment, digits, families, seconds)


def publish_trained(fixtures: TrainedFixtures, *, api=None) -> TrainedHub:
    """Push the datasets and every member of `fixtures` to the Hub `HF_ENDPOINT` names, one commit per repo.

    Models go to `hfsoup-testing/{family}-{member}` (`hfsoup-testing/t5-sst2-ft0`), the learnable sst2 to
    `SENTIMENT_REPO` and the digits to `DIGITS_REPO`. Each start goes first, so the repo every fine-tune's card
    names exists.
    """
    from .families import publish_folder

    publish_glue(fixtures.sentiment, repo_id=SENTIMENT_REPO, api=api)
    publish_digits(fixtures.digits, repo_id=DIGITS_REPO, api=api)
    ids: dict[str, dict[str, str]] = {}
    folders: dict[str, Path] = {}
    for name, family in fixtures.families.items():
        ids[name] = {}
        for member, folder in family.folders().items():
            repo_id = publish_folder(folder, f"{DEFAULT_ORG}/{name}-{member}", api=api)
            ids[name][member], folders[repo_id] = repo_id, folder
    from huggingface_hub import constants

    endpoint = api.endpoint if api is not None else constants.ENDPOINT
    return TrainedHub(SENTIMENT_REPO, DIGITS_REPO, ids, folders, endpoint)
