"""Apply a `Mixing` to the ingredients tensor by tensor and stream the result into safetensors shards.

Peak memory is one tensor per ingredient plus a float32 accumulator plus the shard being buffered, whatever the
number of ingredients. Accumulation is in float32 (float64 inputs keep float64) so that averaging fp16 or bf16
ingredients does not round at every addition; the result is cast once, at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import DTYPES, CheckpointReader, ShardedWriter, TensorMeta, plan_shards
from ..compat.similarity import SimilarityMeter
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


def iter_tensors(
    readers: Sequence[CheckpointReader],
    names: Sequence[str],
    *,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
    skip: Callable[[str, int], bool] | None = None,
) -> Iterator[tuple[str, list[torch.Tensor | None]]]:
    """Yield each tensor of every ingredient, one name at a time, with permuted label rows put back in order.

    `alignment` maps an ingredient's position to the row order that matches the first ingredient's labels; it is
    applied to the `label_indexed` tensors (classifier weights and biases). `skip(name, i)` leaves a read out (None).
    """
    label_indexed = set(label_indexed)
    alignment = alignment or {}
    for name in names:
        tensors: list[torch.Tensor | None] = []
        for i, reader in enumerate(readers):
            if skip is not None and skip(name, i):
                tensors.append(None)
                continue
            tensor = reader.get(name)
            if i in alignment and name in label_indexed:
                tensor = tensor[list(alignment[i])]
            tensors.append(tensor)
        yield name, tensors


def stream_soup(
    readers: Sequence[CheckpointReader],
    mixing: Mixing,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int,
    device: str | torch.device | None = "auto",
    metadata: dict[str, str] | None = None,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
    exclude: Iterable[str] = (),
    meter: SimilarityMeter | None = None,
    base: BaseWeights | None = None,
) -> list[str]:
    """Write the mixed checkpoint into `out_dir` and return the weight files written.

    The ingredients must already have identical tensor names and shapes (see `compat.check_before_download`), bar
    the `exclude`d names (tied copies some ingredients do not store). With a `meter`, every tensor of every ingredient
    also feeds the shared-initialization measurement, in the same single pass over the weights; zero-weight
    ingredients are then still read.
    """
    from huggingface_hub.utils import tqdm

    torch_device = resolve_device(device)
    dtypes = output_dtypes(readers, dtype)
    excluded = set(exclude)
    names = sorted(n for n in readers[0].structure if n not in excluded)
    sizes = [(n, TensorMeta("F32", readers[0].structure[n].shape).numel * dtypes[n].itemsize) for n in names]
    writer = ShardedWriter(out_dir, plan_shards(sizes, max_shard_size), metadata=metadata)

    def skip(name: str, i: int) -> bool:
        return meter is None and mixing.weights_for(name)[i] == 0.0

    stream = iter_tensors(readers, names, alignment=alignment, label_indexed=label_indexed, skip=skip)
    with torch.inference_mode():
        for name, tensors in tqdm(stream, total=len(names), desc="Souping", unit="tensor"):
            if meter is not None:
                meter.update(name, tensors, _base_tensor(base, name))  # type: ignore[arg-type]
            weights = mixing.weights_for(name)
            kept = [(t, w) for t, w in zip(tensors, weights, strict=True) if w != 0.0]
            if readers[0].structure[name].is_float:
                result = _accumulate([t for t, _ in kept], [w for _, w in kept], torch_device).to(dtypes[name])
            else:
                # Integer buffers (position ids, token type ids) are not averaged; they must agree.
                first = kept[0][0]
                if any(not torch.equal(first, t) for t, _ in kept[1:]):
                    raise IncompatibleIngredientsError(
                        f"Non-float tensor {name!r} ({readers[0].structure[name].dtype}) differs between ingredients; "
                        "integer buffers cannot be averaged and must be identical."
                    )
                result = first
            writer.add(name, result)
    return writer.finish()


def measure(
    readers: Sequence[CheckpointReader],
    meter: SimilarityMeter,
    *,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
    exclude: Iterable[str] = (),
    base: BaseWeights | None = None,
) -> None:
    """Feed every tensor to `meter` without writing anything (`hfsoup check`)."""
    from huggingface_hub.utils import tqdm

    excluded = set(exclude)
    names = sorted(n for n in readers[0].structure if n not in excluded)
    stream = iter_tensors(readers, names, alignment=alignment, label_indexed=label_indexed)
    with torch.inference_mode():
        for name, tensors in tqdm(stream, total=len(names), desc="Comparing weights", unit="tensor"):
            meter.update(name, tensors, _base_tensor(base, name))  # type: ignore[arg-type]


@dataclass
class BaseWeights:
    """The declared base model, compared with every ingredient. Its tensor names may lack the task model's prefix
    (`encoder...` in a bare `BertModel`, `bert.encoder...` in a classifier), hence the name map."""

    reader: CheckpointReader
    name_map: dict[str, str]

    @classmethod
    def open(cls, reader: CheckpointReader, names: Iterable[str]) -> BaseWeights:
        mapping = {}
        for name in names:
            if name in reader.structure:
                mapping[name] = name
            elif "." in name and name.split(".", 1)[1] in reader.structure:
                mapping[name] = name.split(".", 1)[1]
        return cls(reader, mapping)

    def get(self, name: str) -> torch.Tensor | None:
        mapped = self.name_map.get(name)
        return self.reader.get(mapped) if mapped is not None else None


def _base_tensor(base: BaseWeights | None, name: str) -> torch.Tensor | None:
    return None if base is None else base.get(name)
