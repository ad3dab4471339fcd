"""Apply a `Mixing` to the ingredients tensor by tensor and stream the result into safetensors shards.

Peak memory is one tensor per ingredient plus a float32 accumulator, whatever the number of ingredients and the shard
size: each output tensor goes to disk as soon as it is computed. Accumulation is in float32 (float64 inputs keep
float64) so that averaging fp16 or bf16 ingredients does not round at every addition; the result is cast once, at
the end. Work is split by output shard, which is what lets several processes share it and a rerun resume it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import (
    DTYPE_CODES,
    DTYPES,
    CheckpointReader,
    SafetensorsStreamWriter,
    TensorMeta,
    file_sha256,
    plan_shards,
    shard_file_names,
)
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
        logger.info(
            "ingredients store %d tensors in different dtypes (e.g. %s); the soup keeps the first ingredient's "
            "(%s); pass --dtype to choose",
            len(mixed),
            mixed[0],
            first[mixed[0]].dtype,
        )
    return {n: dtype if dtype is not None and m.is_float else DTYPES[m.dtype] for n, m in first.items()}


def _accumulate(tensors: Sequence[torch.Tensor], weights: Sequence[float], device: torch.device) -> torch.Tensor:
    """The weighted sum in float32 (float64 if any input is), on `device`; the caller drops zero weights."""
    acc_dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    acc = tensors[0].to(device=device, dtype=acc_dtype) * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        acc.add_(tensor.to(device=device, dtype=acc_dtype, non_blocking=True), alpha=weight)
    return acc


def iter_tensors(
    readers: Sequence[CheckpointReader],
    names: Sequence[str],
    *,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """Yield each tensor of every ingredient, one name at a time, with permuted label rows put back in order.

    `alignment` maps an ingredient's position to the row order that matches the first ingredient's labels; it is
    applied to the `label_indexed` tensors (classifier weights and biases).
    """
    label_indexed = set(label_indexed)
    alignment = alignment or {}
    for name in names:
        tensors: list[torch.Tensor] = []
        for i, reader in enumerate(readers):
            tensor = reader.get(name)
            if i in alignment and name in label_indexed:
                tensor = tensor[list(alignment[i])]
            tensors.append(tensor)
        yield name, tensors


@dataclass
class SoupPlan:
    """Which tensor goes into which output shard, in which dtype: fixed before any weight is read, identical for
    every process of a distributed run, and fingerprinted so that `--resume` can trust earlier shards."""

    shards: list[list[str]]
    files: list[str]
    metas: dict[str, TensorMeta]
    fingerprint: str

    @property
    def total_size(self) -> int:
        return sum(m.nbytes for m in self.metas.values())

    def weight_map(self) -> dict[str, str]:
        return {name: file for names, file in zip(self.shards, self.files, strict=True) for name in names}


def plan_soup(
    readers: Sequence[CheckpointReader],
    *,
    dtype: torch.dtype | None,
    max_shard_size: int,
    exclude: Iterable[str] = (),
    identity: object = None,
) -> SoupPlan:
    """Plan the output shards. `identity` (ingredients, SHAs, weights...) goes into the fingerprint."""
    import hashlib
    import json

    dtypes = output_dtypes(readers, dtype)
    excluded = set(exclude)
    names = sorted(n for n in readers[0].structure if n not in excluded)
    metas = {n: TensorMeta(DTYPE_CODES[dtypes[n]], readers[0].structure[n].shape) for n in names}
    shards = plan_shards([(n, metas[n].nbytes) for n in names], max_shard_size)
    files = shard_file_names(len(shards))
    layout = {"identity": identity, "shards": shards, "metas": {n: [m.dtype, list(m.shape)] for n, m in metas.items()}}
    fingerprint = hashlib.sha256(json.dumps(layout, sort_keys=True, default=str).encode()).hexdigest()
    return SoupPlan(shards, files, metas, fingerprint)


PROGRESS_DIR = ".hfsoup-progress"


def write_shards(
    plan: SoupPlan,
    readers: Sequence[CheckpointReader],
    mixing: Mixing,
    staging: Path,
    *,
    shard_ids: Iterable[int],
    meter: SimilarityMeter,
    device: str | torch.device | None = "auto",
    metadata: dict[str, str] | None = None,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
    base: BaseWeights | None = None,
    resume: bool = False,
) -> int:
    """Compute and write the shards `shard_ids` of `plan` into `staging`; return how many were reused on resume.

    Every tensor of every ingredient also feeds a per-shard `meter`, saved beside the shard in a progress record
    (with the shard's sha256), so that a resumed or distributed run can add up the shared-initialization figures
    without reading completed shards again.
    """
    import json

    from huggingface_hub.utils import tqdm

    torch_device = resolve_device(device)
    progress = staging / PROGRESS_DIR
    progress.mkdir(exist_ok=True)
    shard_ids = list(shard_ids)
    reused = 0
    bar = tqdm(total=sum(len(plan.shards[i]) for i in shard_ids), desc="Souping", unit="tensor")
    with torch.inference_mode(), bar:
        for i in shard_ids:
            names, file = plan.shards[i], plan.files[i]
            if resume and _completed(plan, staging, i):
                reused += 1
                bar.update(len(names))
                continue
            shard_meter = meter.fresh()
            writer = SafetensorsStreamWriter(staging / file, [(n, plan.metas[n]) for n in names], metadata=metadata)
            try:
                stream = iter_tensors(readers, names, alignment=alignment, label_indexed=label_indexed)
                for name, tensors in stream:
                    shard_meter.update(name, tensors, _base_tensor(base, name))
                    writer.add(name, _mix(name, tensors, mixing.weights_for(name), plan, readers, torch_device))
                    bar.update(1)
                sha256 = writer.close()
            except BaseException:
                writer.abort()
                raise
            record = {"fingerprint": plan.fingerprint, "file": file, "sha256": sha256, "meter": shard_meter.state()}
            tmp = progress / f".{file}.json.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, progress / f"{file}.json")
            _fault_point("shard-written")
    return reused


def collect_meter(plan: SoupPlan, staging: Path, meter: SimilarityMeter) -> None:
    """Add every shard's measurements (in shard order, so any split of the work gives the same sums) to `meter`."""
    import json

    for file in plan.files:
        record = json.loads((staging / PROGRESS_DIR / f"{file}.json").read_text())
        meter.merge(record["meter"])


def _completed(plan: SoupPlan, staging: Path, i: int) -> bool:
    """A shard from an earlier, interrupted run counts only if its record matches this plan and its checksum."""
    import json

    file = plan.files[i]
    try:
        record = json.loads((staging / PROGRESS_DIR / f"{file}.json").read_text())
    except (OSError, ValueError):
        return False
    if record.get("fingerprint") != plan.fingerprint or not (staging / file).is_file():
        return False
    if file_sha256(staging / file) != record.get("sha256"):
        logger.warning("%s from the interrupted run fails its checksum; it is written again", file)
        return False
    logger.info("reusing %s from the interrupted run (checksum verified)", file)
    return True


def _mix(
    name: str,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    plan: SoupPlan,
    readers: Sequence[CheckpointReader],
    device: torch.device,
) -> torch.Tensor:
    kept = [(t, w) for t, w in zip(tensors, weights, strict=True) if w != 0.0]
    if readers[0].structure[name].is_float:
        result = _accumulate([t for t, _ in kept], [w for _, w in kept], device)
        return result.to(DTYPES[plan.metas[name].dtype])
    # Integer buffers (position ids, token type ids) are not averaged; they must agree.
    first = kept[0][0]
    if any(not torch.equal(first, t) for t, _ in kept[1:]):
        raise IncompatibleIngredientsError(
            f"Non-float tensor {name!r} ({readers[0].structure[name].dtype}) differs between ingredients; "
            "integer buffers cannot be averaged and must be identical."
        )
    return first


def _fault_point(name: str) -> None:
    """Crash here when HFSOUP_FAULT names this point (the kill-and-resume tests; issue 9's fault injection)."""
    spec = os.environ.get("HFSOUP_FAULT", "")
    if not spec.startswith(name):
        return
    # "shard-written:2" crashes after the second time this point is reached.
    count = int(spec.split(":")[1]) if ":" in spec else 1
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] >= count:
        os._exit(77)  # like a kill: no cleanup, no exception handlers


_FAULT_COUNTS: dict[str, int] = {}


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
            meter.update(name, tensors, _base_tensor(base, name))


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
