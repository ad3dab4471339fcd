"""Time hfsoup's greedy selection against scoring every candidate with a fresh `hfsoup eval`-style pass.

    python benchmarks/select_speed.py                    # 8 tiny T5 on sst2, 8 tiny CLIP zero-shot on digits, 3 runs
    python benchmarks/select_speed.py --family clip --runs 5 --rows 800

The first run builds, under `--cache`, 8 tiny T5 and 8 tiny CLIP fine-tunes (`hfsoup.testing.families`, with more
noise than the test families so that they disagree: see NOISE), a synthetic sst2 validation file of `--rows` rows and
the digits image dataset with a validation split of `--rows` images: local files, no Hub.

Both contenders select on the same rows (hfsoup's default carve: a seeded 50% of `validation` held out, the other
half reported) and produce the same figures: every ingredient on both halves, the greedy decisions, the greedy soup on
both halves. Each runs as its own process, in turn, round after round:

  hfsoup   `hfsoup.soup(ingredients, out, method="greedy", selection=Selection(compare=[], plot=False, ...))`, as
           `hfsoup soup ... --method greedy --compare none --no-plot` runs it: the data is loaded, tokenized or
           preprocessed once, the class prompts re-embedded per candidate (CLIP), the weights swapped into one loaded
           model; a candidate that cannot be kept stops being scored early. `select` is the time in `select_soup`,
           `soup()` adds the compatibility check and writing the chosen soup.
  fresh    the paper's greedy algorithm (sort by held-out score, add each ingredient if the trial soup's held-out
           score is >= the current one) where every ingredient and every trial soup is scored by a fresh
           `Evaluator(...)` restricted to the same rows, then `.evaluate(folder)`: what `evaluate_model` (and
           `hfsoup eval`) does, data loading, tokenization or image preprocessing and model loading included; each
           trial soup is first written with `hfsoup.soup(kept + [candidate], method="uniform")`. In-process, so it
           pays the imports once (a shell loop over `hfsoup eval` would pay them per candidate). `select` is the
           whole search and scoring; `soup()` the same (its final soup is the last trial written).

Both read the same warm datasets cache (an untimed warm-up run of each fills it): tokenized and preprocessed splits
are read back from it by a fresh evaluator, as when `hfsoup eval` runs again on the same data.

Reported per family and contender, medians over `--runs`: `select` wall and CPU seconds and their ratio fresh /
hfsoup, `soup()` seconds, the child's imports before the clock and its whole process wall time, the full passes over
a part of the data (forward passes over held-out or reported rows: an early-stopped candidate counts as one), the
held-out examples scored for the trials, and where the time went (data loading, tokenization/preprocessing and
batching, model loading, trial soup writes, the rest: the forward passes and Python).
The kept ingredients must be the same for both contenders; the script says so loudly when they are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

N_INGREDIENTS = 8
SEED = 0
# The test families' 5% noise leaves every tiny fine-tune predicting as its base does: every candidate would tie and
# be kept. This much noise makes their predictions differ (some candidates are dropped, some stopped early) while any
# two fine-tunes still pass hfsoup's shared-initialization check (body cosine above 0.5; T5 at 1.0 gives 0.49).
NOISE = {"t5": 0.8, "clip": 0.5}
FAMILIES = ("t5", "clip")
FAMILY_TITLES = {"t5": "T5 (t5-text) on sst2", "clip": "CLIP zero-shot (clip-zero-shot) on digits"}
BUILD_VERSION = 1  # bump when what build() writes changes, so cached builds are redone
CONTENDERS = ("hfsoup", "fresh")
PHASES = ("data", "encode", "model load", "soup write", "rest")  # "model load": its tokenizer or processor too
# The wrapped functions, by name, as the per-call line of the report names them.
CALLS = {
    "__init__": "Evaluator()",
    "encode": "encode",
    "make_batches": "make_batches",
    "load_model": "load_model",
    "load_tokenizer": "load_tokenizer",
    "write_soup": "trial soup write",
}
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
}


# ---------------------------------------------------------------------------------------------------- building
def build(cache: Path, rows: int) -> dict:
    """The ingredient folders and data of both families; reused while `built.json` matches."""
    root = cache / "data"
    layout = {
        "t5": [str(root / "t5" / f"ft{i}") for i in range(N_INGREDIENTS)],
        "clip": [str(root / "clip" / f"ft{i}") for i in range(N_INGREDIENTS)],
        "sst2": str(root / "sst2-validation.parquet"),
        "digits": str(root / "digits"),
        "rows": rows,
    }
    stamp = {"version": BUILD_VERSION, "seed": SEED, "noise": NOISE, "n": N_INGREDIENTS, "rows": rows}
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
        return layout
    import shutil

    import datasets

    import hfsoup.testing.tiny_models as tiny_models
    from hfsoup.evaluation.tasks import TASKS
    from hfsoup.testing.digits import DIGIT_ROWS, build_digits
    from hfsoup.testing.families import build_family
    from hfsoup.testing.glue import glue_features, glue_rows

    shutil.rmtree(root, ignore_errors=True)
    print(f"building {N_INGREDIENTS} tiny T5 and {N_INGREDIENTS} tiny CLIP fine-tunes and the data in {root} ...")
    for kind in FAMILIES:
        tiny_models.NOISE = NOISE[kind]  # read by perturb_ at each call
        build_family(kind, root / kind, n_finetunes=N_INGREDIENTS, seed=SEED)
    task = TASKS["sst2"]
    table = datasets.Dataset.from_dict(glue_rows(task, "validation", rows, seed=1), features=glue_features(task))
    table.to_parquet(layout["sst2"])
    if DIGIT_ROWS["train"] + rows > 1797:
        raise SystemExit(f"--rows {rows}: the digits have 1797 images, {DIGIT_ROWS['train']} of them for train")
    build_digits(root / "digits", rows={"train": DIGIT_ROWS["train"], "validation": rows})
    marker.write_text(json.dumps(stamp))
    return layout


def selection_kwargs(family: str, layout: dict, batch_size: int) -> dict:
    """What both contenders score on: the task and its data (the default carve of `validation` holds out half)."""
    if family == "t5":
        return {"task": "sst2", "data_files": {"validation": [layout["sst2"]]}, "batch_size": batch_size}
    return {"task": "image-classification", "dataset": layout["digits"], "batch_size": batch_size}


# ---------------------------------------------------------------------------------------------------- in the child
class Phases:
    """Seconds spent in a few library functions, patched where their callers look them up (no double counting)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.calls: dict[str, list[float]] = {}  # per function name, each call's seconds
        self.passes = 0

    def wrap(self, module: object, name: str, phase: str) -> None:
        original = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                self.seconds[phase] += seconds
                self.calls.setdefault(name, []).append(seconds)

        setattr(module, name, timed)

    def count(self, cls: type, name: str) -> None:
        original = getattr(cls, name)

        def counted(*args, **kwargs):
            self.passes += 1
            return original(*args, **kwargs)

        setattr(cls, name, counted)

    def install(self) -> None:
        from hfsoup.evaluation import evaluator, placement

        self.wrap(evaluator.Evaluator, "__init__", "data")  # the split and the metric module
        self.wrap(evaluator, "encode", "encode")
        self.wrap(evaluator, "make_batches", "encode")
        self.wrap(evaluator, "load_model", "model load")  # Evaluator.evaluate's
        self.wrap(placement, "load_model", "model load")  # select_soup's (imported from placement when it runs)
        self.wrap(evaluator, "load_tokenizer", "model load")
        self.wrap(placement, "load_tokenizer", "model load")


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    import datasets

    # One-off imports that either contender pays on its first evaluator and its first model (`evaluate`, which the
    # shipped metric modules use, brings transformers.pipelines: 3-7 s on 2 busy cores), made before the clock starts
    # so that `select` times the selection; they are in the `imports` and `process` columns.
    import evaluate  # noqa: F401
    import transformers
    from transformers.utils import logging as transformers_logging

    import hfsoup
    from hfsoup.selection import stage

    getattr(transformers, {"t5": "T5ForConditionalGeneration", "clip": "CLIPModel"}[args.family])
    datasets.disable_progress_bars()
    transformers_logging.set_verbosity_error()
    layout = json.loads(args.layout)
    folders = layout[args.family]
    options = selection_kwargs(args.family, layout, args.batch_size)
    phases = Phases()
    phases.install()
    imports = time.perf_counter() - started
    out = Path(args.work) / f"{args.child}-out"
    if args.child == "hfsoup":
        from hfsoup.selection.scorers import AccuracyScorer, ModelScorer

        phases.count(ModelScorer, "scores")
        phases.count(AccuracyScorer, "partial_sums")
        original, select = stage.select_soup, {}

        def timed_select(*a, **k):
            start, cpu = time.perf_counter(), time.process_time()
            result = original(*a, **k)
            select["seconds"], select["cpu"] = time.perf_counter() - start, time.process_time() - cpu
            return result

        stage.select_soup = timed_select
        selection = hfsoup.Selection(**options, compare=[], plot=False)
        start = time.perf_counter()
        result = hfsoup.soup(folders, out, method="greedy", selection=selection, overwrite=True)
        soup_seconds = time.perf_counter() - start
        record = result.records["greedy"]
        names = {Path(f).name: i for i, f in enumerate(folders)}
        outcome = {
            "kept": sorted(names[n] for n in record["kept"]),
            "order": [names[n] for n in record["order"]],
            "examples_scored": record["examples_scored"],
            "examples_full": record["examples_full"],
            "held_out": result.results.row("greedy soup").held_out,
            "report": result.results.row("greedy soup").report,
        }
        select_seconds, select_cpu = select["seconds"], select["cpu"]
    else:
        outcome, select_seconds, select_cpu = fresh_greedy(folders, options, out, phases, layout["rows"])
        soup_seconds = select_seconds
    phases.seconds["rest"] = select_seconds - sum(phases.seconds[p] for p in PHASES if p != "rest")
    Path(args.result).write_text(
        json.dumps(
            {
                "imports": imports,
                "select": select_seconds,
                "select_cpu": select_cpu,
                "soup": soup_seconds,
                "phases": phases.seconds,
                "passes": phases.passes,
                "calls": phases.calls,
                **outcome,
            }
        )
    )


def fresh_greedy(folders: list[str], options: dict, out: Path, phases: Phases, rows: int) -> tuple[dict, float, float]:
    """The greedy search, every score from a fresh evaluator on a folder; returns the outcome, its wall and CPU
    seconds (its final soup is the last trial written: its `soup()` time is its selection time)."""
    import shutil

    import hfsoup
    from hfsoup.evaluation.evaluator import Evaluator
    from hfsoup.selection.heldout import carve

    # The rows hfsoup selects and reports on: its default carve of `validation`, from the split's size alone.
    held_part, report_part = carve({"validation": rows}, held_out=None, report="validation")
    positions = {"held_out": held_part.positions, "report": report_part.positions}
    task, batch_size = options.pop("task"), options.pop("batch_size")
    examples = {"scored": 0}

    def fresh_score(folder: str, part: str) -> dict[str, float]:
        evaluator = Evaluator(task, "validation", batch_size=batch_size, **options)
        evaluator.restrict(positions[part])
        phases.passes += 1
        if part == "held_out":
            examples["scored"] += len(positions[part])
        return evaluator.evaluate(folder).metrics()

    def write_soup(members: list[str], target: Path) -> None:
        start = time.perf_counter()
        hfsoup.soup(members, target, method="uniform", overwrite=True)
        seconds = time.perf_counter() - start
        phases.seconds["soup write"] += seconds
        phases.calls.setdefault("write_soup", []).append(seconds)

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start, cpu = time.perf_counter(), time.process_time()
    alone = [fresh_score(f, "held_out") for f in folders]
    reported = [fresh_score(f, "report") for f in folders]
    primary = "accuracy"
    held = [a[primary] for a in alone]
    examples["scored"] = 0  # the trials only, as hfsoup's record counts them
    order = sorted(range(len(folders)), key=lambda i: -held[i])  # stable: ties keep the given order
    kept, current, soup_dir = [order[0]], held[order[0]], folders[order[0]]
    soup_scores = {"held_out": alone[order[0]], "report": reported[order[0]]}
    for step, i in enumerate(order[1:]):
        trial = out / f"trial-{step}"
        write_soup([folders[j] for j in [*kept, i]], trial)
        trial_held = fresh_score(str(trial), "held_out")
        if trial_held[primary] >= current:
            kept.append(i)
            current, soup_dir, soup_scores = trial_held[primary], str(trial), {"held_out": trial_held}
    if "report" not in soup_scores:  # the greedy soup on the reported half, as hfsoup's table has it
        soup_scores["report"] = fresh_score(soup_dir, "report")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    n_trials = len(folders) - 1
    outcome = {
        "kept": sorted(kept),
        "order": order,
        "examples_scored": examples["scored"],
        "examples_full": n_trials * len(positions["held_out"]),
        **soup_scores,
    }
    return outcome, seconds, cpu


# ---------------------------------------------------------------------------------------------------- the parent
def _busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle or waiting on I/O) since boot."""
    user, nice, system, idle, iowait, *rest = (int(x) for x in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + sum(rest)) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit: float) -> None:
    """Wait up to `limit` seconds for the other processes on the machine to go quiet (as soup_speed.py does)."""
    start = time.monotonic()
    while True:
        busy, t0 = _busy_cpu_seconds(), time.perf_counter()
        time.sleep(1)
        other = (_busy_cpu_seconds() - busy) / (time.perf_counter() - t0)
        waited = time.monotonic() - start
        if other < 0.25 or waited > limit:
            break
        if waited < 2:
            print(f"    waiting up to {limit:.0f} s for other processes to go quiet ({other:.1f} cores busy)")
    if waited > 2:
        state = "quiet" if other < 0.25 else f"still {other:.1f} cores busy; going ahead"
        print(f"    after {waited:.0f} s: {state}", flush=True)


def run_child(contender: str, family: str, layout: dict, args: argparse.Namespace, tag: str) -> dict:
    work = args.cache / "runs" / family
    work.mkdir(parents=True, exist_ok=True)
    result, log = work / f"{contender}-{tag}.json", work / f"{contender}-{tag}.log"
    command = [sys.executable, __file__, "--child", contender, "--family", family, "--layout", json.dumps(layout)]
    command += ["--work", str(work), "--result", str(result), "--threads", str(args.threads)]
    command += ["--batch-size", str(args.batch_size)]
    busy, own = _busy_cpu_seconds(), sum(os.times()[2:4])
    with open(log, "w") as out:
        start = time.perf_counter()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{contender} ({family}) failed with exit code {done.returncode}; see {log}")
    spent = sum(os.times()[2:4]) - own
    measured = json.loads(result.read_text())
    measured["wall"] = wall
    measured["cpu"] = spent
    measured["other"] = max((_busy_cpu_seconds() - busy - spent) / wall, 0.0)
    return measured


def bench_family(family: str, layout: dict, args: argparse.Namespace) -> dict[str, list[dict]]:
    print(f"{FAMILY_TITLES[family]}: warm-up (untimed: fills the datasets cache)", flush=True)
    for contender in CONTENDERS:
        run_child(contender, family, layout, args, "warmup")
    runs: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
    for run in range(args.runs):
        for contender in CONTENDERS:
            wait_idle(args.wait_idle)
            measured = run_child(contender, family, layout, args, str(run))
            runs[contender].append(measured)
            print(
                f"  {family} run {run + 1}/{args.runs} {contender:7} select {measured['select']:6.2f} s, process "
                f"{measured['wall']:6.2f} s (other processes: {measured['other']:.1f} cores)",
                flush=True,
            )
    return runs


def report(family: str, runs: dict[str, list[dict]], args: argparse.Namespace) -> bool:
    """Print the family's table; return whether both contenders kept the same ingredients in every run."""

    def med(contender: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[contender])

    def med_phase(contender: str, phase: str) -> float:
        return statistics.median(r["phases"][phase] for r in runs[contender])

    base, base_cpu = med("hfsoup", "select"), med("hfsoup", "select_cpu")
    print(
        f"\n{FAMILY_TITLES[family]}: {N_INGREDIENTS} ingredients, {args.rows} rows (half held out), batch size "
        f"{args.batch_size}, {args.threads} torch thread(s), median of {args.runs}"
    )
    header = ["contender", "select s", "x hfsoup", "CPU s", "x hfsoup", "soup() s", "imports s", "process s"]
    header += ["passes", "trial ex."]
    header += [*PHASES]
    print(" ".join(f"{h:>10}" for h in header))
    for contender in CONTENDERS:
        first = runs[contender][0]
        cells = [contender, f"{med(contender, 'select'):.2f}", f"{med(contender, 'select') / base:.2f}"]
        cells += [f"{med(contender, 'select_cpu'):.2f}", f"{med(contender, 'select_cpu') / base_cpu:.2f}"]
        cells += [f"{med(contender, 'soup'):.2f}", f"{med(contender, 'imports'):.2f}", f"{med(contender, 'wall'):.2f}"]
        cells += [str(first["passes"])]
        cells += [f"{first['examples_scored']}/{first['examples_full']}"]
        cells += [f"{med_phase(contender, p):.2f}" for p in PHASES]
        print(" ".join(f"{c:>10}" for c in cells))
    for contender in CONTENDERS:
        walls = ", ".join(f"{r['select']:.2f} s ({r['select_cpu']:.2f}, {r['other']:.1f})" for r in runs[contender])
        print(f"  {contender} runs, select wall (CPU s, cores busy elsewhere): {walls}")
    for contender in CONTENDERS:
        typical = sorted(runs[contender], key=lambda r: r["select"])[len(runs[contender]) // 2]  # the median run
        calls = typical["calls"]
        parts = []
        for name, label in CALLS.items():
            seconds = calls.get(name, [])
            if len(seconds) == 1:
                parts.append(f"{label} 1 x {seconds[0]:.2f}")
            elif seconds:
                later = statistics.median(seconds[1:])
                parts.append(f"{label} {len(seconds)} x (first {seconds[0]:.2f}, then {later:.3f})")
        print(f"  {contender} calls, s (median run): " + "; ".join(parts))
    ours, theirs = runs["hfsoup"][0], runs["fresh"][0]
    print(f"  greedy order (ingredient indices, best first): hfsoup {ours['order']}, fresh {theirs['order']}")
    print(f"  kept: hfsoup {ours['kept']}, fresh {theirs['kept']}")
    print(
        f"  greedy soup accuracy, held-out / reported: hfsoup {ours['held_out']['accuracy']:.4f} / "
        f"{ours['report']['accuracy']:.4f}, fresh {theirs['held_out']['accuracy']:.4f} / "
        f"{theirs['report']['accuracy']:.4f}"
    )
    same = all(r["kept"] == runs["hfsoup"][0]["kept"] for rs in runs.values() for r in rs)
    same = same and ours["order"] == theirs["order"]
    if same:
        print("  decisions match: both contenders tried the ingredients in the same order and kept the same ones")
    else:
        print("  " + "!" * 100)
        print("  DECISIONS DIFFER: hfsoup and the fresh-eval greedy search did not keep the same ingredients (a bug)")
        print("  " + "!" * 100)
    busiest = max(r["other"] for rs in runs.values() for r in rs)
    if busiest > 0.25:
        print(
            f"  WARNING: other processes kept up to {busiest:.1f} of {os.cpu_count()} cores busy during a run, so "
            "these wall times are not clean"
        )
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="all", choices=[*FAMILIES, "all"], help="default: both")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender; medians are reported")
    parser.add_argument("--rows", type=int, default=400, help="validation rows (sentences, images); half held out")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument(
        "--wait-idle", type=float, default=120, help="before each run, wait up to this many seconds for a quiet CPU"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(".hfsoup-bench-cache/select"), help="models, data, datasets cache, runs"
    )
    # The contenders' own processes.
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--layout", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.cache = args.cache.resolve()
    # Every process, the builder's included, reads and writes one datasets cache of its own here.
    os.environ["HF_HOME"] = ENV["HF_HOME"] = str(args.cache / "hf_home")
    os.environ["TQDM_DISABLE"] = "1"
    ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    layout = build(args.cache, args.rows)
    print(f"models and data ready in {time.perf_counter() - start:.0f} s", flush=True)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    results = {family: bench_family(family, layout, args) for family in families}
    matched = [report(family, runs, args) for family, runs in results.items()]
    print(f"\nbenchmark took {time.perf_counter() - start:.0f} s")
    if not all(matched):
        sys.exit(1)


if __name__ == "__main__":
    main()
