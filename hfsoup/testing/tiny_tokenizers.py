"""Tiny, deterministic tokenizers for the test families, learned from built-in seeded corpora.

The `tokenizers` trainers are not reproducible across processes: they break ties between equally frequent pairs in
hash-map order, which Rust seeds per process, so two runs give different vocabularies. The families must be
byte-identical for a given seed, so the vocabulary is learned here by a small byte-pair-encoding loop that breaks
ties by the pair itself, and the result is handed to the `transformers` tokenizer classes, which assemble the
`tokenizers` pipeline (normalizer, pre-tokenizer, WordPiece / Unigram / BPE model, post-processor) around it.

Every tokenizer has a fixed size whatever the corpus, so that a tokenizer learned from `OTHER_CORPUS` fits the same
embedding shapes as one learned from `MAIN_CORPUS`: the dangerous case a compatibility check must catch.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from tokenizers import pre_tokenizers
from transformers import BertTokenizer, CLIPTokenizer, T5Tokenizer

# The corpora are fixed (not tied to a family's seed): a family's seed moves its weights, never its tokenizer.
CORPUS_SEED = 1234
BERT_VOCAB_SIZE = 384
T5_VOCAB_SIZE = 384
CLIP_VOCAB_SIZE = 640

_MAIN_WORDS = {
    "noun": "movie film plot actor actress script scene soundtrack ending director story dialogue camera cast sequel"
    " character villain hero trailer comedy drama thriller documentary animation performance",
    "adj": "good great bad awful boring lovely terrible wonderful slow funny dull brilliant weak strong charming"
    " predictable moving clever silly beautiful ugly stunning forgettable memorable excellent mediocre delightful",
    "adv": "very really quite truly rather surprisingly incredibly mostly barely",
    "verb": "loved hated enjoyed liked disliked admired watched recommend regretted",
    "color": "red green blue yellow black white orange purple brown grey",
    "thing": "cat dog horse bird fish zebra tiger rabbit sheep cow fox owl frog",
    "place": "beach street grass table sofa mountain river field road roof",
}
_MAIN_TEMPLATES = [
    "The {noun} was {adv} {adj}.",
    "I {verb} this {noun}, it is {adj}!",
    "A photo of a {color} {thing} on the {place}.",
    "{adj} {noun} with a {adj} {noun}, {adv} {adj}.",
    "Two {color} {thing}s near the {place}; the {noun} is {adj}.",
]
_OTHER_WORDS = {
    "verb": "stir chop bake boil whisk simmer roast season slice grate fry knead pour",
    "food": "onion garlic butter flour tomato pepper carrot potato lemon cheese noodle mushroom spinach ginger"
    " cinnamon yogurt chickpea lentil",
    "unit": "minutes hours grams cups spoons",
    "weather": "sunny cloudy rainy windy foggy stormy humid chilly freezing",
    "thing": "drizzle thunder forecast temperature pressure breeze showers",
    "place": "valley coast harbour plateau highlands lowlands northern southern eastern western",
}
_OTHER_TEMPLATES = [
    "{verb} the {food} for {n} {unit}.",
    "Add {n}{n} {unit} of {food}, then {verb} it with {food}.",
    "Tomorrow: {weather} over the {place} {place}, {thing} at {n}{n} degrees.",
    "{weather} {thing} and {weather} {thing}; {verb} the {food} indoors!",
]


def _make_corpus(words: dict[str, str], templates: list[str], *, n_sentences: int, seed: int) -> tuple[str, ...]:
    rng = random.Random(seed)
    pools = {slot: pool.split() for slot, pool in words.items()}
    sentences = []
    for _ in range(n_sentences):
        template = rng.choice(templates)
        # Fill slots one at a time so that a slot used twice in a template gets two independent draws.
        while "{" in template:
            start = template.index("{")
            slot = template[start + 1 : template.index("}", start)]
            value = str(rng.randrange(10)) if slot == "n" else rng.choice(pools[slot])
            template = template[:start] + value + template[start + len(slot) + 2 :]
        sentences.append(template)
    return tuple(sentences)


MAIN_CORPUS = _make_corpus(_MAIN_WORDS, _MAIN_TEMPLATES, n_sentences=400, seed=CORPUS_SEED)
"""Film reviews and photo captions: what the base, the fine-tunes and every other member are tokenized with."""
OTHER_CORPUS = _make_corpus(_OTHER_WORDS, _OTHER_TEMPLATES, n_sentences=400, seed=CORPUS_SEED + 1)
"""Recipes and weather reports: the corpus of the `other_tokenizer` troublemaker."""

CORPORA = {"main": MAIN_CORPUS, "other": OTHER_CORPUS}


def _learn_bpe(
    words: Counter[tuple[str, ...]], *, alphabet: list[str], n_tokens: int, join: Callable[[str, str], str]
) -> tuple[list[str], list[tuple[str, str]], dict[str, int]]:
    """Learn byte-pair merges until `n_tokens` new tokens exist; return (new tokens, merges, counts per token)."""
    known = set(alphabet)
    tokens: list[str] = []
    merges: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    while len(tokens) < n_tokens:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break  # Every word is one token: the caller pads the vocabulary.
        # The most frequent pair, ties broken by the pair itself: this is what makes the vocabulary reproducible.
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = join(*best)
        merges.append(best)
        if merged not in known:
            known.add(merged)
            tokens.append(merged)
            counts[merged] = pairs[best]
        words = Counter({_merge_pair(symbols, best, merged): count for symbols, count in words.items()})
    return tokens, merges, counts


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def _pre_tokenized_words(tokenizer, corpus: tuple[str, ...]) -> Counter[str]:
    """Split the corpus with the tokenizer's own normalizer and pre-tokenizer, so the vocabulary fits what it sees."""
    backend = tokenizer.backend_tokenizer
    words: Counter[str] = Counter()
    for sentence in corpus:
        text = backend.normalizer.normalize_str(sentence) if backend.normalizer is not None else sentence
        words.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return words


def _padding(prefix: str, count: int, suffix: str) -> list[str]:
    # Unreachable filler tokens (like BERT's `[unused0]`) keep the size fixed when a corpus runs out of merges.
    return [f"{prefix}{i}{suffix}" for i in range(count)]


_PRINTABLE = [chr(c) for c in range(33, 127)]


@lru_cache(maxsize=4)
def _bert_vocab(corpus_name: str, vocab_size: int) -> tuple[str, ...]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # The alphabet is fixed, not read off the corpus, so every corpus yields a vocabulary of the same size.
    chars = sorted({c.lower() for c in _PRINTABLE})
    alphabet = chars + ["##" + c for c in chars]
    words = _pre_tokenized_words(BertTokenizer(), CORPORA[corpus_name])
    split = Counter({(w[0], *("##" + c for c in w[1:])): n for w, n in words.items()})
    n_new = vocab_size - len(specials) - len(alphabet)
    tokens, _, _ = _learn_bpe(split, alphabet=alphabet, n_tokens=n_new, join=lambda a, b: a + b.removeprefix("##"))
    return tuple(specials + alphabet + tokens + _padding("[unused", n_new - len(tokens), "]"))


def bert_tokenizer(corpus_name: str = "main", *, vocab_size: int = BERT_VOCAB_SIZE, model_max_length: int = 64):
    """A lower-casing WordPiece `BertTokenizer(Fast)` with `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4.

    Args:
        corpus_name (`str`, *optional*, defaults to `"main"`):
            `"main"` (`MAIN_CORPUS`) or `"other"` (`OTHER_CORPUS`).
        vocab_size (`int`, *optional*, defaults to `BERT_VOCAB_SIZE`):
            The exact number of tokens, whatever the corpus.
        model_max_length (`int`, *optional*, defaults to 64):
            Should match the model's `max_position_embeddings`.
    """
    vocab = {token: i for i, token in enumerate(_bert_vocab(corpus_name, vocab_size))}
    return BertTokenizer(vocab=vocab, model_max_length=model_max_length)


@lru_cache(maxsize=4)
def _t5_vocab(corpus_name: str, vocab_size: int) -> tuple[tuple[str, float], ...]:
    specials = ["<pad>", "</s>", "<unk>"]  # T5's fixed ids: pad 0 (also the decoder start), eos 1, unk 2.
    words = _pre_tokenized_words(T5Tokenizer(extra_ids=0), CORPORA[corpus_name])
    alphabet = ["▁", *(c for c in _PRINTABLE)]
    n_new = vocab_size - len(specials) - len(alphabet)
    tokens, _, counts = _learn_bpe(
        Counter({tuple(w): n for w, n in words.items()}), alphabet=alphabet, n_tokens=n_new, join=str.__add__
    )
    # Unigram scores are log-frequencies; characters never seen get the score of a half occurrence.
    char_counts = Counter(c for w, n in words.items() for c in w * n)
    total = sum(char_counts.values())
    scored = [(c, math.log(max(char_counts[c], 0.5) / total)) for c in alphabet]
    scored += [(t, math.log(counts[t] / total)) for t in tokens]
    scored += [(t, math.log(0.1 / total)) for t in _padding("<unused_", n_new - len(tokens), ">")]
    return tuple([(s, 0.0) for s in specials] + scored)


def t5_tokenizer(corpus_name: str = "main", *, vocab_size: int = T5_VOCAB_SIZE, model_max_length: int = 64):
    """A cased Unigram `T5Tokenizer(Fast)` with `<pad>`=0, `</s>`=1, `<unk>`=2 and no sentinel (`extra_ids=0`).

    Args:
        corpus_name (`str`, *optional*, defaults to `"main"`):
            `"main"` (`MAIN_CORPUS`) or `"other"` (`OTHER_CORPUS`).
        vocab_size (`int`, *optional*, defaults to `T5_VOCAB_SIZE`):
            The exact number of pieces, whatever the corpus.
        model_max_length (`int`, *optional*, defaults to 64):
            The length the tokenizer truncates to.
    """
    return T5Tokenizer(vocab=list(_t5_vocab(corpus_name, vocab_size)), extra_ids=0, model_max_length=model_max_length)


@lru_cache(maxsize=4)
def _clip_vocab(corpus_name: str, vocab_size: int) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    # As in OpenAI's CLIP: the 256 byte symbols, the same with the end-of-word mark, the merges, then the specials.
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    alphabet = byte_symbols + [s + "</w>" for s in byte_symbols]
    specials = ["<|startoftext|>", "<|endoftext|>"]
    words = _pre_tokenized_words(CLIPTokenizer(), CORPORA[corpus_name])
    split = Counter({(*w[:-1], w[-1] + "</w>"): n for w, n in words.items()})
    n_new = vocab_size - len(alphabet) - len(specials)
    tokens, merges, _ = _learn_bpe(split, alphabet=alphabet, n_tokens=n_new, join=str.__add__)
    vocab = alphabet + tokens + _padding("<|unused_", n_new - len(tokens), "|>") + specials
    return tuple(vocab), tuple(merges)


def clip_tokenizer(corpus_name: str = "main", *, vocab_size: int = CLIP_VOCAB_SIZE, model_max_length: int = 32):
    """A lower-casing byte-level BPE `CLIPTokenizer(Fast)`; `<|startoftext|>` and `<|endoftext|>` are the last ids.

    Args:
        corpus_name (`str`, *optional*, defaults to `"main"`):
            `"main"` (`MAIN_CORPUS`) or `"other"` (`OTHER_CORPUS`).
        vocab_size (`int`, *optional*, defaults to `CLIP_VOCAB_SIZE`):
            The exact number of tokens, whatever the corpus; at least 514 (bytes, bytes ending a word, specials).
        model_max_length (`int`, *optional*, defaults to 32):
            Should match the text model's `max_position_embeddings`.
    """
    tokens, merges = _clip_vocab(corpus_name, vocab_size)
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=model_max_length)


TOKENIZERS = {"bert": bert_tokenizer, "t5": t5_tokenizer, "clip": clip_tokenizer}
