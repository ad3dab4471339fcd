"""Which process am I? One process by default; several under `accelerate launch` or `torchrun`.

Accelerate is imported only when the launcher says there is more than one process, so a plain `hfsoup soup` does not
pay for it at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field


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
