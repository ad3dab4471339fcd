"""Time hfsoup against a naive transformers soup and mergekit's linear merge on four BERT-base checkpoints.

    python benchmarks/soup_speed.py                       # fp32, warm page cache, 3 runs (6-8 min on 2 cores)
    python benchmarks/soup_speed.py --variant all --cold  # every variant, page cache dropped before each run
    python benchmarks/soup_speed.py --profile             # + where hfsoup's time goes (imports, cProfile)

The first run builds four BERT-base-sized "fine-tunes" (one seeded base plus seeded noise, so they pass hfsoup's
shared-initialization check) in three variants, fp32 single-file, fp32 sharded and bf16, into `--cache`, and
mergekit into its own virtual environment there (`--cache`/mergekit-venv: mergekit is not an hfsoup dependency).

Each contender runs as its own process, timed end to end (interpreter start and imports included), in turn, round
after round, so that drift on the machine hits all of them alike. Reported per contender, medians over the runs:
  wall       seconds, end to end
  peak RSS   ru_maxrss of that one process (wait4 in a lean wrapper); it counts pages of the memory-mapped inputs,
             which the kernel can drop at any time, so it overstates what a soup needs
  anon peak  the largest anonymous (heap) memory, RSS less file-backed pages, from /proc/PID/statm every 5 ms:
             torch's tensors included, a peak shorter than 5 ms may be missed
  py heap    tracemalloc's peak, from one extra untimed run under tracemalloc: Python objects only, it does not see
             tensors allocated by torch's C++ allocator
  max dev    the largest per-tensor max|out - ref| / max|ref| against a float64 mean of the inputs
and the I/O floor measured in the same invocation: reading the four inputs and writing one output-sized file.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

N_INGREDIENTS = 4
SEED = 0
NOISE = 0.05  # a "fine-tune" moves each tensor by 5% of its spread: body cosine to the base stays above 0.99
BUILD_VERSION = 1  # bump when the checkpoints below change, so cached ones are rebuilt
VARIANTS = {  # name -> (torch dtype name, max_shard_size for save_pretrained)
    "fp32": ("float32", "50GB"),
    "fp32-sharded": ("float32", "200MB"),
    "bf16": ("bfloat16", "50GB"),
}
CONTENDERS = ("hfsoup", "naive", "mergekit")
# Not a contender: what any torch process costs before it does anything (start-up time, anonymous memory).
BASELINE = "import torch"
MERGEKIT_SPEC = "mergekit==0.1.5"  # the release measured; its requirements accept torch 2.13 and transformers 5
# Every contender reads local folders only; offline mode keeps a library from trying the Hub on the way.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1"}
MB = 1e6

# The naive approach as a user would write it: whole models in memory, a float32 running sum, save_pretrained.
NAIVE_SCRIPT = """\
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

*inputs, output = sys.argv[1:]
total = None
for path in inputs:
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype="auto")
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    if total is None:
        total = {k: v.to(torch.float32, copy=True) for k, v in state.items()}
    else:
        for k, v in state.items():
            total[k] += v
model.load_state_dict({k: v / len(inputs) for k, v in total.items()}, strict=False)  # cast to the model's dtype
model.save_pretrained(output)
AutoTokenizer.from_pretrained(inputs[0]).save_pretrained(output)
"""

# Measures one command. Forked from this small process, not from the benchmark: a child's ru_maxrss starts from the
# RSS of the process it was forked from (Linux carries the high-water mark across fork and exec), and the benchmark
# holds a float64 reference of a whole model. The anonymous-memory peak (RSS less file-backed pages, so not the
# memory-mapped inputs) is polled every 5 ms.
MEASURE_WRAPPER = """\
import json, os, sys, time
out, *argv = sys.argv[1:]
page = os.sysconf("SC_PAGE_SIZE")
pid = os.fork()
if pid == 0:
    os.execvp(argv[0], argv)
peak_anon = 0
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    try:
        with open(f"/proc/{pid}/statm") as f:
            _, resident, shared = (int(x) for x in f.read().split()[:3])
        peak_anon = max(peak_anon, (resident - shared) * page)
    except (OSError, ValueError):
        pass
    time.sleep(0.005)
cpu = usage.ru_utime + usage.ru_stime
result = {"rc": os.waitstatus_to_exitcode(status), "cpu": cpu, "rss": usage.ru_maxrss * 1024, "anon": peak_anon}
with open(out, "w") as f:
    json.dump(result, f)
"""

# Runs a console script or a script under tracemalloc, from before its first import, and writes the peak to argv[1].
HEAP_WRAPPER = """\
import importlib.metadata, json, runpy, sys, tracemalloc
tracemalloc.start()
out, kind, target, *args = sys.argv[1:]
sys.argv = [target, *args]
try:
    if kind == "script":
        runpy.run_path(target, run_name="__main__")
    else:
        (entry,) = importlib.metadata.entry_points(group="console_scripts", name=target)
        rc = entry.load()()
        if rc:
            raise SystemExit(rc)
except SystemExit as e:
    if e.code not in (0, None):
        raise
json.dump({"py_heap": tracemalloc.get_traced_memory()[1]}, open(out, "w"))
"""


# ---------------------------------------------------------------------------------------------------- checkpoints
def build_checkpoints(cache: Path) -> dict[str, list[Path]]:
    """Four fine-tunes of one seeded BERT-base classifier in every variant; reused while `built.json` matches."""
    root = cache / "checkpoints"
    folders = {v: [root / v / f"ft-{i}" for i in range(N_INGREDIENTS)] for v in VARIANTS}
    stamp = {"version": BUILD_VERSION, "seed": SEED, "noise": NOISE, "variants": VARIANTS}
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
        return folders
    import torch
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    shutil.rmtree(root, ignore_errors=True)
    print(f"building {N_INGREDIENTS} BERT-base fine-tunes x {len(VARIANTS)} variants in {root} ...", flush=True)
    base, tokenizer = bert_base(SEED)
    for i in range(N_INGREDIENTS):
        model = BertForSequenceClassification(base.config).eval()
        generator = torch.Generator().manual_seed(SEED * 1000 + i + 1)
        with torch.no_grad():
            for (_, param), (_, base_param) in zip(model.named_parameters(), base.named_parameters(), strict=True):
                spread = base_param.std().item() if base_param.numel() > 1 else 0.0
                spread = spread or 0.02  # LayerNorm ones and zero biases move too, as in real fine-tuning
                param.copy_(base_param + torch.randn(param.shape, generator=generator) * (NOISE * spread))
        # Module.to converts in place: the float32 variants are saved before the model is rounded to bfloat16.
        for variant, (dtype, shard) in sorted(VARIANTS.items(), key=lambda kv: kv[1][0] != "float32"):
            model.to(getattr(torch, dtype)).save_pretrained(folders[variant][i], max_shard_size=shard)
            tokenizer.save_pretrained(folders[variant][i])
    marker.write_text(json.dumps(stamp))
    return folders


def bert_base(seed: int) -> tuple:
    """A seeded, randomly initialized BERT-base classifier (2 labels) and a full-size tokenizer for it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # BertConfig() is bert-base
    return model, BertTokenizer(vocab=_bert_vocab(model.config.vocab_size), model_max_length=512)


def _bert_vocab(size: int) -> dict[str, int]:
    # A full-size WordPiece vocabulary, so every contender copies a real-sized tokenizer; its tokens do not matter.
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    return {t: i for i, t in enumerate(tokens)}


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def mergekit_bin(cache: Path) -> Path:
    """mergekit in its own venv: torch==2.13.0 first (from local disk), so the resolver keeps it."""
    venv = cache / "mergekit-venv"
    exe = venv / "bin" / "mergekit-yaml"
    if not exe.is_file():
        print(f"installing {MERGEKIT_SPEC} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, MERGEKIT_SPEC], check=True)
    return exe


# ---------------------------------------------------------------------------------------------------- contenders
def commands(inputs: list[Path], out: Path, dtype: str, work: Path, cache: Path) -> dict[str, tuple[list[str], list]]:
    """Per contender: the timed command, and (python, kind, target, args) for the tracemalloc run."""
    naive = work / "naive_soup.py"
    naive.write_text(NAIVE_SCRIPT)
    config = work / "mergekit.yml"
    # JSON is YAML: mergekit's linear merge with equal weights is the uniform soup (normalize defaults to true).
    models = [{"model": str(p), "parameters": {"weight": 1.0}} for p in inputs]
    config.write_text(json.dumps({"merge_method": "linear", "dtype": dtype, "models": models}, indent=2))
    mergekit = mergekit_bin(cache)
    ins = [str(p) for p in inputs]
    hfsoup_args = ["soup", *ins, "-o", str(out)]
    mergekit_args = [str(config), str(out), "--copy-tokenizer"]
    return {
        "hfsoup": (
            [str(Path(sys.executable).parent / "hfsoup"), *hfsoup_args],
            [sys.executable, "entry", "hfsoup"] + hfsoup_args,
        ),
        "naive": (
            [sys.executable, str(naive), *ins, str(out)],
            [sys.executable, "script", str(naive), *ins, str(out)],
        ),
        "mergekit": (
            [str(mergekit), *mergekit_args],
            [str(mergekit.parent / "python"), "entry", "mergekit-yaml", *mergekit_args],
        ),
        BASELINE: ([sys.executable, "-c", "import torch, safetensors.torch"], []),
    }


@dataclass
class Measure:
    wall: float
    cpu: float  # user + system seconds: less sensitive than wall time to other work on the machine
    rss: int  # bytes
    anon: int  # bytes, sampled
    other: float  # CPU cores other processes kept busy meanwhile: torch's threads slow down badly when they share


def run_measured(argv: list[str], log: Path) -> Measure:
    """Run `argv` to completion under MEASURE_WRAPPER, a lean process that forks it, polls it and reaps it."""
    result = log.with_suffix(".json")
    busy, own = _busy_cpu_seconds(), sum(os.times()[:2])
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", MEASURE_WRAPPER, str(result), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # the wrapper's usage, its reaped child's included
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen so it does not wait again
    measured = json.loads(result.read_text()) if result.is_file() else {"rc": proc.returncode}
    if proc.returncode != 0 or measured["rc"] != 0:
        raise SystemExit(f"{argv[0]} failed with exit code {measured['rc']}; see {log}")
    spent = usage.ru_utime + usage.ru_stime + sum(os.times()[:2]) - own
    other = (_busy_cpu_seconds() - busy - spent) / wall
    return Measure(wall, measured["cpu"], measured["rss"], measured["anon"], max(other, 0.0))


def py_heap(spec: list, work: Path, log: Path) -> int:
    python, *rest = spec
    result = work / "heap.json"
    with open(log, "w") as out:
        subprocess.run(
            [python, "-c", HEAP_WRAPPER, str(result), *rest], stdout=out, stderr=subprocess.STDOUT, env=ENV, check=True
        )
    return json.loads(result.read_text())["py_heap"]


def prepare(files: list[Path], args: argparse.Namespace) -> None:
    """Give every run the same start: a quiet CPU, earlier output written back, inputs dropped (--cold) or cached."""
    start = time.monotonic()
    while True:
        busy, t0 = _busy_cpu_seconds(), time.perf_counter()
        time.sleep(1)
        other = (_busy_cpu_seconds() - busy) / (time.perf_counter() - t0)
        waited = time.monotonic() - start
        if other < 0.25 or waited > args.wait_idle:
            break
        if waited < 2:
            print(f"    waiting up to {args.wait_idle:.0f} s for other processes to go quiet ({other:.1f} cores busy)")
    if waited > 2:
        state = "quiet" if other < 0.25 else f"still {other:.1f} cores busy; going ahead"
        print(f"    after {waited:.0f} s: {state}", flush=True)
    if args.cold:
        drop_page_cache()
    else:
        os.sync()
        read_files(files)


def _busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle or waiting on I/O) since boot."""
    user, nice, system, idle, iowait, *rest = (int(x) for x in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + sum(rest)) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------- page cache
def drop_page_cache() -> bool:
    """Write back dirty pages, then drop clean ones (needs root); False where the kernel does not let us."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_files(files: list[Path]) -> tuple[int, float]:
    buf = bytearray(16 << 20)
    total, start = 0, time.perf_counter()
    for file in files:
        with open(file, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total, time.perf_counter() - start


def io_floor(files: list[Path], out_bytes: int, work: Path, *, can_drop: bool) -> dict[str, float]:
    """Read and write bandwidth on this disk now: cold and warm reads of the inputs, an output-sized write."""
    floor: dict[str, float] = {}
    if can_drop:
        drop_page_cache()
        n, seconds = read_files(files)
        floor["read_cold"] = n / seconds
    read_files(files)  # the first warm read may still fault pages in
    n, seconds = read_files(files)
    floor["read_warm"] = n / seconds
    block = os.urandom(16 << 20)
    path = work / "floor.bin"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(0, out_bytes, len(block)):
            f.write(block)
        cached = time.perf_counter() - start
        os.fsync(f.fileno())
    floor["write_cached"] = out_bytes / cached
    floor["write_fsync"] = out_bytes / (time.perf_counter() - start)
    path.unlink()
    return floor


# ---------------------------------------------------------------------------------------------------- deviation
def float64_reference(folders: list[Path]) -> dict:
    """The float64 mean of every float tensor, read with safetensors directly (independent of hfsoup's reader)."""
    from safetensors import safe_open

    total: dict = {}
    for folder in folders:
        for file in weight_files(folder):
            with safe_open(file, "pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    t = f.get_tensor(name)
                    if t.is_floating_point():
                        total[name] = total[name] + t.double() if name in total else t.double()
    return {name: t / len(folders) for name, t in total.items()}


def max_deviation(folder: Path, reference: dict) -> tuple[float, list[str]]:
    """The worst per-tensor relative deviation, and the reference tensors the output lacks."""
    from safetensors import safe_open

    worst, seen = 0.0, set()
    for file in weight_files(folder):
        with safe_open(file, "pt") as f:
            for name in f.keys():  # noqa: SIM118
                if name in reference:
                    ref = reference[name]
                    got = f.get_tensor(name).double()
                    worst = max(worst, float((got - ref).abs().max()) / (float(ref.abs().max()) or 1.0))
                    seen.add(name)
    return worst, sorted(set(reference) - seen)


# ---------------------------------------------------------------------------------------------------- one variant
@dataclass
class Result:
    runs: dict[str, list[Measure]] = field(default_factory=lambda: {c: [] for c in (*CONTENDERS, BASELINE)})
    heap: dict[str, int] = field(default_factory=dict)
    deviation: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)
    checkpoint_bytes: int = 0


def bench_variant(variant: str, inputs: list[Path], args: argparse.Namespace) -> Result:
    work = args.cache / "runs" / variant
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "out"
    files = [f for folder in inputs for f in weight_files(folder)]
    result = Result(checkpoint_bytes=sum(f.stat().st_size for f in weight_files(inputs[0])))
    can_drop = drop_page_cache()
    if args.cold and not can_drop:
        raise SystemExit("--cold needs to write /proc/sys/vm/drop_caches (root); run without --cold")
    result.floor = io_floor(files, result.checkpoint_bytes, work, can_drop=can_drop)
    cmds = commands(inputs, out, VARIANTS[variant][0], work, args.cache)
    reference = float64_reference(inputs)
    for run in range(args.runs):
        for name in (*CONTENDERS, BASELINE):
            shutil.rmtree(out, ignore_errors=True)
            prepare(files, args)
            measure = run_measured(cmds[name][0], work / f"{name}-{run}.log")
            result.runs[name].append(measure)
            print(
                f"  {variant} run {run + 1}/{args.runs} {name:12} {measure.wall:6.2f} s"
                f" (other processes: {measure.other:.1f} cores)",
                flush=True,
            )
            if run == 0 and name in CONTENDERS:
                result.deviation[name] = max_deviation(out, reference)
    if not args.no_heap:
        for name in CONTENDERS:
            shutil.rmtree(out, ignore_errors=True)
            result.heap[name] = py_heap(cmds[name][1], work, work / f"{name}-heap.log")
    shutil.rmtree(out, ignore_errors=True)
    return result


def report(variant: str, result: Result, args: argparse.Namespace) -> None:
    size = result.checkpoint_bytes
    keys = ("wall", "cpu", "rss", "anon")
    med = {c: {k: statistics.median(getattr(m, k) for m in runs) for k in keys} for c, runs in result.runs.items()}
    base = med["hfsoup"]
    floor = result.floor
    state = "cold" if args.cold else "warm"
    read_bw = floor["read_cold" if args.cold else "read_warm"]
    # None of the contenders fsyncs its output (hfsoup does; see the profile), so the floor writes to the page cache.
    floor_s = N_INGREDIENTS * size / read_bw + size / floor["write_cached"]
    threads = f"{args.threads} torch thread(s)" if args.threads else "default torch threads"
    print(
        f"\n{variant}: {N_INGREDIENTS} x BERT-base, {size / MB:.0f} MB each, {state} page cache, {threads}, "
        f"median of {args.runs}"
    )
    header = ["contender", "wall s", "x hfsoup", "x floor", "cpu s", "peak RSS MB", "x hfsoup", "anon MB", "x hfsoup"]
    print(" ".join(f"{h:>11}" for h in [*header, "py heap MB", "max dev"]))
    for name in (*CONTENDERS, BASELINE):
        m = med[name]
        vs_floor = f"{m['wall'] / floor_s:.1f}" if name in CONTENDERS else "-"
        cells = [name, f"{m['wall']:.2f}", f"{m['wall'] / base['wall']:.2f}", vs_floor]
        cells += [f"{m['cpu']:.1f}", f"{m['rss'] / MB:.0f}", f"{m['rss'] / base['rss']:.2f}"]
        cells += [f"{m['anon'] / MB:.0f}", f"{m['anon'] / base['anon']:.2f}"]
        cells += [f"{result.heap[name] / MB:.1f}" if name in result.heap else "-"]
        dev, missing = result.deviation.get(name, (None, []))
        cells += [
            "-" if dev is None else f"{dev:.1e}" + (f" (missing {len(missing)}: {missing[0]}...)" if missing else "")
        ]
        print(" ".join(f"{c:>11}" for c in cells))
    for name, runs in result.runs.items():
        walls = ", ".join(f"{m.wall:.2f} s ({m.cpu:.1f}, {m.other:.1f})" for m in runs)
        print(f"  {name} runs, wall (CPU s, cores busy elsewhere): {walls}")
    cold = f"read cold {floor['read_cold'] / MB:.0f} MB/s, " if "read_cold" in floor else "(no cold read: not root) "
    print(
        f"I/O floor: {cold}read warm {floor['read_warm'] / MB:.0f} MB/s, write {floor['write_cached'] / MB:.0f} MB/s "
        f"to the page cache, {floor['write_fsync'] / MB:.0f} MB/s with fsync; reading the {N_INGREDIENTS} inputs "
        f"({state}) and writing one output takes {floor_s:.2f} s"
    )
    checks = [
        ("hfsoup wall <= 0.4 x mergekit", base["wall"] <= 0.4 * med["mergekit"]["wall"]),
        ("<= 0.4 x naive", base["wall"] <= 0.4 * med["naive"]["wall"]),
        ("anon peak <= 0.5 x checkpoint", base["anon"] <= 0.5 * size),
    ]
    if "hfsoup" in result.heap:
        checks.append(("py heap <= 0.5 x checkpoint", result.heap["hfsoup"] <= 0.5 * size))
    if VARIANTS[variant][0] == "float32":  # a bf16 output is within bf16 rounding (~4e-3) of the mean, no closer
        checks.append(("max dev <= 1e-6", result.deviation["hfsoup"][0] <= 1e-6))
    print("acceptance: " + "; ".join(f"{what}: {'yes' if ok else 'NO'}" for what, ok in checks))
    busiest = max(m.other for runs in result.runs.values() for m in runs)
    if busiest > 0.25:
        print(
            f"WARNING: other processes kept up to {busiest:.1f} of {os.cpu_count()} cores busy during a run; torch's "
            "threads slow down several-fold when they share cores, so these wall times are not clean"
        )


# ---------------------------------------------------------------------------------------------------- hfsoup profile
# Runs `hfsoup soup` in-process, stamping when the first tensor is read and the first output byte written. The stamps
# go in from inside the timed region: importing hfsoup.io.checkpoint (and torch with it) is part of what we time. The
# writer's name is looked up, not assumed: the engine changes, the benchmark should not break with it.
PROFILE_WRAPPER = """\
import cProfile, json, sys, time
out, profile, *args = sys.argv[1:]
marks = {"start": time.time()}
profiler = cProfile.Profile() if profile == "1" else None
if profiler:
    profiler.enable()
from hfsoup.io import checkpoint

def stamp(candidates, mark):
    for cls_name, method in candidates:
        cls = getattr(checkpoint, cls_name, None)
        if cls is not None and hasattr(cls, method):
            original = getattr(cls, method)
            def wrapper(*a, **k):
                marks.setdefault(mark, time.time())
                return original(*a, **k)
            setattr(cls, method, wrapper)
            return

# The first candidate the engine has is the one stamped (the current engine's, then older ones').
stamp([("CheckpointReader", "get_array"), ("CheckpointReader", "get")], "first_read")
stamp([("SafetensorsStreamWriter", "write"), ("SafetensorsStreamWriter", "add")], "first_write")
from hfsoup.cli import main
rc = main(args)
marks["end"] = time.time()
if profiler:
    profiler.disable()
    profiler.dump_stats(out + ".prof")
json.dump(marks, open(out, "w"))
sys.exit(rc)
"""
# (file suffix, function) -> what it stands for, in call order; cumulative seconds, so nested rows overlap, and imports
# count wherever they are triggered. Rows the current engine lacks are listed apart.
PROFILE_ROWS = [
    (("<frozen importlib._bootstrap>", "_find_and_load"), "imports (all, wherever triggered)"),
    (("hfsoup/cli/__init__.py", "main"), "cli.main"),
    (("hfsoup/pipeline.py", "soup"), "  pipeline.soup"),
    (("hfsoup/hub/download.py", "resolve"), "    hub.resolve"),
    (("hfsoup/pipeline.py", "_gather_facts"), "    _gather_facts (configs, headers)"),
    (("hfsoup/compat/static.py", "check_before_download"), "    check_before_download"),
    (("hfsoup/io/checkpoint.py", "__init__"), "    CheckpointReader/writer __init__"),
    (("hfsoup/soups/engine.py", "plan_soup"), "    plan_soup"),
    (("hfsoup/soups/engine.py", "write_shards"), "    write_shards"),
    (("hfsoup/soups/engine.py", "stream_soup"), "    stream_soup"),
    (("hfsoup/io/checkpoint.py", "get"), "      reading: CheckpointReader.get"),
    (("hfsoup/io/checkpoint.py", "get_array"), "      reading: CheckpointReader.get_array (maps)"),
    (("hfsoup/compat/similarity.py", "update"), "      SimilarityMeter.update"),
    (("hfsoup/compat/similarity.py", "block"), "      SimilarityMeter.block (Gram, NaN screen)"),
    (("hfsoup/soups/engine.py", "_mix"), "      _mix (arithmetic + cast)"),
    (("hfsoup/soups/engine.py", "_mix_blocks"), "      _mix_blocks (widen, meter, sum, narrow)"),
    (("hfsoup/soups/engine.py", "_accumulate"), "        _accumulate"),
    (("hfsoup/soups/kernels.py", "weighted_sum"), "        kernels.weighted_sum"),
    (("hfsoup/io/checkpoint.py", "add"), "      writer.add (copy, write, sha256)"),
    (("hfsoup/io/checkpoint.py", "write"), "      writer.write (queue to the writer thread)"),
    (("hfsoup/io/checkpoint.py", "close"), "      writer.close (fsync, rename)"),
    (("hfsoup/io/checkpoint.py", "_flush"), "      ShardedWriter._flush (save_file)"),
    (("hfsoup/soups/engine.py", "collect_meter"), "    collect_meter"),
    (("hfsoup/pipeline.py", "_copy_support_files"), "    _copy_support_files"),
]


def profile_hfsoup(inputs: list[Path], args: argparse.Namespace) -> None:
    work = args.cache / "runs" / "profile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "out"
    files = [f for folder in inputs for f in weight_files(folder)]
    soup_args = ["soup", *(str(p) for p in inputs), "-o", str(out)]
    print(f"\nhfsoup profile ({inputs[0].parent.name}, {'cold' if args.cold else 'warm'} page cache)")

    # -X importtime of the CLI module alone, then of a whole soup run (the lazy imports included).
    def import_seconds(code: str, *argv: str) -> dict[str, float]:
        """Seconds of import time per top-level package: the self times summed, so nothing counts twice."""
        shutil.rmtree(out, ignore_errors=True)
        prepare(files, args)
        command = [sys.executable, "-X", "importtime", "-c", code, *argv]
        stderr = subprocess.run(command, capture_output=True, text=True, env=ENV, check=True).stderr
        packages: dict[str, float] = {}
        for own, name in re.findall(r"^import time:\s+(\d+) \|\s+\d+ \| *(\S+)$", stderr, re.MULTILINE):
            root = name.split(".")[0]
            packages[root] = packages.get(root, 0.0) + int(own) / 1e6
        return packages

    cli = import_seconds("import hfsoup.cli")
    print(f"import hfsoup.cli: {sum(cli.values()):.2f} s")
    run = import_seconds("import sys; from hfsoup.cli import main; sys.exit(main(sys.argv[1:]))", *soup_args)
    heavy = sorted(run.items(), key=lambda kv: -kv[1])[:8]
    print(
        f"imports during 'hfsoup soup': {sum(run.values()):.2f} s; by package: "
        + ", ".join(f"{p} {t:.2f}" for p, t in heavy)
    )

    # A timeline without the profiler, then the same under cProfile for the breakdown.
    for profiled in (False, True):
        shutil.rmtree(out, ignore_errors=True)
        prepare(files, args)
        marks_file = work / f"marks-{int(profiled)}.json"
        spawn = time.time()
        subprocess.run(
            [sys.executable, "-c", PROFILE_WRAPPER, str(marks_file), str(int(profiled)), *soup_args],
            env=ENV,
            check=True,
            capture_output=True,
        )
        done = time.time()
        marks = json.loads(marks_file.read_text())
        if not profiled:
            print(
                f"timeline (s since spawn): interpreter up {marks['start'] - spawn:.2f}, first tensor read "
                f"{marks['first_read'] - spawn:.2f}, first shard write {marks['first_write'] - spawn:.2f}, "
                f"soup done {marks['end'] - spawn:.2f}, process exit {done - spawn:.2f}"
            )
    stats = pstats.Stats(str(marks_file) + ".prof")
    cumulative: dict[tuple[str, str], float] = {}
    for (file, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        for (suffix, name), _label in PROFILE_ROWS:
            if func == name and file.endswith(suffix):
                cumulative[(suffix, name)] = cumulative.get((suffix, name), 0.0) + cum
    total = marks["end"] - marks["start"]
    print(f"cProfile of one run ({total:.2f} s in-process under the profiler; cumulative seconds, nested):")
    for key, label in PROFILE_ROWS:
        if key in cumulative:
            print(f"  {label:50} {cumulative[key]:6.2f}")
    absent = [f"{suffix}:{name}" for (suffix, name), _ in PROFILE_ROWS if (suffix, name) not in cumulative]
    if absent:
        print(f"  (not in this engine: {', '.join(absent)})")
    print("  top functions by own time:")
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]  # type: ignore[attr-defined]
    for (file, line, func), (_, calls, own, cum, _) in top:
        where = func if file == "~" else f"{Path(file).name}:{line} {func}"
        print(f"    {own:6.2f} s own {cum:6.2f} s cum {calls:7d} calls  {where[:80]}")
    shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="fp32", choices=[*VARIANTS, "all"], help="default: fp32")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender; medians are reported")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every run (needs root)")
    parser.add_argument(
        "--wait-idle", type=float, default=120, help="before each run, wait up to this many seconds for a quiet CPU"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads for every contender (OMP_NUM_THREADS); one is robust to a busy CPU"
    )
    parser.add_argument("--no-heap", action="store_true", help="skip the extra tracemalloc run per contender")
    parser.add_argument("--profile", action="store_true", help="also profile hfsoup (imports, timeline, cProfile)")
    parser.add_argument("--cache", type=Path, default=Path(".hfsoup-bench-cache"), help="checkpoints, venv, runs")
    args = parser.parse_args()
    args.cache = args.cache.resolve()
    if args.threads:
        ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    start = time.perf_counter()
    folders = build_checkpoints(args.cache)
    mergekit_bin(args.cache)
    print(f"checkpoints and mergekit ready in {time.perf_counter() - start:.0f} s", flush=True)
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    results = {v: bench_variant(v, folders[v], args) for v in variants}
    for variant, result in results.items():
        report(variant, result, args)
    if args.profile:
        profile_hfsoup(folders[variants[0]], args)
    print(f"\nbenchmark took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
