"""Apply a `Mixing` to the ingredients tensor by tensor and stream the result into safetensors shards.

Peak memory is one tensor per ingredient plus a float32 accumulator plus the shard being buffered, whatever the
number of ingredients. Accumulation is in float32 (float64 inputs keep float64) so that averaging fp16 or bf16
ingredients does not round at every addition; the result is cast once, at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checkpoint import DTYPES, CheckpointReader, ShardedWriter, TensorMeta, plan_shards
from ..errors import IncompatibleIngredientsError, InvalidSoupArgumentsError
from .base import Mixing

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` (or None) means the first GPU when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise InvalidSoupArgumentsError(
            f"Unknown device {device!r} ({e}).", fix="Use auto, cpu, cuda or cuda:N."
        ) from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSoupArgumentsError(
            f"Device {device!r} was asked for, but torch sees no CUDA GPU.",
            fix="Use --device cpu (or auto), or install a CUDA build of torch (see the README).",
        )
    return resolved


def output_dtypes(readers: Sequence[CheckpointReader], dtype: torch.dtype | None) -> dict[str, torch.dtype]:
    """The dtype each output tensor is written in: `dtype` for float tensors when given, else the first
    ingredient's (always the same ingredient, like the config files), with a warning when ingredients disagree."""
    first = readers[0].structure
    mixed = sorted(n for n in first if any(r.structure[n].dtype != first[n].dtype for r in readers[1:]))
    if mixed and dtype is None:
        logger.warning(
            "ingredients store %d tensors in different dtypes (e.g. %s); the soup keeps the first ingredient's "
            "(%s); pass --dtype to choose",
            len(mixed),
            mixed[0],
            first[mixed[0]].dtype,
        )
    return {n: dtype if dtype is not None and m.is_float else DTYPES[m.dtype] for n, m in first.items()}


def _accumulate(tensors: Sequence[torch.Tensor], weights: Sequence[float], device: torch.device) -> torch.Tensor:
    acc_dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    acc: torch.Tensor | None = None
    for tensor, weight in zip(tensors, weights, strict=True):
        if weight == 0.0:
            continue
        value = tensor.to(device=device, dtype=acc_dtype, non_blocking=True)
        if acc is None:
            acc = value * weight
        else:
            acc.add_(value, alpha=weight)
    assert acc is not None, "mixing weights were all zero"  # Mixing guarantees a positive weight
    return acc


def stream_soup(
    readers: Sequence[CheckpointReader],
    mixing: Mixing,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int,
    device: str | torch.device | None = "auto",
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write the mixed checkpoint into `out_dir` and return the weight files written.

    The ingredients must already have identical tensor names and shapes (see `compat.check_structure`).
    """
    from huggingface_hub.utils import tqdm

    torch_device = resolve_device(device)
    dtypes = output_dtypes(readers, dtype)
    names = sorted(readers[0].structure)
    sizes = [(n, TensorMeta("F32", readers[0].structure[n].shape).numel * dtypes[n].itemsize) for n in names]
    writer = ShardedWriter(out_dir, plan_shards(sizes, max_shard_size), metadata=metadata)
    with torch.inference_mode():
        for name in tqdm(names, desc="Souping", unit="tensor"):
            weights = mixing.weights_for(name)
            tensors = [reader.get(name) for reader, w in zip(readers, weights, strict=True) if w != 0.0]
            if readers[0].structure[name].is_float:
                kept = [w for w in weights if w != 0.0]
                result = _accumulate(tensors, kept, torch_device).to(dtypes[name])
            else:
                # Integer buffers (position ids, token type ids) are not averaged; they must agree.
                if any(not torch.equal(tensors[0], t) for t in tensors[1:]):
                    raise IncompatibleIngredientsError(
                        f"Non-float tensor {name!r} ({readers[0].structure[name].dtype}) differs between ingredients; "
                        "integer buffers cannot be averaged and must be identical."
                    )
                result = tensors[0]
            writer.add(name, result)
    return writer.finish()
