"""Which ingredients are the same, and what a local one is called in what hfsoup publishes.

The same model named twice gets twice the weight without a word, so two spellings of one folder (`./a`, `a/`, its
absolute path, a symlink to it) or of one Hub commit (`org/x` and `org/x@main`) are refused; `--weights` is the way
to weigh one ingredient more.

`hfsoup.json` and the model card are published with the soup, so they never hold the user's absolute paths or home
folder: a local ingredient is recorded by its path relative to the current folder (the recipe's folder, for a
recipe) when it lies inside it, else by its folder name, plus checksums of its weights' index or headers.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidSoupArgumentsError, option

_FIX = f"Name each ingredient once; to give one model more weight, use weights: {option('weights', [0.6, 0.4])}."


def refuse_same_folder(specs: Sequence[str], folders: Sequence[Path | None]) -> None:
    """Two specs naming one local folder (`folders`: each spec's resolved folder, None for a Hub ID)."""
    seen: dict[Path, str] = {}
    for spec, folder in zip(specs, folders, strict=True):
        if folder is None:
            continue
        if folder in seen:
            raise InvalidSoupArgumentsError(
                f"Ingredients {seen[folder]!r} and {spec!r} are the same folder ({folder.name}) under two "
                "spellings; it would be averaged in twice.",
                fix=_FIX,
            )
        seen[folder] = spec


def refuse_same_commit(specs: Sequence[str], pins: Sequence[tuple[str, str] | None]) -> None:
    """Two specs pinned to one Hub commit (`pins`: `(repo_id, sha)`, None for a local folder). Repo names are
    compared as the Hub does, ignoring case."""
    seen: dict[tuple[str, str], str] = {}
    for spec, pin in zip(specs, pins, strict=True):
        if pin is None:
            continue
        key = (pin[0].lower(), pin[1])
        if key in seen:
            raise InvalidSoupArgumentsError(
                f"Ingredients {seen[key]!r} and {spec!r} are the same model: both resolve to {pin[0]} at commit "
                f"{pin[1]}; it would be averaged in twice.",
                fix=_FIX,
            )
        seen[key] = spec


def public_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """`path` as it may be published: relative to `base` (POSIX form) when inside it, else its last component."""
    absolute = Path(os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))
    base = Path(os.path.normpath(os.path.abspath(os.fspath(base))))
    if absolute == base:
        return "."
    if base in absolute.parents:
        return absolute.relative_to(base).as_posix()
    return absolute.name or "."


def local_labels(specs: Sequence[str], *, base: str | os.PathLike, local: Sequence[bool]) -> list[str]:
    """The public name of each ingredient: Hub IDs as given, local folders by `public_path`, made unique (a
    folder name shared by two ingredients gets its parent's name, then a number)."""
    labels = [public_path(s, base) if is_local else s for s, is_local in zip(specs, local, strict=True)]
    first = list(labels)
    for i, spec in enumerate(specs):
        if local[i] and first.count(first[i]) > 1:
            parent = Path(os.path.abspath(os.path.expanduser(spec))).parent.name
            labels[i] = f"{parent}/{labels[i]}" if parent else labels[i]
    for i in range(len(labels)):
        if labels.count(labels[i]) > 1 and local[i]:
            labels[i] = f"{labels[i]} ({i})"
    return labels


def weights_checksums(folder: Path, files: Iterable[str], index_file: str | None) -> dict[str, Any]:
    """What identifies a local ingredient's weights without reading them again: the sha256 of its index file, and
    of each safetensors file's header (names, dtypes, shapes, offsets) with its size. The data's own sha256 would
    cost a full extra read of every ingredient, which the soup's single streaming pass is built to avoid."""
    sums: dict[str, Any] = {}
    if index_file:
        sums[index_file] = {"sha256": _sha256_file(folder / index_file)}
    for name in files:
        path = folder / name
        if Path(name).name != name or name in (".", "..") or not path.is_file():
            continue  # an index naming a path outside the folder: never opened here (the reader refuses it)
        entry: dict[str, Any] = {"size": path.stat().st_size}
        if name.endswith(".safetensors"):
            with open(path, "rb") as f:
                head = f.read(8)
                length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
                entry["header_sha256"] = hashlib.sha256(head + f.read(min(length, 100_000_000))).hexdigest()
        sums[name] = entry
    return sums


def _sha256_file(path: Path) -> str:
    from ..io.checkpoint import file_sha256

    return file_sha256(path)


def scrub_paths(data: Any, replacements: Sequence[tuple[str, str]]) -> Any:
    """`data` (JSON-like) with every string's occurrences of a local path prefix replaced by its public form:
    `replacements` holds `(absolute path, public name)`; the longest prefix wins."""
    ordered = sorted({(os.path.normpath(a), b) for a, b in replacements if a and os.path.isabs(a) and a != "/"})
    ordered.sort(key=lambda pair: -len(pair[0]))
    # A prefix counts only as whole path components: /home/u must not turn /home/user into ~ser.
    patterns = [(re.compile(re.escape(prefix) + r"(/+|(?![\w.-]))"), public) for prefix, public in ordered]

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for pattern, public in patterns:
                value = pattern.sub(lambda m, p=public: ("" if p == "." else p + "/") if m.group(1) else p, value)
            return value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(data)
