"""Time hfsoup's data-free merge methods against mergekit 0.1.5's implementation of the same method.

    python benchmarks/merge_speed.py --runs 1 --threads 1          # 4 x BERT-base + base, every method
    python benchmarks/merge_speed.py --methods ties,slerp --no-mergekit
    python benchmarks/merge_speed.py --size tiny --no-mergekit     # seconds: what the test runs

The first run builds a seeded BERT-base classifier (the base) and four "fine-tunes" of it (the base plus seeded noise
of 5% of each tensor's spread, as `soup_speed.py` builds them) into `--cache`, and mergekit==0.1.5 into its own
virtual environment there (`--cache`/mergekit-venv; never with `--no-mergekit`). Per method, each contender runs as
its own process, timed end to end (interpreter start and imports included), hfsoup and mergekit in turn, and the
figures are medians over `--runs`:
  wall       seconds, end to end
  anon peak  the largest anonymous memory (not the memory-mapped inputs) of the process and any workers it forked:
             its RssAnon (/proc/PID/status, every 5 ms) plus each worker's private pages (Private_Dirty of
             /proc/PID/smaps_rollup, every 200 ms), so a page shared copy-on-write counts once; polled from a lean
             wrapper process. For a process without workers (mergekit) it is its RssAnon
  dev ref    max over tensors of max|out - ref| / max|ref|, against an independent float64 numpy transcription of
             the method (hfsoup.testing.reference.merge_reference)
  dev mk     the same measure between hfsoup's and mergekit's outputs (relative to the reference's magnitude)
and the acceptance of issue 17 item 10: hfsoup wall <= 0.3 x mergekit's, anon peak <= 0.2 x one checkpoint. Where
the two definitions differ, the output says how (DEFINITION_NOTES).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soup_speed import NOISE, _bert_vocab, mergekit_bin  # noqa: E402

N_INGREDIENTS = 4
SEED = 0
BUILD_VERSION = 1
MB = 1e6
DENSITY = 0.2
DARE_SEED = 0
SLERP_T = 0.5
ALPHA = 0.5
SIZES = {  # BertConfig keyword arguments; "base" is BERT-base itself
    "base": {},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 512, "max_position_embeddings": 64},
}  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1"}

# hfsoup method -> mergekit merge_method of the same definition
MERGEKIT_METHOD = {
    "task-arithmetic": "task_arithmetic",
    "ties": "ties",
    "dare-linear": "dare_linear",
    "dare-ties": "dare_ties",
    "slerp": "slerp",
    "model-stock": "model_stock",
    "wise-ft": "linear",
}
DEFINITION_NOTES = {
    "dare-linear": "random masks: hfsoup draws its own seeded PCG64 masks, mergekit torch's (unseeded) bernoulli "
    "ones, so the two outputs differ by whole dropped or kept entries; dev ref checks hfsoup's draws",
    "dare-ties": "random masks as for dare-linear; mergekit runs with normalize: true, the disjoint mean of "
    "hfsoup's (and the paper's) definition",
    "model-stock": "mergekit divides each dot product by max(|a| |b|, 1e-6): for tensors whose task vectors are "
    "tiny (the classifier's bias, norms ~1e-3 here) its cosine is shrunk and its ratio t differs; hfsoup and the "
    "reference divide by |a| |b| itself",
    "slerp": "two ingredients (ft-0, ft-1), t = 0.5; mergekit's base_model is ft-0 (t = 0 is it, as in hfsoup)",
    "wise-ft": "mergekit's linear merge, weights 1 - alpha for the base and alpha / N for each fine-tune",
    "ties": "top-k ties at the threshold: hfsoup keeps every entry at the k-th magnitude, mergekit exactly k",
}

# Runs a command and polls its anonymous memory (its own and its forked workers'): forked from this lean process, not
# from the benchmark, which holds a float64 reference of a tensor and torch.
MEASURE_WRAPPER = """\
import glob, json, os, sys, time
out, *argv = sys.argv[1:]
pid = os.fork()
if pid == 0:
    os.execvp(argv[0], argv)

def children(root):
    pids, todo = [], [root]
    while todo:
        for f in glob.glob(f"/proc/{todo.pop()}/task/*/children"):
            try:
                found = [int(c) for c in open(f).read().split()]
            except (OSError, ValueError):
                continue
            pids += found
            todo += found
    return pids

def field(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0

# The process's own RssAnon counts the pages its forked workers share with it copy-on-write; each worker adds its
# private pages (Private_Dirty of smaps_rollup: copied or new), so every page is counted once. smaps_rollup walks
# the page tables (tens of ms with gigabytes mapped), so workers are read every 200 ms, the process every 5 ms.
peak, private, read_at = 0, {}, 0.0
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    now = time.monotonic()
    if now - read_at >= 0.2:
        workers = children(pid)
        private = {w: field(f"/proc/{w}/smaps_rollup", "Private_Dirty:") for w in workers}
        read_at = now
    peak = max(peak, field(f"/proc/{pid}/status", "RssAnon:") + sum(private.values()))
    time.sleep(0.005)
json.dump({"rc": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime, "anon": peak,
           "rss": usage.ru_maxrss * 1024}, open(out, "w"))
"""


# ---------------------------------------------------------------------------------------------------- checkpoints
def build_checkpoints(cache: Path, size: str) -> tuple[Path, list[Path]]:
    """The base and the fine-tunes, float32 single-file; reused while `built.json` matches."""
    root = cache / f"checkpoints-{size}"
    base, fts = root / "base", [root / f"ft-{i}" for i in range(N_INGREDIENTS)]
    stamp = {"version": BUILD_VERSION, "seed": SEED, "noise": NOISE, "config": SIZES[size]}
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return base, fts
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    shutil.rmtree(root, ignore_errors=True)
    print(f"building a {size} BERT base and {N_INGREDIENTS} fine-tunes in {root} ...", flush=True)
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(BertConfig(num_labels=2, **SIZES[size])).eval()
    tokenizer = BertTokenizer(vocab=_bert_vocab(model.config.vocab_size), model_max_length=512)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    for i, folder in enumerate(fts):
        ft = BertForSequenceClassification(model.config).eval()
        generator = torch.Generator().manual_seed(SEED * 1000 + i + 1)
        with torch.no_grad():
            for (_, param), (_, base_param) in zip(ft.named_parameters(), model.named_parameters(), strict=True):
                spread = (base_param.std().item() if base_param.numel() > 1 else 0.0) or 0.02
                param.copy_(base_param + torch.randn(param.shape, generator=generator) * (NOISE * spread))
        ft.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    marker.write_text(json.dumps(stamp))
    return base, fts


# ---------------------------------------------------------------------------------------------------- the jobs
@dataclass
class Job:
    method: str
    ingredients: list[Path]
    base: Path | None  # hfsoup's --base
    options: dict  # for the reference
    hfsoup_flags: list[str]
    mergekit_config: dict


def jobs(base: Path, fts: list[Path]) -> dict[str, Job]:
    def mk(method: str, params: dict, top: dict | None = None, base_model: Path | None = base, models=None) -> dict:
        models = fts if models is None else models
        config = {"merge_method": method, "dtype": "float32", "models": []}
        config["models"] = [{"model": str(p), "parameters": dict(params)} if params else {"model": str(p)}
                            for p in models]  # fmt: skip
        if base_model is not None:
            config["base_model"] = str(base_model)
        if top:
            config["parameters"] = top
        return config

    tv = {"weight": 1.0}
    sparse = {"weight": 1.0, "density": DENSITY}
    wise = [{"model": str(base), "parameters": {"weight": 1.0 - ALPHA}}]
    wise += [{"model": str(p), "parameters": {"weight": ALPHA / len(fts)}} for p in fts]
    dens, seed = ["--density", str(DENSITY)], ["--dare-seed", str(DARE_SEED)]
    return {
        "task-arithmetic": Job("task-arithmetic", fts, base, {}, [], mk("task_arithmetic", tv, {"normalize": False})),
        "ties": Job("ties", fts, base, {"density": DENSITY}, dens, mk("ties", sparse, {"normalize": True})),
        "dare-linear": Job(
            "dare-linear", fts, base, {"density": DENSITY, "seed": DARE_SEED}, dens + seed,
            mk("dare_linear", sparse, {"normalize": False}),
        ),
        "dare-ties": Job(
            "dare-ties", fts, base, {"density": DENSITY, "seed": DARE_SEED}, dens + seed,
            mk("dare_ties", sparse, {"normalize": True}),
        ),
        "slerp": Job(
            "slerp", fts[:2], None, {"t": SLERP_T}, ["--t", str(SLERP_T)],
            mk("slerp", {}, {"t": SLERP_T}, base_model=fts[0], models=fts[:2]),
        ),
        "model-stock": Job("model-stock", fts, base, {}, [], mk("model_stock", {})),
        "wise-ft": Job(
            "wise-ft", fts, base, {"alpha": ALPHA}, ["--alpha", str(ALPHA)],
            {"merge_method": "linear", "dtype": "float32", "models": wise, "parameters": {"normalize": True}},
        ),
    }  # fmt: skip


def hfsoup_command(job: Job, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "hfsoup.cli", "-q", "soup", *map(str, job.ingredients), "--method", job.method]
    if job.base is not None:
        cmd += ["--base", str(job.base)]
    return [*cmd, *job.hfsoup_flags, "-o", str(out)]


def mergekit_command(job: Job, out: Path, work: Path, exe: Path) -> list[str]:
    config = work / f"{job.method}.yml"
    config.write_text(json.dumps(job.mergekit_config, indent=2))  # JSON is YAML
    return [str(exe), str(config), str(out)]


# ---------------------------------------------------------------------------------------------------- measuring
@dataclass
class Measure:
    wall: float
    cpu: float
    anon: int


def run_measured(argv: list[str], log: Path) -> Measure:
    result = log.with_suffix(".json")
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-S", "-c", MEASURE_WRAPPER, str(result), *argv], stdout=out, stderr=subprocess.STDOUT,
            env=ENV,
        )  # fmt: skip
        wall = time.perf_counter() - start
    measured = json.loads(result.read_text()) if result.is_file() else {"rc": proc.returncode}
    if proc.returncode != 0 or measured["rc"] != 0:
        raise SystemExit(f"{argv[0]} failed with exit code {measured['rc']}; see {log}")
    return Measure(wall, measured["cpu"], measured["anon"])


def read_folder(folder: Path) -> dict:
    """name -> memory-mapped numpy array, over every safetensors file of `folder`."""
    from safetensors import safe_open

    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "np") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                out[name] = f.get_tensor(name)
    return out


def deviations(job: Job, hf_out: Path, mk_out: Path | None) -> tuple[float, str, float | None, str]:
    """(dev ref, its worst tensor, dev mk, its worst tensor), one tensor of the reference at a time."""
    from hfsoup.testing.reference import merge_reference

    base = read_folder(job.base) if job.base is not None else None
    thetas = [read_folder(p) for p in job.ingredients]
    got = read_folder(hf_out)
    theirs = read_folder(mk_out) if mk_out is not None else None
    worst_ref, worst_ref_name, worst_mk, worst_mk_name = 0.0, "", None if theirs is None else 0.0, ""
    for name, first in thetas[0].items():
        if first.dtype.kind != "f":
            continue
        ref = merge_reference(
            job.method, None if base is None else base[name], [t[name] for t in thetas], name, **job.options
        )
        scale = float(np.abs(ref).max()) or 1.0
        dev = float(np.abs(got[name].astype(np.float64) - ref).max()) / scale
        if dev > worst_ref:
            worst_ref, worst_ref_name = dev, name
        if theirs is not None:
            if name not in theirs:
                raise SystemExit(f"mergekit's output for {job.method} lacks {name}")
            dev = float(np.abs(got[name].astype(np.float64) - theirs[name].astype(np.float64)).max()) / scale
            if dev > worst_mk:  # type: ignore[operator]
                worst_mk, worst_mk_name = dev, name
    return worst_ref, worst_ref_name, worst_mk, worst_mk_name


@dataclass
class Result:
    runs: dict[str, list[Measure]] = field(default_factory=lambda: {"hfsoup": [], "mergekit": []})
    dev: tuple = (None, "", None, "")


def bench(job: Job, args: argparse.Namespace, exe: Path | None) -> Result:
    work = args.cache / "runs" / job.method
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result = Result()
    contenders = {"hfsoup": lambda out: hfsoup_command(job, out)}
    if exe is not None:
        contenders["mergekit"] = lambda out: mergekit_command(job, out, work, exe)
    for run in range(args.runs):
        for name, command in contenders.items():
            out = work / name
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
            measure = run_measured(command(out), work / f"{name}-{run}.log")
            result.runs[name].append(measure)
            print(f"  {job.method:15} run {run + 1}/{args.runs} {name:8} {measure.wall:7.2f} s", flush=True)
        if run == 0:
            result.dev = deviations(job, work / "hfsoup", work / "mergekit" if exe is not None else None)
    shutil.rmtree(work / "hfsoup", ignore_errors=True)
    shutil.rmtree(work / "mergekit", ignore_errors=True)
    return result


def report(results: dict[str, Result], checkpoint: int, args: argparse.Namespace) -> bool:
    threads = f"{args.threads} thread(s)" if args.threads else "default threads"
    print(
        f"\n{N_INGREDIENTS} x BERT-{args.size} + base, {checkpoint / MB:.0f} MB each (float32), {threads}, "
        f"median of {args.runs}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    header = ["method", "hfsoup s", "mergekit s", "x mk", "anon MB", "mk anon MB", "x ckpt", "dev ref", "dev mk"]
    widths = [15, 9, 10, 6, 8, 10, 7, 9, 9]
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    ok = True
    for method, result in results.items():
        med = {c: (statistics.median(m.wall for m in r), statistics.median(m.anon for m in r))
               for c, r in result.runs.items() if r}  # fmt: skip
        hf_wall, hf_anon = med["hfsoup"]
        mk_wall, mk_anon = med.get("mergekit", (math.nan, math.nan))
        dev_ref, _, dev_mk, _ = result.dev
        ratio, mem = hf_wall / mk_wall, hf_anon / checkpoint
        cells = [method, f"{hf_wall:.2f}", f"{mk_wall:.2f}", f"{ratio:.2f}", f"{hf_anon / MB:.0f}"]
        cells += [f"{mk_anon / MB:.0f}", f"{mem:.2f}", f"{dev_ref:.1e}", "-" if dev_mk is None else f"{dev_mk:.1e}"]
        print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
        ok &= mem <= 0.2 and (math.isnan(ratio) or ratio <= 0.3)
    print("worst tensors: " + "; ".join(f"{m}: ref {r.dev[1]}" + (f", mk {r.dev[3]}" if r.dev[2] is not None else "")
                                       for m, r in results.items()))  # fmt: skip
    print("where the definitions differ:")
    for method in results:
        if method in DEFINITION_NOTES:
            print(f"  {method}: {DEFINITION_NOTES[method]}")
    target = "wall <= 0.3 x mergekit, " if next(iter(results.values())).runs["mergekit"] else ""
    print(f"acceptance ({target}anon <= 0.2 x one checkpoint): {'yes' if ok else 'NO'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender and method; medians reported")
    parser.add_argument("--threads", type=int, help="OMP/MKL threads for every contender")
    parser.add_argument("--cache", type=Path, default=Path(".hfsoup-bench-cache"), help="checkpoints, venv, runs")
    parser.add_argument("--methods", default=",".join(MERGEKIT_METHOD), help="comma-separated (default: all)")
    parser.add_argument("--no-mergekit", action="store_true", help="time hfsoup alone; installs nothing")
    parser.add_argument("--size", choices=SIZES, default="base", help="BERT-base, or a tiny BERT (the test's)")
    args = parser.parse_args(argv)
    args.cache = args.cache.resolve()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(MERGEKIT_METHOD))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(MERGEKIT_METHOD)}")
    if args.threads:
        ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    ENV["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's hfsoup
    start = time.perf_counter()
    base, fts = build_checkpoints(args.cache, args.size)
    exe = None if args.no_mergekit else mergekit_bin(args.cache)
    checkpoint = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    all_jobs = jobs(base, fts)
    results = {m: bench(all_jobs[m], args, exe) for m in methods}
    ok = report(results, checkpoint, args)
    print(f"benchmark took {time.perf_counter() - start:.0f} s")
    return 0 if ok or args.size == "tiny" else 1


if __name__ == "__main__":
    sys.exit(main())
