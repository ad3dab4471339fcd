"""The runs of a sweep, in a deterministic order with deterministic names: every combination of a grid, or the
draws of a seeded random search."""

from __future__ import annotations

import itertools
import math
from typing import Any

from ..errors import SweepError
from .sweep import HYPERPARAMETERS, SHORT_NAMES, Run, Sweep, search_problems


def _run(values: dict[str, Any], sweep: Sweep, varied: list[str]) -> Run:
    merged = {**HYPERPARAMETERS, "epochs": sweep.epochs, **values}
    shown = [
        k for k in SHORT_NAMES if k in ("learning_rate", "seed", "weight_decay", "label_smoothing") or k in varied
    ]
    parts = []
    for key in shown:
        value = merged[key]
        text = (
            str(int(value))
            if key == "seed"
            else f"{float(value):.3g}"
            if key == "learning_rate"
            else repr(float(value))
        )
        parts.append(f"{SHORT_NAMES[key]}{text}")
    return Run(
        name="-".join(parts),
        learning_rate=float(merged["learning_rate"]),
        seed=int(merged["seed"]),
        weight_decay=float(merged["weight_decay"]),
        label_smoothing=float(merged["label_smoothing"]),
        epochs=float(merged["epochs"]),
        max_steps=sweep.max_steps,
    )


def plan_sweep(sweep: Sweep) -> list[Run]:
    """The runs of `sweep`, in a deterministic order with deterministic names (`lr2e-05-seed0-wd0.0-ls0.0`).

    Example:
        ```py
        >>> sweep = Sweep("org/bert", "sweep/", task="sst2", grid={"learning_rate": [1e-5, 2e-5], "seed": [0, 1]})
        >>> [run.name for run in plan_sweep(sweep)][:2]
        ['lr1e-05-seed0-wd0.0-ls0.0', 'lr1e-05-seed1-wd0.0-ls0.0']
        ```
    """
    problems = search_problems(sweep.grid, sweep.random)
    if sweep.grid is None and sweep.random is None:
        problems.append(("grid", "missing: give a grid or a random search"))
    if problems:
        raise SweepError(
            f"The sweep's search has {len(problems)} problem{'s' if len(problems) > 1 else ''}, each listed below.",
            fix=f"Hyperparameters are {', '.join(HYPERPARAMETERS)}; grid values are non-empty lists, random ranges "
            "are [low, high] and n is at least 2.",
            problems=[f"{w}: {m}" for w, m in problems],
        )
    if sweep.grid is not None:
        keys = [k for k in HYPERPARAMETERS if k in sweep.grid]
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(sweep.grid[k] for k in keys))]
        runs = [_run(c, sweep, [k for k in keys if len(sweep.grid[k]) > 1]) for c in combos]
    else:
        import numpy as np

        spec = dict(sweep.random)  # type: ignore[arg-type]
        rng = np.random.default_rng(spec.pop("seed", 0))
        n = spec.pop("n")
        runs = []
        for _ in range(n):
            values: dict[str, Any] = {"seed": int(rng.integers(0, 10_000))}
            for key in HYPERPARAMETERS:
                if key not in spec:
                    continue
                low, high = spec[key]
                if key == "learning_rate":
                    values[key] = float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")
                elif key == "epochs":
                    values[key] = int(rng.integers(math.ceil(low), math.floor(high) + 1))
                else:
                    values[key] = float(f"{rng.uniform(low, high):.3g}")
            runs.append(_run(values, sweep, [k for k in spec]))
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(
            f"The sweep plans several runs with the same hyperparameters: {', '.join(duplicates)}.",
            fix="Widen the random ranges, raise their precision, or change the search's seed.",
        )
    return runs
