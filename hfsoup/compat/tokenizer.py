"""Tokenizer fingerprints: do two ingredients mean the same token by the same embedding row?

Computed from the tokenizer files alone (no tokenizer is instantiated, no code runs): the vocabulary (token -> id,
merges, added tokens) is hashed canonically, so a re-saved copy of the same tokenizer matches byte-different files.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IngredientConfigError, quote
from .files import ShapeError, checked_field, parse_json, read_bounded, read_json_object

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Files that define a vocabulary when there is no tokenizer.json (slow tokenizers).
_VOCAB_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


@dataclass(frozen=True)
class TokenizerFingerprint:
    vocab: str  # sha256 of the canonical vocabulary
    size: int  # number of tokens (-1 when unknown)
    specials: dict[str, str] = field(default_factory=dict)
    added: tuple[str, ...] = ()  # the added tokens' contents (tokenizer.json), by id
    chat_template: str | None = None  # sha256 of the chat template(s), wherever the folder keeps them

    @property
    def short(self) -> str:
        return self.vocab[:10]


def _token(data: dict, key: str) -> str | None:
    value = checked_field(data, key, "a token (a string, or an object with a string 'content')", _is_token)
    if isinstance(value, dict):  # AddedToken serialized as {"content": ...}
        value = value.get("content")
    return value


def _is_token(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("content"), str | None))


def _specials(folder: Path) -> dict[str, str]:
    specials: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        data = read_json_object(path)
        if data is None:
            continue
        for key in SPECIAL_KEYS:
            try:
                token = _token(data, key)
            except ShapeError as e:
                raise e.where(path) from None
            if token is not None:
                specials.setdefault(key, token)
    return specials


@functools.lru_cache(maxsize=8)
def _tokenizer_json_digest(raw: bytes) -> tuple[str, int, tuple[str, ...]]:
    """Canonical vocabulary hash and size of a tokenizer.json. Cached by content: the ingredients of one soup usually
    ship byte-identical files, and canonicalising a large vocabulary costs a fraction of a second each time."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ShapeError("(the whole file)", "an object", data)
    model = checked_field(data, "model", "an object", lambda v: isinstance(v, dict)) or {}
    vocab = checked_field(model, "vocab", "an object of token to id, or a list", lambda v: isinstance(v, dict | list))
    if isinstance(vocab, dict):
        bad = next((t for t, i in vocab.items() if not isinstance(i, int) or isinstance(i, bool)), None)
        if bad is not None:
            raise ShapeError(f"model.vocab[{quote(bad, limit=40)}]", "an integer token id", vocab[bad])
    checked_field(model, "merges", "a list", lambda v: isinstance(v, list))
    checked_field(model, "type", "a string", lambda v: isinstance(v, str))
    tokens = checked_field(data, "added_tokens", "a list of tokens", lambda v: isinstance(v, list)) or []
    for i, t in enumerate(tokens):
        what = "an object with an integer 'id' and a string 'content'"
        if not isinstance(t, dict) or not isinstance(t.get("content"), str):
            raise ShapeError(f"added_tokens[{i}]", what, t)
        if not isinstance(t.get("id", -1), int) or isinstance(t.get("id"), bool):
            raise ShapeError(f"added_tokens[{i}].id", "an integer", t.get("id"))
    added = sorted((t.get("id", -1), t["content"]) for t in tokens)
    canonical = {"type": model.get("type"), "vocab": vocab, "merges": model.get("merges"), "added": added}
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab or [])))
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest, len(ids | {i for i, _ in added}), tuple(content for _, content in added)


def tokenizer_fingerprint(folder: Path) -> TokenizerFingerprint | None:
    """The fingerprint of the tokenizer in `folder`, or None when it ships none."""
    digest = hashlib.sha256()
    size, added = -1, ()
    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            vocab_digest, size, added = _tokenizer_json_digest(read_bounded(path))
        except ShapeError as e:
            raise e.where(path) from None
        except ValueError as e:
            raise IngredientConfigError(
                f"{path} is not valid JSON ({quote(str(e))}).", fix="Re-save the tokenizer, or use another model."
            ) from None
        digest.update(vocab_digest.encode())
    else:
        found = [name for name in _VOCAB_FILES if (folder / name).is_file()]
        if not found:
            return None
        for name in found:
            digest.update(name.encode() + b"\0" + read_bounded(folder / name))
        if (folder / "vocab.txt").is_file():
            try:
                size = len(read_bounded(folder / "vocab.txt").decode("utf-8").splitlines())
            except UnicodeDecodeError as e:
                raise IngredientConfigError(
                    f"{folder / 'vocab.txt'} is not UTF-8 text (byte {e.start}): a vocabulary is one token per line.",
                    fix="Re-save the tokenizer, or use another model.",
                ) from None
    return TokenizerFingerprint(digest.hexdigest(), size, _specials(folder), added, chat_template_digest(folder))


def chat_template_digest(folder: Path) -> str | None:
    """A hash of the chat template(s) in `folder`, as transformers finds them (`chat_template.jinja`,
    `chat_template.json`, or `chat_template` in `tokenizer_config.json`), or None when there is none."""
    found: list = []
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        found.append(read_bounded(jinja).decode("utf-8", "replace"))
    for name in ("chat_template.json", "tokenizer_config.json"):
        data = read_json_object(folder / name)
        if data is not None and data.get("chat_template") is not None:
            found.append(data["chat_template"])
    if not found:
        return None
    return hashlib.sha256(json.dumps(found[0], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
