"""An ingredient's small JSON files (config.json, tokenizer and processor files), read with their shapes checked.

An ingredient is data from whoever published it. JSON that parses can still hold a list where an object belongs,
label ids that are not integers or a vocabulary that is a number; code that trusts the shape then fails somewhere
deep with a TypeError. Every field hfsoup reads is checked here, where it is read, and anything else is refused
with one `IngredientConfigError` naming the file and the field (values quoted short: they may be huge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import IngredientConfigError, quote
from ..io.jsonread import parse_json, read_bounded

_FIX = (
    "The ingredient's files are malformed: re-save it with transformers (save_pretrained), or use another revision "
    "or another model."
)
# JSON files a soup copies from its first ingredient (hub.SUPPORT_FILES) that transformers reads as one object.
# config.json and tokenizer.json are checked field by field (`config`, compat.tokenizer).
JSON_OBJECT_FILES = (
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
)


class ShapeError(Exception):
    """A field of a JSON document with the wrong shape; `where` converts it into an `IngredientConfigError`."""

    def __init__(self, field: str, expected: str, value: Any) -> None:
        super().__init__(field, expected)
        self.field, self.expected, self.value = field, expected, value

    def where(self, path: Path) -> IngredientConfigError:
        return IngredientConfigError(
            f"{path} is malformed: {self.field!r} should be {self.expected}, but it is {_kind(self.value)} "
            f"{quote(self.value)}.",
            fix=_FIX,
        )


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = parse_json(read_bounded(path))
    except ValueError as e:  # also UnicodeDecodeError
        raise IngredientConfigError(f"{path} is not valid JSON ({quote(str(e))}).", fix=_FIX) from None
    if not isinstance(data, dict):
        raise ShapeError("(the whole file)", "an object", data).where(path)
    return data


def checked_field(data: dict[str, Any], field: str, expected: str, ok: Any) -> Any:
    """`data[field]` when absent, null or `ok(value)`; else a `ShapeError` naming the field."""
    value = data.get(field)
    if value is not None and not ok(value):
        raise ShapeError(field, expected, value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_key(key: str) -> bool:
    try:
        int(key)
    except ValueError:
        return False
    return key.strip() == key and len(key) < 20


def config(path: Path) -> dict[str, Any]:
    """config.json (empty when absent), every field hfsoup reads checked: model_type, architectures, id2label,
    label2id, problem_type, tie_word_embeddings, dtype / torch_dtype."""
    data = read_json_object(path)
    if data is None:
        return {}
    try:
        for field in ("model_type", "problem_type", "dtype", "torch_dtype"):
            checked_field(data, field, "a string", lambda v: isinstance(v, str))
        checked_field(data, "tie_word_embeddings", "true or false", lambda v: isinstance(v, bool))
        checked_field(data, "architectures", "a list of class names", lambda v: isinstance(v, list))
        for i, name in enumerate(data.get("architectures") or []):
            if not isinstance(name, str):
                raise ShapeError(f"architectures[{i}]", "a class name (a string)", name)
        checked_field(data, "id2label", "an object of label id to label name", lambda v: isinstance(v, dict))
        seen: dict[int, str] = {}
        for key, label in (data.get("id2label") or {}).items():
            if not _int_key(key):
                raise ShapeError("id2label", "keyed by integer label ids ('0', '1', ...)", key)
            if not isinstance(label, str):
                raise ShapeError(f"id2label[{quote(key, limit=24)}]", "a label name (a string)", label)
            if int(key) in seen:
                raise ShapeError("id2label", f"one entry per label id, but id {int(key)} appears twice", key)
            seen[int(key)] = label
        checked_field(data, "label2id", "an object of label name to label id", lambda v: isinstance(v, dict))
        for name, label_id in (data.get("label2id") or {}).items():
            if not _is_int(label_id):
                raise ShapeError(f"label2id[{quote(name, limit=40)}]", "an integer label id", label_id)
    except ShapeError as e:
        raise e.where(path) from None
    return data


def labels(config: dict[str, Any]) -> list[str] | None:
    """The label names in id order, from a config checked by `config`."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict):
        return None
    return [label for _, label in sorted((int(k), v) for k, v in id2label.items())]
