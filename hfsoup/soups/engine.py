"""Apply a `Mixing` to the ingredients block by block and stream the result into safetensors shards.

Peak memory is a few blocks (`kernels.BLOCK` elements) per ingredient, whatever the model, the number of ingredients
and the shard size: each block of the output goes to disk as soon as it is computed, the inputs are memory maps,
read a bounded window ahead of the block in use and unmapped behind it (`io.checkpoint.ReadAhead`), so even the
resident memory stays near the window whatever the checkpoint's size. Accumulation is in float32 (float64 inputs
keep float64) so that averaging fp16 or bf16 ingredients does not round at every addition; the result is cast once,
at the end. Work is split by output shard, which is what lets several
processes share it and a rerun resume it. On the CPU nothing here imports torch; a GPU takes the arithmetic through
`kernels.TorchAccumulator`.

The merges defined relative to a base model add its block to the sum (`Mixing.base_weight`: task arithmetic,
WiSE-FT) or replace the sum by a per-tensor `merge.TensorMerge` (TIES, DARE, SLERP, Model Stock), which reads the same
memory-mapped blocks and hands its final combinations to the same accumulator. On the CPU, the weighted sum (the
uniform soup) splits a large shard's tensors between forked processes (`FORK_MIN_BYTES`, `_run_forked`), or, in one
process, spreads a large tensor's blocks over threads (`BlockPool`); both give the bytes of the one-thread loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..compat.similarity import SimilarityMeter
from ..constants import PROGRESS_DIR
from ..errors import (
    HfsoupError,
    IncompatibleIngredientsError,
    InvalidSoupArgumentsError,
    SoupWorkerError,
    option,
)
from ..io.checkpoint import (
    FLOAT_CODES,
    NAME_CODES,
    CheckpointReader,
    ReadAhead,
    SafetensorsStreamWriter,
    TensorMeta,
    plan_shards,
    shard_file_names,
)
from ..io.staging import write_file_atomic
from . import kernels
from .base import Mixing
from .merge import TensorInputs, TensorMerge
from .resume import StagedShardCheck, staged_candidate

logger = logging.getLogger(__name__)

Accumulate = Callable[[Sequence[np.ndarray], Sequence[float]], np.ndarray]


def _gpu_possible() -> bool:
    """Whether a GPU driver is present at all: without one, `auto` means the CPU without importing torch."""
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def resolve_device(device: str | None) -> str:
    """`auto` (or None) means a GPU when there is one (the process's own, `LOCAL_RANK`, when several run), else the
    CPU. Returns `"cpu"` or `"cuda:N"`."""
    name = "auto" if device is None else str(device)
    if name == "cpu":
        return "cpu"
    if name == "auto" and not _gpu_possible():
        return "cpu"
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        # Under `accelerate launch` or `torchrun` each process of a machine takes its own GPU, as Accelerate does.
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    try:
        resolved = torch.device(name)
    except RuntimeError as e:
        raise InvalidSoupArgumentsError(f"Unknown device {name!r} ({e}).", fix="Use auto, cpu, cuda or cuda:N.") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSoupArgumentsError(
            f"Device {name!r} was asked for, but torch sees no CUDA GPU.",
            fix=f"Use {option('device', 'cpu')} (or auto), or install a CUDA build of torch (see the README).",
        )
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidSoupArgumentsError(f"Device {name!r} is not supported.", fix="Use auto, cpu, cuda or cuda:N.")
    return "cpu" if resolved.type == "cpu" else f"cuda:{resolved.index or 0}"


def accumulator(device: str) -> Accumulate:
    """The weighted sum for `device` (from `resolve_device`)."""
    if device == "cpu":
        return kernels.weighted_sum
    return kernels.TorchAccumulator(device)


def output_dtypes(readers: Sequence[CheckpointReader], dtype: str | None) -> dict[str, str]:
    """The dtype code each output tensor is written in: `dtype` (a name such as `bfloat16`) for float tensors when
    given, else the first ingredient's (always the same ingredient, like the config files), with a note when
    ingredients disagree."""
    first = readers[0].structure
    # A LoRA adapter's merged tensors are read in float32; the merged model stores them as its base does.
    stored = getattr(readers[0], "stored_dtypes", {})
    mixed = sorted(n for n in first if any(r.structure[n].dtype != first[n].dtype for r in readers[1:]))
    if mixed and dtype is None:
        logger.info(
            "ingredients store %d tensors in different dtypes (e.g. %s); the soup keeps the first ingredient's "
            "(%s); pass --dtype to choose",
            len(mixed),
            mixed[0],
            first[mixed[0]].dtype,
        )
    code = None if dtype is None else NAME_CODES[dtype]
    return {n: code if code is not None and m.is_float else stored.get(n, m.dtype) for n, m in first.items()}


def iter_tensors(
    readers: Sequence[CheckpointReader],
    names: Sequence[str],
    *,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
) -> Iterator[tuple[str, list[np.ndarray]]]:
    """Yield each tensor of every ingredient, one name at a time, with permuted label rows put back in order.

    `alignment` maps an ingredient's position to the row order that matches the first ingredient's labels; it is
    applied to the `label_indexed` tensors (classifier weights and biases).
    """
    label_indexed = set(label_indexed)
    alignment = alignment or {}
    for name in names:
        tensors: list[np.ndarray] = []
        for i, reader in enumerate(readers):
            tensor = reader.get_array(name)
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
    dtype: str | None,
    max_shard_size: int,
    exclude: Iterable[str] = (),
    identity: object = None,
) -> SoupPlan:
    """Plan the output shards. `dtype`: an output dtype name (`bfloat16`...) for float tensors, or None to keep the
    first ingredient's. `identity` (ingredients, SHAs, weights...) goes into the fingerprint."""
    import hashlib
    import json

    dtypes = output_dtypes(readers, dtype)
    excluded = set(exclude)
    names = sorted(n for n in readers[0].structure if n not in excluded)
    metas = {n: TensorMeta(dtypes[n], readers[0].structure[n].shape) for n in names}
    shards = plan_shards([(n, metas[n].nbytes) for n in names], max_shard_size)
    files = shard_file_names(len(shards))
    layout = {"identity": identity, "shards": shards, "metas": {n: [m.dtype, list(m.shape)] for n, m in metas.items()}}
    fingerprint = hashlib.sha256(json.dumps(layout, sort_keys=True, default=str).encode()).hexdigest()
    return SoupPlan(shards, files, metas, fingerprint)


def write_shards(
    plan: SoupPlan,
    readers: Sequence[CheckpointReader],
    mixing: Mixing,
    staging: Path,
    *,
    shard_ids: Iterable[int],
    meter: SimilarityMeter,
    device: str | None = "auto",
    metadata: dict[str, str] | None = None,
    alignment: Mapping[int, Sequence[int]] | None = None,
    label_indexed: Iterable[str] = (),
    base: BaseWeights | None = None,
    resume: bool = False,
    merge: TensorMerge | None = None,
) -> int:
    """Compute and write the shards `shard_ids` of `plan` into `staging`; return how many were reused on resume.

    `base` (the declared pretrained model) is measured against every ingredient and enters the arithmetic with
    `mixing.base_weight`; `merge`, when given, computes each float tensor instead of the weighted sum (`soups.merge`).

    Every tensor of every ingredient also feeds a per-shard `meter`, saved beside the shard in a progress record,
    so that a distributed run can add up the shared-initialization figures without
    reading completed shards again. On resume a shard an earlier run left is recomputed and compared with the
    staged bytes (`soups.resume`): reused only if identical, its record rewritten from this run's own figures.
    """
    import json

    from ..progress import bar as progress_bar

    accumulate = accumulator(resolve_device(device))
    # The CPU's cores share each large tensor's blocks; a GPU does the arithmetic itself.
    pool = BlockPool.create() if accumulate is kernels.weighted_sum else None
    progress = staging / PROGRESS_DIR
    progress.mkdir(exist_ok=True)
    shard_ids = list(shard_ids)
    reused = 0
    bar = progress_bar(total=sum(len(plan.shards[i]) for i in shard_ids), desc="Souping", unit="tensor")
    faults = bool(os.environ.get("HFSOUP_FAULT"))  # read once: nothing per tensor when no test asks
    if merge is not None:
        merge.prepare(sorted(plan.metas))  # every tensor of the soup, whichever shards this process writes

    def mix(
        i: int,
        writer_class: type[SafetensorsStreamWriter],
        *,
        part: tuple[int, int] | None = None,
        tick: Callable[[int], object] = bar.update,
        pool: BlockPool | None = pool,
    ) -> tuple[bool | None, SimilarityMeter]:
        """Shard `i` (its tensors `part[0]:part[1]` only, when one of several processes writes that part)."""
        names = plan.shards[i]
        shard_meter = meter.fresh()
        tensors = [(n, plan.metas[n]) for n in names]
        writer = writer_class(staging / plan.files[i], tensors, metadata=metadata, part=part)
        try:
            mine = names if part is None else names[part[0] : part[1]]
            stream = iter_tensors(readers, mine, alignment=alignment, label_indexed=label_indexed)
            for name, tensors in stream:
                meta, codes = plan.metas[name], [r.structure[name].dtype for r in readers]
                writer.begin(name, meta.dtype, meta.shape)
                weights, base_in = mixing.weights_for(name), _base_array(base, name)
                blocks = _mix_blocks(
                    name,
                    tensors,
                    codes,
                    weights,
                    meta.dtype,
                    shard_meter,
                    base_in,
                    accumulate,
                    base_weight=mixing.base_weight,
                    merge=merge,
                    read_ahead=ReadAhead(readers, name),
                    pool=pool,
                )
                for block in blocks:
                    writer.write(block)  # on the writer's thread, while the next block is computed
                writer.end()
                for reader in readers:
                    reader.release(name)  # resident memory stays a window, whatever the checkpoint's size
                tick(1)
                if faults:
                    _fault_point("tensor-written")
                if getattr(writer, "differs", False):
                    break  # a staged shard known to differ: computing the rest of it would change nothing
            same = writer.close()  # a `StagedShardCheck`'s verdict; None from the writer
        except BaseException:
            writer.abort()
            raise
        return same, shard_meter

    # The plain weighted sum on the CPU splits a large shard between processes (`mix_forked`): the threads of
    # `BlockPool` share one interpreter, and its lock, at some thirty numpy calls per block.
    workers = _fork_workers() if accumulate is kernels.weighted_sum and merge is None and not faults else 1

    def forked_parts(i: int) -> list[tuple[int, int]]:
        sizes = [plan.metas[n].nbytes for n in plan.shards[i]]
        if workers < 2 or sum(sizes) < FORK_MIN_BYTES:
            return []
        parts = byte_parts(sizes, workers)
        return parts if len(parts) > 1 else []

    def mix_forked(i: int, parts: list[tuple[int, int]]) -> SimilarityMeter:
        def work(part: tuple[int, int], send: Callable[[object], None]) -> dict:
            _, part_meter = mix(i, SafetensorsStreamWriter, part=part, tick=lambda n: send(("tick", n)), pool=None)
            return part_meter.state()

        path = staging / plan.files[i]
        SafetensorsStreamWriter.prepare(path, [(n, plan.metas[n]) for n in plan.shards[i]], metadata=metadata)
        complete = False
        try:
            states = _run_forked(parts, work, bar.update, what=plan.files[i])
            complete = True
        finally:
            SafetensorsStreamWriter.finish(path, complete=complete)
        shard_meter = meter.fresh()
        for state in states:  # in tensor order, as one process would have measured them
            shard_meter.merge(state)
        return shard_meter

    with bar, contextlib.closing(pool) if pool is not None else contextlib.nullcontext():
        for i in shard_ids:
            file, done, written = plan.files[i], False, False
            if resume and staged_candidate(staging, progress, file, plan.fingerprint):
                before = bar.n
                done, shard_meter = mix(i, StagedShardCheck)
                if done:
                    logger.info("reusing %s from the interrupted run (recomputed: identical bytes)", file)
                    reused += 1
                else:
                    logger.warning(
                        "%s from the interrupted run is not what the ingredients give; writing it again", file
                    )
                    bar.update(before - bar.n)
            if not done:
                (staging / file).unlink(missing_ok=True)  # the entry only, never what a link there points to
                parts = forked_parts(i)
                if parts:
                    shard_meter = mix_forked(i, parts)
                else:
                    _, shard_meter = mix(i, SafetensorsStreamWriter)
                written = True
            record = {"fingerprint": plan.fingerprint, "file": file, "meter": shard_meter.state()}
            write_file_atomic(progress / f"{file}.json", json.dumps(record))
            if written:
                _fault_point("shard-written")
    return reused


#: Output shards of at least this many bytes are computed by several processes side by side on the CPU (one part of
#: the shard's tensors each); below it, starting processes costs more than the arithmetic they share.
FORK_MIN_BYTES = 64 << 20


def _fork_workers() -> int:
    """Processes for a large shard's plain weighted sum: one per core this process may use (`_thread_count`:
    `HFSOUP_NUM_THREADS`, the cores shared among the processes launched on the machine); 1 off Linux (macOS's
    system libraries are not safe to use in a forked child, Windows has no `fork`) or where `HFSOUP_FORK=0`."""
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("HFSOUP_FORK", "1").strip() == "0":
        return 1
    return _thread_count()


def byte_parts(sizes: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """Split tensors of `sizes` bytes (in shard order) into at most `parts` contiguous, non-empty ranges
    `(first, last)` of about equal bytes: each cut falls at the tensor boundary nearest its share."""
    total, bounds = sum(sizes), [0]
    ends = np.cumsum(sizes).tolist()
    for k in range(1, parts):
        target = total * k / parts
        cut = int(np.searchsorted(ends, target))  # the first tensor that ends at or after the target
        if cut < len(ends) and cut > 0 and target - ends[cut - 1] < ends[cut] - target:
            cut -= 1
        cut += 1  # ranges end after that tensor
        if bounds[-1] < cut < len(sizes):
            bounds.append(cut)
    bounds.append(len(sizes))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _run_forked(
    parts: Sequence[tuple[int, int]],
    work: Callable[[tuple[int, int], Callable[[object], None]], object],
    tick: Callable[[int], object],
    *,
    what: str,
) -> list:
    """`work(part, send)` for each part in its own forked process, side by side; returns each part's result in
    order (JSON-able values: the messages are JSON, so nothing a worker sends is unpickled). A worker reports progress
    with `send(("tick", n))` (handed to `tick` here). The first worker error is raised here as raised there (an
    hfsoup error with its message, fix and problems; an `OSError` with its errno; anything else as a
    `SoupWorkerError` quoting it); on any error, or Ctrl-C, every worker is killed and reaped before this returns.

    Forked, not spawned: the workers share the parent's memory maps of the ingredients and its imports, so one
    starts in milliseconds and adds only the pages it writes to the memory in use.
    """
    import multiprocessing
    import signal
    from multiprocessing.connection import wait

    workers: dict[int, tuple[int, object]] = {}  # part -> (pid, the parent's end of its pipe)
    results: list = [None] * len(parts)
    finished = False
    try:
        for k, part in enumerate(parts):
            receive, send = multiprocessing.Pipe(duplex=False)
            pid = os.fork()
            if pid == 0:
                receive.close()
                _worker_main(lambda part=part, send=send: work(part, lambda m, c=send: _send(c, m)), send)
            send.close()
            workers[k] = (pid, receive)
        running = dict(workers)
        while running:
            for conn in wait([c for _, c in running.values()]):
                k = next(k for k, (_, c) in running.items() if c is conn)
                try:
                    kind, value = json.loads(conn.recv_bytes())  # type: ignore[attr-defined]
                except EOFError:
                    pid = running[k][0]
                    _, status = os.waitpid(pid, 0)
                    workers[k] = (-1, conn)  # reaped
                    code = os.waitstatus_to_exitcode(status)
                    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                    raise SoupWorkerError(
                        f"The process computing part {k + 1} of {len(parts)} of {what} {how} before finishing it "
                        "(signal 9 is most often the system running out of memory).",
                        fix="Run the soup again; to soup in one process, set HFSOUP_NUM_THREADS=1 or HFSOUP_FORK=0.",
                    ) from None
                if kind == "tick":
                    tick(value)
                elif kind == "done":
                    results[k] = value
                    del running[k]
                else:
                    raise _rebuilt_error(value, what)
        finished = True
    finally:
        for pid, conn in workers.values():
            if pid > 0 and not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            conn.close()  # type: ignore[attr-defined]
        for pid, _ in workers.values():
            if pid > 0:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
    return results


def _send(conn, message: object) -> None:  # noqa: ANN001 - a multiprocessing Connection
    conn.send_bytes(json.dumps(message).encode())


def _worker_main(work: Callable[[], object], send) -> None:  # noqa: ANN001 - a multiprocessing Connection
    """A forked worker's whole life: `work()`, its result or its error sent to the parent, and `os._exit`, so that
    none of the parent's cleanup (the staging folder, the progress bar, atexit) runs twice."""
    import gc
    import signal
    import traceback

    code = 1
    try:
        # Ctrl-C reaches the whole process group: the parent stops the workers itself. No cyclic collection either:
        # it would touch, and so copy, every page of objects shared with the parent, for a few seconds' work.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        gc.disable()
        try:
            result = work()
        except BaseException as e:  # noqa: BLE001 - every error goes to the parent, which raises it
            _send(send, ("error", _error_fields(e, "".join(traceback.format_exception(e)))))
        else:
            _send(send, ("done", result))
            code = 0
    finally:
        os._exit(code)


def _error_fields(e: BaseException, trace: str) -> dict:
    """What the parent needs to raise `e` again: its class, its message and its structure (an hfsoup error's
    attributes, those that are not JSON-able as None: a `CompatReport` stays behind, as if none was attached)."""
    fields: dict = {"class": type(e).__name__, "module": type(e).__module__, "text": str(e), "trace": trace}
    if isinstance(e, HfsoupError):
        fields["args"] = [str(a) for a in e.args]
        fields["attrs"] = {k: v if _json_able(v) else None for k, v in vars(e).items() if k != "__notes__"}
    elif isinstance(e, OSError):
        fields |= {
            "errno": e.errno,
            "strerror": e.strerror,
            "filename": None if e.filename is None else str(e.filename),
        }
    return fields


def _json_able(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _rebuilt_error(fields: dict, what: str) -> BaseException:
    """The worker's error, raised in the parent (`_error_fields`), its traceback as a note."""
    from .. import errors

    cls = getattr(errors, fields["class"], None) if fields["module"] == errors.__name__ else None
    error: BaseException
    if isinstance(cls, type) and issubclass(cls, HfsoupError) and "attrs" in fields:
        # Not through __init__ (subclasses take their own arguments): the state the worker's instance had.
        error = cls.__new__(cls)
        error.args = tuple(fields["args"])
        vars(error).update(fields["attrs"])
    elif "errno" in fields:
        error = OSError(fields["errno"], fields["strerror"], *([fields["filename"]] if fields["filename"] else []))
    else:
        error = SoupWorkerError(
            f"The process computing part of {what} failed: {fields['class']}: {fields['text']}",
            fix="Run again with HFSOUP_DEBUG=1 for the worker's traceback, and report it if it is hfsoup's.",
        )
    error.add_note(f"In the worker process:\n{fields['trace'].rstrip()}")
    return error


def collect_meter(plan: SoupPlan, staging: Path, meter: SimilarityMeter) -> None:
    """Add every shard's measurements (in shard order, so any split of the work gives the same sums) to `meter`.

    Every record was written by this run from its own pass over the ingredients, the reused shards' included.
    """
    import json

    for file in plan.files:
        record = json.loads((staging / PROGRESS_DIR / f"{file}.json").read_text())
        meter.merge(record["meter"])


def _mix_blocks(
    name: str,
    tensors: Sequence[np.ndarray],
    codes: Sequence[str],
    weights: Sequence[float],
    out_code: str,
    meter: SimilarityMeter,
    base: tuple[np.ndarray, str] | None,
    accumulate: Accumulate | None,
    *,
    base_weight: float = 0.0,
    merge: TensorMerge | None = None,
    read_ahead: ReadAhead | None = None,
    pool: BlockPool | None = None,
) -> Iterator[np.ndarray]:
    """The output tensor `name`, block by block, in its stored representation; every ingredient's block (including
    those of weight 0) also feeds `meter`. With `accumulate=None` only the meter runs (`hfsoup check`).

    With `base_weight` the base's block is one more term of the sum (a tensor the base lacks is the ingredients'
    mean); with `merge` the float tensor is `merge.merge(...)`'s instead, after a pass that feeds the meter."""
    if codes[0] not in FLOAT_CODES:
        # Integer buffers (position ids, token type ids) are not averaged; they must agree.
        meter.compare_buffers(name, tensors)
        first = tensors[0]
        if any(w != 0.0 and not np.array_equal(first, t) for t, w in zip(tensors, weights, strict=True)):
            raise IncompatibleIngredientsError(
                f"Non-float tensor {name!r} ({codes[0]}) differs between ingredients; integer buffers cannot be "
                "averaged and must be identical."
            )
        if accumulate is not None:
            yield np.ascontiguousarray(first).reshape(-1)
        return
    base_fits = None if base is None else base[0].shape == tensors[0].shape
    meter.start(name, tensors[0].ndim, base_fits, numel=tensors[0].size)
    dtype = kernels.compute_dtype(codes)
    flats = [t.reshape(-1) for t in tensors]
    kept = [i for i, w in enumerate(weights) if w != 0.0]
    kept_weights = [weights[i] for i in kept]
    base_flat = base[0].reshape(-1) if base_fits else None
    if merge is not None or base_weight != 0.0:
        if read_ahead is not None:
            read_ahead.advance(0)  # the first window; the kernel's own read-ahead follows the merge's passes
        block = getattr(accumulate, "block", kernels.BLOCK)  # the GPU's accumulator takes larger blocks
        yield from _merge_blocks(
            name, flats, codes, weights, dtype, out_code, meter, base_flat, base, accumulate, base_weight, merge, block
        )
        return
    plain = _PlainSum(flats, codes, dtype, kept, kept_weights, out_code, meter, base_flat, base[1] if base else "")
    # The plain weighted sum makes few passes over a block: larger blocks cost it less in calls and allocations.
    block = getattr(accumulate, "block", kernels.sum_block())
    if pool is not None and accumulate is kernels.weighted_sum and flats[0].size > block * pool.CHUNK_BLOCKS:
        yield from pool.blocks(plain, read_ahead)
        meter.finish()
        return
    # One widening buffer per bfloat16 ingredient, reused for every block: the blocks are consumed (measured and
    # summed) before the next is widened, and the sum is a fresh array, which the writer's thread may still hold.
    size, numel = min(flats[0].size, block), flats[0].size
    buffers = plain.buffers(size)
    paired = plain.pair_buffers(size) if plain.paired and accumulate is kernels.weighted_sum else None
    for start in range(0, numel, block):
        if read_ahead is not None:
            read_ahead.advance(start + block, start)
        stop = min(start + block, numel)
        fast = plain.paired_block(start, stop, paired) if paired is not None and (stop - start) % 2 == 0 else None
        if fast is not None:
            meter.block_parts(fast[1], plain.base_parts(start, stop), stop - start)
            yield fast[0]
            continue
        out = plain.measured(start, stop, buffers, accumulate)
        if out is not None:
            yield out
    meter.finish()


@dataclass
class _PlainSum:
    """One float tensor's plain weighted sum, block by block: what the one-thread loop and `BlockPool`'s threads
    both compute (`sum`), and the block as the one-thread loop measures and narrows it (`measured`)."""

    flats: Sequence[np.ndarray]
    codes: Sequence[str]
    dtype: np.dtype
    kept: Sequence[int]
    kept_weights: Sequence[float]
    out_code: str
    meter: SimilarityMeter
    base_flat: np.ndarray | None
    base_code: str
    paired: bool = field(init=False)

    def __post_init__(self) -> None:
        # bfloat16 in and out, every ingredient summed: blocks of an even size take the paired kernels
        # (`kernels.widen_bf16_pairs`), a quarter less CPU time than widening and narrowing element by element.
        self.paired = (
            kernels.PAIRS
            and self.dtype == np.float32
            and self.out_code == "BF16"
            and all(code == "BF16" for code in self.codes)
            and len(self.kept) == len(self.codes)
        )

    def buffers(self, size: int) -> list[np.ndarray | None]:
        """A widening buffer per bfloat16 ingredient (`kernels.widen(out=...)`), for blocks of `size` elements."""
        wide = self.dtype == np.float32
        return [np.empty(size, np.float32) if code == "BF16" and wide else None for code in self.codes]

    def pair_buffers(self, size: int) -> list[np.ndarray]:
        """`paired_block`'s buffers for blocks of `size` elements: the two sums and the two halves of one ingredient
        (uint32, half a block each)."""
        half = (size + 1) // 2
        return [np.empty(half, np.uint32) for _ in range(4)]

    def paired_block(
        self, start: int, stop: int, buffers: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[list[np.ndarray]]] | None:
        """Elements `start:stop` (an even number of them) through the paired kernels: the narrowed sum and each
        ingredient's measured parts, or None when the sum is not finite (the caller takes `measured`'s careful path).

        Each ingredient is widened and added in turn, so a block's working set is four half-blocks, whatever the
        number of ingredients. The additions are `kernels.weighted_sum`'s, in its order (equal weights summed, then
        scaled), so the bits are those of `sum`. The parts are the measured windows widened element by element from
        the stored values: the very values, in the very order, that `measured` hands the meter."""
        half = (stop - start) // 2
        sums = [buffers[0][:half].view(np.float32), buffers[1][:half].view(np.float32)]
        weights = self.kept_weights
        equal = all(w == weights[0] for w in weights[1:])
        with np.errstate(over="ignore", invalid="ignore"):
            for k, (flat, weight) in enumerate(zip(self.flats, weights, strict=True)):
                if k == 0:
                    kernels.widen_bf16_pairs(flat[start:stop], buffers[0], buffers[1])
                    if not equal or len(weights) == 1:
                        for total in sums:
                            np.multiply(total, np.float32(weight), out=total)
                    continue
                halves = kernels.widen_bf16_pairs(flat[start:stop], buffers[2], buffers[3])
                for total, part in zip(sums, halves, strict=True):
                    if not equal:
                        np.multiply(part, np.float32(weight), out=part)
                    np.add(total, part, out=total)
            for total in sums:
                if equal and len(weights) > 1:
                    np.multiply(total, np.float32(weights[0]), out=total)
                # As in `sum`: one reduction stands for every element's check (every weight is non-zero here).
                if not np.isfinite(np.add.reduce(total, axis=None)):
                    return None
        narrowed = kernels.narrow_bf16_pairs(sums[0], sums[1], buffers[2])
        windows = self.meter.sample_windows(start, stop - start)
        parts = [
            [kernels.widen(flat[start + lo : start + hi], "BF16", self.dtype) for lo, hi in windows]
            for flat in self.flats
        ]
        return narrowed, parts

    def sum(
        self, start: int, stop: int, buffers: Sequence[np.ndarray | None], accumulate: Accumulate | None
    ) -> tuple[np.ndarray | None, list[np.ndarray], bool]:
        """Elements `start:stop`: (their sum, or None without `accumulate`; every ingredient's widened block;
        whether the sum shows every element finite)."""
        blocks = [
            kernels.widen(f[start:stop], c, self.dtype, out=b)
            for f, c, b in zip(self.flats, self.codes, buffers, strict=True)
        ]
        if accumulate is None:
            return None, blocks, False
        terms = [blocks[i] for i in self.kept]
        numpy_sum = accumulate is kernels.weighted_sum
        if numpy_sum:
            out = kernels.weighted_sum(terms, self.kept_weights, sum_first=True)
        else:
            out = accumulate(terms, self.kept_weights)
        # One reduction of the sum stands for the meter's and the narrowing's checks of every element of the summed
        # blocks: with every weight non-zero, a NaN or an Inf in any of them makes it non-finite (a block of weight 0
        # is reduced on its own). Non-finite (an overflow, or a bad weight) is looked at closely: summed term by term
        # where equal weights were summed first, then measured element by element.
        with np.errstate(over="ignore", invalid="ignore"):
            finite = bool(np.isfinite(np.add.reduce(out, axis=None)))
            if finite and len(self.kept) != len(blocks):
                left_out = set(range(len(blocks))) - set(self.kept)
                finite = all(np.isfinite(np.add.reduce(blocks[i], axis=None)) for i in left_out)
        if not finite and numpy_sum:
            out = kernels.weighted_sum(terms, self.kept_weights)
        return out, blocks, finite

    def measured(
        self, start: int, stop: int, buffers: Sequence[np.ndarray | None], accumulate: Accumulate | None
    ) -> np.ndarray | None:
        """`sum`, fed to the meter (the base's block too) and narrowed to the output's representation."""
        out, blocks, finite = self.sum(start, stop, buffers, accumulate)
        base = (
            None if self.base_flat is None else kernels.widen(self.base_flat[start:stop], self.base_code, self.dtype)
        )
        self.meter.block(blocks, base, finite=finite)
        return None if out is None else kernels.narrow(out, self.out_code, finite=finite)

    def base_parts(self, start: int, stop: int) -> list[np.ndarray] | None:
        """The base's measured parts of elements `start:stop` (`SimilarityMeter.sample_windows`), widened."""
        if self.base_flat is None:
            return None
        part = self.base_flat[start:stop]
        windows = self.meter.sample_windows(start, stop - start)
        return [kernels.widen(part[lo:hi], self.base_code, self.dtype) for lo, hi in windows]


class BlockPool:
    """Threads that compute the blocks of a large tensor's weighted sum side by side, yielded in order.

    numpy releases the GIL in its loops, so widening, summing and rounding blocks on every core takes a soup of large
    checkpoints from one core's arithmetic speed towards the speed the page cache delivers them (a uniform soup of
    4 x 1B bf16 models is otherwise bound by one core). Each block is computed by the same code whichever thread
    takes it, so the bytes are those of the one-thread loop. The meter is fed in block order from this thread with
    each block's sample (what it measures), so its sums are the same too; a block whose sum is not finite is
    recomputed here and measured element by element, as the one-thread loop does.

    Args:
        threads (`int`): worker threads (2 or more; `create` returns None for 1).
    """

    #: Blocks per job (of `kernels.sum_block()` elements): enough that the futures' overhead is small beside the
    #: arithmetic, few enough that every thread has work in a tensor of a few megabytes.
    CHUNK_BLOCKS = 2

    def __init__(self, threads: int) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="hfsoup-soup")
        self._local = threading.local()

    @classmethod
    def create(cls) -> BlockPool | None:
        """A pool with a thread per core this process may use (`HFSOUP_NUM_THREADS` to choose; processes launched
        together on one machine share its cores), or None where that is one."""
        threads = _thread_count()
        return cls(threads) if threads > 1 else None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _buffers(self, plain: _PlainSum, paired: bool = False) -> list:
        """This thread's buffers for `plain`'s blocks (`_PlainSum.buffers`, or `pair_buffers` when `paired`),
        made once per kind of tensor."""
        key = (tuple(plain.codes), plain.dtype, paired)
        cache = getattr(self._local, "buffers", None)
        if cache is None or cache[0] != (key[0], key[1]):
            cache = ((key[0], key[1]), {})
            self._local.buffers = cache
        if paired not in cache[1]:
            size = kernels.sum_block()
            cache[1][paired] = plain.pair_buffers(size) if paired else plain.buffers(size)
        return cache[1][paired]

    def blocks(self, plain: _PlainSum, read_ahead: ReadAhead | None) -> Iterator[np.ndarray]:
        """`_mix_blocks`'s plain loop for one float tensor of several blocks, on the pool's threads: each job takes
        `CHUNK_BLOCKS` consecutive blocks, so the hand-over costs little beside the arithmetic."""
        from collections import deque

        block, numel = kernels.sum_block(), plain.flats[0].size
        chunk = block * self.CHUNK_BLOCKS

        def job(first: int) -> list[tuple[np.ndarray, list[list[np.ndarray]]] | None]:
            results: list[tuple[np.ndarray, list[list[np.ndarray]]] | None] = []
            for start in range(first, min(first + chunk, numel), block):
                stop = min(start + block, numel)
                if plain.paired and (stop - start) % 2 == 0:
                    results.append(plain.paired_block(start, stop, self._buffers(plain, paired=True)))
                    continue
                out, blocks, finite = plain.sum(start, stop, self._buffers(plain), kernels.weighted_sum)
                if not finite:
                    results.append(None)
                    continue
                # Copies of the measured parts: the widening buffers are this thread's, reused by its next block.
                windows = plain.meter.sample_windows(start, stop - start)
                parts = [[np.array(b[lo:hi]) for lo, hi in windows] for b in blocks]
                results.append((kernels.narrow(out, plain.out_code, finite=True), parts))  # type: ignore[arg-type]
            return results

        firsts = iter(range(0, numel, chunk))
        pending: deque = deque()

        def submit() -> None:
            first = next(firsts, None)
            if first is not None:
                if read_ahead is not None:
                    read_ahead.advance(min(first + chunk, numel), pending[0][0] if pending else first)
                pending.append((first, self._executor.submit(job, first)))

        for _ in range(2 * self.threads):
            submit()
        own_buffers: list[np.ndarray | None] | None = None
        try:
            while pending:
                first, future = pending.popleft()
                submit()
                for k, result in enumerate(future.result()):
                    start = first + k * block
                    stop = min(start + block, numel)
                    if result is None:  # not finite: this thread looks at every element, as the one-thread loop does
                        own_buffers = own_buffers or plain.buffers(block)
                        yield plain.measured(start, stop, own_buffers, kernels.weighted_sum)  # type: ignore[misc]
                        continue
                    narrowed, parts = result
                    plain.meter.block_parts(parts, plain.base_parts(start, stop), stop - start)
                    yield narrowed
        finally:
            for _, future in pending:  # a consumer that stops early (a staged shard known to differ)
                future.cancel()


def _thread_count() -> int:
    """Threads for `BlockPool`: `HFSOUP_NUM_THREADS`, else this process's cores shared among the processes launched
    on its machine (`LOCAL_WORLD_SIZE`), at most 8 (beyond that the page cache, not arithmetic, is the limit)."""
    chosen = os.environ.get("HFSOUP_NUM_THREADS", "").strip()
    if chosen:
        try:
            return max(1, min(int(chosen), MAX_THREADS))
        except ValueError:
            raise InvalidSoupArgumentsError(
                f"HFSOUP_NUM_THREADS={chosen!r} is not a whole number.", fix="Set it to 1 or more, or unset it."
            ) from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(8, cores // local))


#: The most threads `HFSOUP_NUM_THREADS` may ask for: beyond the cores of any machine, threads only wait.
MAX_THREADS = 256


def _merge_blocks(
    name: str,
    flats: Sequence[np.ndarray],
    codes: Sequence[str],
    weights: Sequence[float],
    dtype: np.dtype,
    out_code: str,
    meter: SimilarityMeter,
    base_flat: np.ndarray | None,
    base: tuple[np.ndarray, str] | None,
    accumulate: Accumulate | None,
    base_weight: float,
    merge: TensorMerge | None,
    block: int,
) -> Iterator[np.ndarray]:
    """`_mix_blocks` for the methods defined relative to the base: the affine sum with the base's block, or a
    per-tensor `merge`. Kept apart so that the plain weighted sum's loop stays as it was."""
    inputs = TensorInputs(
        name,
        flats,
        codes,
        None if base_flat is None else (base_flat, base[1]),  # type: ignore[index]
        dtype,
        accumulate or kernels.weighted_sum,
        meter.block if merge is not None else None,
        block=block,
    )
    if merge is not None:
        # The meter reads the blocks of the merge's first pass over them (a pass of its own only for what no pass
        # read), so measuring costs no extra pass over the tensor.
        if accumulate is not None:
            for block in merge.merge(inputs):
                yield kernels.narrow(np.ascontiguousarray(block, dtype=dtype), out_code)
        inputs.observe_rest()
        meter.finish()
        return
    mean = [1.0 / len(flats)] * len(flats)
    for blocks, base_block in inputs.blocks():
        meter.block(blocks, base_block)
        if accumulate is None:
            continue
        if base_block is None:  # the base lacks this tensor: the ingredients' mean
            yield kernels.narrow(accumulate(blocks, mean), out_code)
        else:
            yield kernels.narrow(accumulate([*blocks, base_block], [*weights, base_weight]), out_code)
    meter.finish()


class _Unmeasured:
    """A meter that measures nothing: a soup built in memory to be scored is measured when it is written."""

    def start(self, name: str, ndim: int, base_fits: bool | None, *, numel: int | None = None) -> None:
        pass

    def block(self, blocks: Sequence[np.ndarray], base: np.ndarray | None = None, *, finite: bool = False) -> None:
        pass

    def sample_windows(self, start: int, size: int) -> list[tuple[int, int]]:
        return []

    def block_parts(self, parts: Sequence[Sequence[np.ndarray]], base_parts: object, size: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def compare_buffers(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        pass


def merged_tensor(
    name: str,
    arrays: Sequence[np.ndarray],
    mixing: Mixing,
    *,
    base: BaseWeights | None = None,
    merge: TensorMerge | None = None,
) -> np.ndarray:
    """One float tensor of a soup computed in memory from the ingredients' float32 `arrays`, by the engine's own
    per-tensor code (`_mix_blocks`: the affine sum with the base, or `merge`), in float32 on the CPU: what the
    selection stage scores a merge method's candidate with. `merge.prepare` must have seen every tensor name."""
    codes = ["F32"] * len(arrays)
    blocks = _mix_blocks(
        name,
        [np.ascontiguousarray(a) for a in arrays],
        codes,
        mixing.weights_for(name),
        "F32",
        _Unmeasured(),  # type: ignore[arg-type]
        _base_array(base, name),
        kernels.weighted_sum,
        base_weight=mixing.base_weight,
        merge=merge,
    )
    parts = [np.asarray(b, dtype=np.float32).reshape(-1) for b in blocks]
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)).reshape(arrays[0].shape)


def _fault_point(name: str) -> None:
    """Crash here when HFSOUP_FAULT names this point (the kill-and-resume tests; issue 9's fault injection)."""
    spec = os.environ.get("HFSOUP_FAULT", "")
    if spec.split(":")[0] != name:
        return
    # "shard-written:2" crashes after the second time this point is reached; "tensor-written:3:pause" says so on
    # stderr and waits there instead, for a test to send a real signal in the middle of a shard.
    parts = spec.split(":")
    count = int(parts[1]) if len(parts) > 1 else 1
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] != count:
        return
    if parts[2:] == ["pause"]:
        import sys
        import time

        print(f"hfsoup fault point: paused at {name}:{count}", file=sys.stderr, flush=True)
        time.sleep(300)
        return
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
    from ..progress import bar

    excluded = set(exclude)
    names = sorted(n for n in readers[0].structure if n not in excluded)
    stream = iter_tensors(readers, names, alignment=alignment, label_indexed=label_indexed)
    weights = [1.0] * len(readers)
    for name, tensors in bar(stream, total=len(names), desc="Comparing weights", unit="tensor"):
        codes = [r.structure[name].dtype for r in readers]
        for _ in _mix_blocks(name, tensors, codes, weights, codes[0], meter, _base_array(base, name), None):
            pass


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

    def get_array(self, name: str) -> tuple[np.ndarray, str] | None:
        """The base's tensor for the soup's tensor `name`, with its dtype code; None when the base lacks it."""
        mapped = self.name_map.get(name)
        if mapped is None or not self.reader.structure[mapped].is_float:
            return None
        return self.reader.get_array(mapped), self.reader.structure[mapped].dtype


def _base_array(base: BaseWeights | None, name: str) -> tuple[np.ndarray, str] | None:
    return None if base is None else base.get_array(name)
