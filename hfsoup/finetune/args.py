"""A sweep from command-line text: `--grid learning_rate=1e-5,2e-5`, `--random 8 --range learning_rate=1e-5:5e-5`."""

from __future__ import annotations

from typing import Any

from ..errors import SweepError
from .sweep import HYPERPARAMETERS, Sweep, make_sweep, sweep_problems


def _cli_value(name: str, text: str) -> Any:
    """A value as typed on the command line: an int for seeds, a number otherwise; the text itself when neither
    (so that validation reports it)."""
    for kind in (int, float) if name == "seed" else (float,):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def sweep_from_args(
    base: str,
    output_dir: str,
    *,
    grid: list[str] | None = None,
    ranges: list[str] | None = None,
    random_n: int | None = None,
    random_seed: int = 0,
    **settings: Any,
) -> Sweep:
    """A `Sweep` from command-line text (`learning_rate=1e-5,2e-5`, `learning_rate=1e-5:5e-5`); every problem of
    every argument is reported at once in one `SweepError`."""
    problems: list[str] = []
    parsed_grid: dict[str, list] | None = None
    random: dict[str, Any] | None = None
    if grid:
        parsed_grid = {}
        for item in grid:
            name, sep, values = item.partition("=")
            if not sep or not name or not values:
                problems.append(f"--grid {item}: expected NAME=VALUE,VALUE,... (e.g. learning_rate=1e-5,2e-5)")
                continue
            parsed_grid[name] = [_cli_value(name, v.strip()) for v in values.split(",")]
    if random_n is not None:
        random = {"n": random_n, "seed": random_seed}
        for item in ranges or []:
            name, sep, bounds = item.partition("=")
            low, colon, high = bounds.partition(":")
            if not sep or not colon:
                problems.append(f"--range {item}: expected NAME=LOW:HIGH (e.g. learning_rate=1e-5:5e-5)")
                continue
            random[name] = [_cli_value(name, low.strip()), _cli_value(name, high.strip())]
    elif ranges:
        problems.append("--range: ranges apply to a random search: add --random N")
    data = {"base": base, "output_dir": output_dir, "grid": parsed_grid, "random": random}
    data.update({k: v for k, v in settings.items() if v is not None})
    problems += [f"{_cli_name(w)}: {m}" for w, m in sweep_problems(data)]
    if problems:
        raise SweepError(
            f"The fine-tune sweep has {len(problems)} problem{'s' if len(problems) > 1 else ''}, each listed below.",
            fix=f"Hyperparameters are {', '.join(HYPERPARAMETERS)}: --grid learning_rate=1e-5,2e-5 seed=0,1, or "
            "--random 8 --seed 0 --range learning_rate=1e-5:5e-5 weight_decay=0:0.1.",
            problems=problems,
        )
    return make_sweep(data)


def _cli_name(where: str) -> str:
    head, _, rest = where.partition(".")
    flag = {"grid": "--grid", "random": "--random/--range", "output_dir": "-o"}.get(
        head, f"--{head.replace('_', '-')}"
    )
    return f"{flag} {rest}".strip()
