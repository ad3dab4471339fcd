"""Which process am I? One process by default; several under `accelerate launch` or `torchrun`.

Accelerate is imported only when the launcher says there is more than one process, so a plain `hfsoup soup` does not
pay for it at start-up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

#: `extra=` of a log record that every process shows (what it did itself, e.g. its share of the batches). Below
#: WARNING, other records are shown by the main process only (`OnlyMainInfo`): the processes take the same
#: decisions, so one account of them is enough.
EVERY_PROCESS = {"every_process": True}


@dataclass
class Processes:
    rank: int = 0
    world_size: int = 1
    _barrier: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""
        self._barrier()

    def mine(self, n_items: int) -> list[int]:
        """The items (shards) this process works on: round robin, so sizes even out."""
        return list(range(self.rank, n_items, self.world_size))


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 without one), without starting any communication."""
    return int(os.environ.get("RANK", "0"))


class OnlyMainInfo(logging.Filter):
    """For a handler of a process other than the main one: warnings and errors, and the records marked
    `EVERY_PROCESS`; the rest is the main process's to tell."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "every_process", False)


def current() -> Processes:
    """The processes of this run, from the launcher's environment (`WORLD_SIZE`, `RANK`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # Without a GPU accelerate must be told to use the CPU, or it silently runs every process as rank 0 of 1; with
    # `cpu=True` it picks the gloo backend. On GPUs it picks NCCL.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone)
