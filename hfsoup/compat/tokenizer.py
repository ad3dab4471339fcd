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

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Files that define a vocabulary when there is no tokenizer.json (slow tokenizers).
_VOCAB_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


@dataclass(frozen=True)
class TokenizerFingerprint:
    vocab: str  # sha256 of the canonical vocabulary
    size: int  # number of tokens (-1 when unknown)
    specials: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.vocab[:10]


def _token(value: object) -> str | None:
    if isinstance(value, dict):  # AddedToken serialized as {"content": ...}
        value = value.get("content")
    return None if value is None else str(value)


def _specials(folder: Path) -> dict[str, str]:
    specials: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        for key in SPECIAL_KEYS:
            token = _token(data.get(key))
            if token is not None:
                specials.setdefault(key, token)
    return specials


@functools.lru_cache(maxsize=8)
def _tokenizer_json_digest(raw: bytes) -> tuple[str, int]:
    """Canonical vocabulary hash and size of a tokenizer.json. Cached by content: the ingredients of one soup usually
    ship byte-identical files, and canonicalising a large vocabulary costs a fraction of a second each time."""
    data = json.loads(raw)
    model = data.get("model") or {}
    vocab = model.get("vocab")
    added = sorted((int(t.get("id", -1)), str(t.get("content"))) for t in data.get("added_tokens") or [])
    canonical = {"type": model.get("type"), "vocab": vocab, "merges": model.get("merges"), "added": added}
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab or [])))
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest, len(ids | {i for i, _ in added})


def tokenizer_fingerprint(folder: Path) -> TokenizerFingerprint | None:
    """The fingerprint of the tokenizer in `folder`, or None when it ships none."""
    digest = hashlib.sha256()
    size = -1
    path = folder / "tokenizer.json"
    if path.is_file():
        vocab_digest, size = _tokenizer_json_digest(path.read_bytes())
        digest.update(vocab_digest.encode())
    else:
        found = [name for name in _VOCAB_FILES if (folder / name).is_file()]
        if not found:
            return None
        for name in found:
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
        if (folder / "vocab.txt").is_file():
            size = len((folder / "vocab.txt").read_text().splitlines())
    return TokenizerFingerprint(digest.hexdigest(), size, _specials(folder))
