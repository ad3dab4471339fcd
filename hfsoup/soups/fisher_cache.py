"""Each ingredient's diagonal Fisher estimate, cached under `$HFSOUP_CACHE/fisher/` (default `~/.cache/hfsoup`).

The estimate is the costly part of a Fisher soup (a backward pass per example per ingredient), and it depends only on
what it is computed from, which the key covers entirely: the ingredient's weights as loaded (the Hub commit SHA, or
the sha256 of a local folder's weight files, with the head alignment), the model that runs them (its class and
config), the examples (a hash of the very batches used: task, dataset, split, held-out rows and seed, tokenizer,
`max_length`, batch size), `fisher_examples`, the device kind, torch's version and `FISHER_DEFINITION`. Change any of
them and the key changes; a rerun with the same ones reuses the estimate and writes the same bytes.

An entry is `KEY.safetensors` (float64 tensors, read with safetensors only) and `KEY.json` beside it holding the
file's sha256 and the examples used; both are written through a temporary file renamed into place. A file that fails
its sha256, names other tensors than the ingredient's float tensors, or holds another shape, dtype, a negative or
non-finite value is ignored with a warning and recomputed: the cache is never trusted blindly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..constants import FISHER_CACHE_DIR, TMP_MARKER, hfsoup_cache

logger = logging.getLogger(__name__)

#: hfsoup's definition of the estimate (`fisher.fisher_diagonal`): bump it when the definition changes.
FISHER_DEFINITION = 1


def cache_dir() -> Path:
    return Path(hfsoup_cache()) / FISHER_CACHE_DIR


def data_fingerprint(objective: Any, batches: Sequence[tuple[Any, int]]) -> str:
    """A hash of the examples a Fisher is computed on: each batch's rows, inputs (name, dtype, shape, bytes) and how
    many of its examples are used; with the model that scores them (class and config)."""
    import torch

    digest = hashlib.sha256()
    model = getattr(objective, "model", None)
    config = getattr(model, "config", None)
    settings = json.loads(config.to_json_string()) if config is not None else None
    if isinstance(settings, dict):  # where it was loaded from is no part of what it computes
        settings.pop("_name_or_path", None)
    digest.update(json.dumps([type(model).__name__, settings], sort_keys=True).encode())
    for batch, take in batches:
        digest.update(json.dumps([list(batch.positions), take, sorted(batch.inputs)]).encode())
        for name in sorted(batch.inputs):
            value = batch.inputs[name]
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().contiguous()
                digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
                digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
            else:
                digest.update(json.dumps([name, repr(value)]).encode())
    return digest.hexdigest()


def cache_key(identity: Any, data: str, examples: int, device: Any) -> str:
    import torch

    fields = [FISHER_DEFINITION, identity, data, examples, str(torch.device(device or "cpu").type), torch.__version__]
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def load(key: str, expected: Mapping[str, tuple[int, ...]], *, name: str) -> tuple[dict, int] | None:
    """The cached diagonal (name -> float64 tensor) and the examples it used, or None: absent, or ignored with a
    warning when it is not exactly what `expected` (float tensor name -> shape) says it must be."""
    import torch
    from safetensors.torch import load_file

    weights, record = cache_dir() / f"{key}.safetensors", cache_dir() / f"{key}.json"
    if not weights.is_file() or not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or _sha256(weights) != meta.get("sha256"):
            raise ValueError("its sha256 does not match its record")
        fisher = load_file(weights)
        if set(fisher) != set(expected):
            raise ValueError("it names other tensors than the ingredient's")
        for k, t in fisher.items():
            if t.dtype != torch.float64 or tuple(t.shape) != tuple(expected[k]):
                raise ValueError(f"{k} is {t.dtype} {tuple(t.shape)}, expected float64 {tuple(expected[k])}")
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
                raise ValueError(f"{k} holds negative or non-finite values")
        count = meta.get("examples_used")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("its record has no example count")
    except Exception as e:  # any damage (truncated, tampered, unreadable): recomputed, never trusted
        logger.warning("ignoring the cached Fisher estimate of %s (%s): recomputing it", name, e)
        return None
    return fisher, count


def store(key: str, fisher: Mapping[str, Any], count: int, *, name: str) -> None:
    """Write an entry atomically; a cache that cannot be written is a warning, never a failed soup."""
    from safetensors.torch import save

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = save({k: v.contiguous() for k, v in fisher.items()})
        _write_atomic(folder / f"{key}.safetensors", data)
        record = {"sha256": hashlib.sha256(data).hexdigest(), "examples_used": count, "definition": FISHER_DEFINITION}
        _write_atomic(folder / f"{key}.json", (json.dumps(record) + "\n").encode())
    except OSError as e:
        logger.warning("could not cache the Fisher estimate of %s in %s: %s", name, folder, e)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    from ..io.checkpoint import file_sha256

    return file_sha256(path)
