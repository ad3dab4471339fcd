"""Fine-tune sweeps: train soup ingredients from one base over a hyperparameter grid or a random search.

    # hfsoup finetune google-bert/bert-base-uncased --task mrpc -o sweeps/mrpc \\
    #     --grid learning_rate=1e-5,2e-5,3e-5 seed=0,1 --epochs 3 --push-org me

Every run starts from the same checkpoint: the base with its classification head built once (seeded) and saved in
the sweep folder as `start/`. Runs that share their head's initialization can be souped; runs whose heads were
initialized independently cannot (`hfsoup check` refuses them). Training goes through `transformers.Trainer`
(Accelerate underneath) on the task's train split.

- `sweep`: the settings (`Sweep`), a run's hyperparameters (`Run`), and their validation (`make_sweep`).
- `plan`: the runs of a sweep, named deterministically (`plan_sweep`).
- `train`: the shared start, training and pushing each run (`run_sweep`).
- `args`: a sweep from command-line text (`sweep_from_args`).
"""

from __future__ import annotations

from .args import sweep_from_args
from .plan import plan_sweep
from .sweep import (
    HYPERPARAMETERS,
    PUSHED_FILE,
    RUN_FILE,
    START_DIR,
    Run,
    Sweep,
    make_sweep,
    search_problems,
    sweep_problems,
)
from .train import is_complete, run_sweep

__all__ = [
    "HYPERPARAMETERS",
    "PUSHED_FILE",
    "RUN_FILE",
    "START_DIR",
    "Run",
    "Sweep",
    "is_complete",
    "make_sweep",
    "plan_sweep",
    "run_sweep",
    "search_problems",
    "sweep_from_args",
    "sweep_problems",
]
