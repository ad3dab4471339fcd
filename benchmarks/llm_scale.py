"""Soup four Llama-shaped checkpoints at LLM scale: hfsoup against mergekit's `linear`, beside the I/O floor.

    python benchmarks/llm_scale.py                          # 0.1B, 0.5B and 1B parameters, bf16, cold and warm
    python benchmarks/llm_scale.py --sizes 1B --runs 3      # one size, median of 3
    python benchmarks/llm_scale.py --device cuda            # with a GPU: hfsoup --device cuda, mergekit --cuda

The first run builds, per size, four "fine-tunes" of one seeded Llama-shaped model (grouped-query attention, untied
output head, bf16, sharded into 1 GB safetensors files with an index, as `save_pretrained` and the Hub store them):
random, seeded, each the base plus seeded noise of 5% of each tensor's spread. They are written tensor by tensor with
safetensors, never a whole model in memory, under `--cache` (about 15 GB for the three sizes); mergekit goes into its
own virtual environment there, as in `soup_speed.py`.

Per size and round, each contender runs as its own process, timed end to end (interpreter start and imports
included), cold (the inputs evicted from the page cache first) and warm (the inputs read once before):
  hfsoup     `hfsoup soup ft-0 ft-1 ft-2 ft-3 -o out` (the uniform soup, shared-initialization check included)
  mergekit   `mergekit-yaml config.yml out` with `merge_method: linear`, weight 1.0 each (normalized: the mean)
Reported: wall time, its ratio to the I/O floor and to mergekit, CPU time, the peak anonymous memory (the
process's RssAnon plus its forked workers' private pages, from /proc: heap and tensors, not the memory-mapped
inputs or the page cache the output goes through) as a fraction of one checkpoint, the peak resident memory
(`ru_maxrss`: memory-mapped input pages included), and the largest per-tensor `max|out - ref| / max|ref|` against
a float64 mean of the inputs computed here with safetensors, independently of both. The I/O floor is measured in the
same invocation: reading the four inputs (cold, evicted, and warm) plus writing one checkpoint-sized file into the
page cache.

Eviction uses `posix_fadvise(DONTNEED)` after a sync, which needs no privileges (containers refuse
`/proc/sys/vm/drop_caches` even to root); the script warns when the cold read was not markedly slower than the warm
one (the eviction did not take, and the cold figures are warm ones).
The targets (issue 19) are printed with the verdict: at 1B, hfsoup warm within 1.5 x the warm floor and at most 0.25 x
mergekit's warm time; hfsoup's anonymous memory flat (within 20%) from the smallest size to 1B and at most 0.05 x one
checkpoint. The exit code is 0 when every target measured holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from merge_speed import ENV, MEASURE_WRAPPER  # noqa: E402 - offline env; anonymous memory every 5 ms, and ru_maxrss
from soup_speed import _busy_cpu_seconds, mergekit_bin, read_files  # noqa: E402

N_INGREDIENTS = 4
SEED = 0
NOISE = 0.05
BUILD_VERSION = 1  # bump when the checkpoints below change, so cached ones are rebuilt
SHARD_BYTES = 1 << 30
MB, GB = 1e6, 1e9
# LlamaConfig keyword arguments per size: grouped-query attention (4 key-value heads), an untied output head, a
# 32k vocabulary, as TinyLlama-1.1B; the smaller ones keep the shape family and shrink width and depth.
SIZES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},  # a test
    "0.1B": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12},
    "0.5B": {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 16, "num_attention_heads": 12},
    "1B": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32},
}
COMMON = {"num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": False, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
          "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
TARGET_FLOOR, TARGET_MERGEKIT, TARGET_FLAT, TARGET_ANON = 1.5, 0.25, 0.20, 0.05


# ---------------------------------------------------------------------------------------------------- checkpoints
def llama_shapes(size: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of `LlamaForCausalLM` for `size`, by name, in the order transformers stores them."""
    c = {**COMMON, **SIZES[size]}
    h, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    head = h // c["num_attention_heads"]
    kv = head * c["num_key_value_heads"]
    shapes = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    return shapes


def n_params(size: str) -> int:
    import math

    return sum(math.prod(s) for _, s in llama_shapes(size))


def build_checkpoints(cache: Path, size: str) -> list[Path]:
    """Four fine-tunes of one seeded base, bf16, in 1 GB shards; reused while `built.json` matches."""
    import torch
    from safetensors.torch import save_file

    root = cache / f"llama-{size}"
    stamp = {"version": BUILD_VERSION, "size": size, "config": {**COMMON, **SIZES[size]}, "noise": NOISE}
    folders = [root / f"ft-{i}" for i in range(N_INGREDIENTS)]
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return folders
    print(f"building 4 Llama-shaped {size} checkpoints ({n_params(size) / 1e9:.2f}B parameters, bf16) in {root} ...")
    shutil.rmtree(root, ignore_errors=True)
    for folder in folders:
        folder.mkdir(parents=True)
        config = {**COMMON, **SIZES[size], "transformers_version": "5.0.0"}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    shapes = llama_shapes(size)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in shapes:
        nbytes = 2 * int(torch.Size(shape).numel())
        if shards[-1] and used + nbytes > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += nbytes
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    gen = torch.Generator().manual_seed(SEED)
    weight_map = {}
    for file, shard in zip(files, shards, strict=True):
        parts: list[dict[str, torch.Tensor]] = [{} for _ in folders]
        for name, shape in shard:
            if name.endswith("norm.weight"):
                base = torch.ones(shape)
                spread = 0.02
            else:
                base = torch.randn(shape, generator=gen).mul_(0.02)
                spread = 0.02
            for part in parts:
                noise = torch.randn(shape, generator=gen).mul_(NOISE * spread)
                part[name] = noise.add_(base).to(torch.bfloat16)
            weight_map[name] = file
        for folder, part in zip(folders, parts, strict=True):
            save_file(part, str(folder / file), metadata={"format": "pt"})
        del parts
    total = sum(2 * int(torch.Size(s).numel()) for _, s in shapes)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for folder in folders:
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    marker.write_text(json.dumps(stamp))
    return folders


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------------- page cache
def evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache (written back first): a cold start without privileges."""
    os.sync()
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def io_floor(files: list[Path], out_bytes: int, work: Path) -> dict[str, float]:
    """Seconds to read the inputs cold and warm, and to write one checkpoint-sized output into the page cache."""
    evict(files)
    n, cold = read_files(files)
    read_files(files)  # the first warm read may still fault pages in
    _, warm = read_files(files)
    block = os.urandom(16 << 20)
    path = work / "floor.bin"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(0, out_bytes, len(block)):
            f.write(block)
    write = time.perf_counter() - start
    path.unlink()
    os.sync()
    if cold < 2 * warm:
        print(f"  warning: the cold read ({cold:.2f} s) was barely slower than the warm one ({warm:.2f} s): the "
              "page cache was not dropped, so the cold figures are warm ones")  # fmt: skip
    return {"bytes_in": n, "read_cold": cold, "read_warm": warm, "write": write}


def wait_quiet(limit: float) -> float:
    """Wait up to `limit` seconds for other processes to go quiet; return the cores they keep busy."""
    start = time.monotonic()
    while True:
        busy, t0 = _busy_cpu_seconds(), time.perf_counter()
        time.sleep(1)
        other = (_busy_cpu_seconds() - busy) / (time.perf_counter() - t0)
        if other < 0.25 or time.monotonic() - start > limit:
            return other


# ---------------------------------------------------------------------------------------------------- contenders
@dataclass
class Measure:
    wall: float
    cpu: float
    anon: int
    rss: int  # peak resident memory, memory-mapped inputs included
    other: float  # CPU cores other processes kept busy meanwhile


def run_measured(argv: list[str], log: Path) -> Measure:
    result = log.with_suffix(".json")
    busy, own = _busy_cpu_seconds(), sum(os.times()[:2])
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", MEASURE_WRAPPER, str(result), *argv], stdout=out, stderr=out, env=ENV
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    measured = json.loads(result.read_text()) if result.is_file() else {"rc": proc.returncode}
    if proc.returncode != 0 or measured["rc"] != 0:
        raise SystemExit(f"{argv[0]} failed with exit code {measured['rc']}; see {log}")
    spent = usage.ru_utime + usage.ru_stime + sum(os.times()[:2]) - own
    other = (_busy_cpu_seconds() - busy - spent) / wall
    return Measure(wall, measured["cpu"], measured["anon"], measured["rss"], max(other, 0.0))


def commands(inputs: list[Path], out: Path, work: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    hfsoup = [str(Path(sys.executable).parent / "hfsoup"), "soup", *map(str, inputs), "-o", str(out), "-q"]
    hfsoup += ["--device", args.device]
    cmds = {"hfsoup": hfsoup}
    if not args.no_mergekit:
        config = work / "mergekit.yml"
        models = [{"model": str(p), "parameters": {"weight": 1.0}} for p in inputs]
        config.write_text(json.dumps({"merge_method": "linear", "dtype": "bfloat16", "models": models}, indent=2))
        mergekit = [str(mergekit_bin(args.cache)), str(config), str(out)]
        cmds["mergekit"] = [*mergekit, "--cuda"] if args.device.startswith("cuda") else mergekit
    return cmds


# ---------------------------------------------------------------------------------------------------- deviation
def max_deviation(out: Path, inputs: list[Path]) -> float:
    """The worst per-tensor relative deviation of `out` from the float64 mean of `inputs`, one tensor at a time."""
    from safetensors import safe_open

    def tensors(folder: Path) -> dict[str, Path]:
        found = {}
        for file in weight_files(folder):
            with safe_open(file, "pt") as f:
                found.update(dict.fromkeys(f.keys(), file))
        return found

    where = [tensors(p) for p in inputs]
    got = tensors(out)
    if set(got) != set(where[0]):
        raise SystemExit(f"{out} does not hold the inputs' tensors: {sorted(set(where[0]) ^ set(got))[:5]}")
    worst = 0.0
    for name, file in got.items():
        ref = None
        for w in where:
            with safe_open(w[name], "pt") as f:
                t = f.get_tensor(name).double()
            ref = t if ref is None else ref.add_(t)
        ref.div_(len(inputs))
        with safe_open(file, "pt") as f:
            t = f.get_tensor(name).double()
        worst = max(worst, float((t - ref).abs().max()) / (float(ref.abs().max()) or 1.0))
    return worst


# ---------------------------------------------------------------------------------------------------- one size
@dataclass
class Result:
    size: str
    checkpoint_bytes: int
    floor: dict[str, float] = field(default_factory=dict)
    runs: dict[tuple[str, str], list[Measure]] = field(default_factory=dict)
    deviation: dict[str, float] = field(default_factory=dict)

    def median(self, who: str, mode: str, key: str) -> float:
        return statistics.median(getattr(m, key) for m in self.runs[(who, mode)])

    def floor_s(self, mode: str) -> float:
        return self.floor[f"read_{mode}"] + self.floor["write"]


def bench_size(size: str, args: argparse.Namespace) -> Result:
    inputs = build_checkpoints(args.cache, size)
    files = [f for p in inputs for f in weight_files(p)]
    work = args.cache / "runs" / size
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "out"
    result = Result(size, sum(f.stat().st_size for f in weight_files(inputs[0])))
    result.floor = io_floor(files, result.checkpoint_bytes, work)
    cmds = commands(inputs, out, work, args)
    for run in range(args.runs):
        for mode in ("cold", "warm"):
            for who, argv in cmds.items():
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                other = wait_quiet(args.wait_idle)
                if mode == "cold":
                    evict(files)
                else:
                    read_files(files)
                measure = run_measured(argv, work / f"{who}-{mode}-{run}.log")
                result.runs.setdefault((who, mode), []).append(measure)
                print(
                    f"  {size} run {run + 1}/{args.runs} {mode} {who:9} {measure.wall:7.2f} s, anon "
                    f"{measure.anon / MB:6.0f} MB (other processes: {max(other, measure.other):.1f} cores)",
                    flush=True,
                )
                if run == 0 and mode == "warm" and not args.no_deviation:
                    result.deviation[who] = max_deviation(out, inputs)
                shutil.rmtree(out, ignore_errors=True)
    return result


def report(results: list[Result], args: argparse.Namespace) -> bool:
    ok = True
    print()
    for r in results:
        fl = r.floor
        print(
            f"## {r.size}: {n_params(r.size) / 1e9:.2f}B parameters, one checkpoint {r.checkpoint_bytes / GB:.2f} GB "
            f"(bf16), 4 inputs {fl['bytes_in'] / GB:.2f} GB"
        )
        print(
            f"I/O floor: read cold {fl['read_cold']:.2f} s ({fl['bytes_in'] / fl['read_cold'] / MB:.0f} MB/s), warm "
            f"{fl['read_warm']:.2f} s ({fl['bytes_in'] / fl['read_warm'] / MB:.0f} MB/s); write one checkpoint "
            f"{fl['write']:.2f} s; floor cold {r.floor_s('cold'):.2f} s, warm {r.floor_s('warm'):.2f} s"
        )
        print()
        print(
            "| contender | start | wall s | x floor | x mergekit | CPU s | anon peak MB | x checkpoint | peak RSS MB "
            "| max dev |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (who, mode), _ in sorted(r.runs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "hfsoup")):
            wall = r.median(who, mode, "wall")
            mk = f"{wall / r.median('mergekit', mode, 'wall'):.2f}" if ("mergekit", mode) in r.runs else ""
            anon = r.median(who, mode, "anon")
            dev = f"{r.deviation[who]:.1e}" if who in r.deviation else ""
            print(
                f"| {who} | {mode} | {wall:.2f} | {wall / r.floor_s(mode):.2f} | {mk} | "
                f"{r.median(who, mode, 'cpu'):.1f} | {anon / MB:.0f} | {anon / r.checkpoint_bytes:.3f} | "
                f"{r.median(who, mode, 'rss') / MB:.0f} | {dev} |"
            )
        print()
    if len(results) > 1:
        print("## Growth (warm)")
        print()
        print("| size | checkpoint GB | hfsoup s | hfsoup anon MB | mergekit s | mergekit anon MB |")
        print("|---|---|---|---|---|---|")
        for r in results:
            mk = ("mergekit", "warm") in r.runs
            print(
                f"| {r.size} | {r.checkpoint_bytes / GB:.2f} | {r.median('hfsoup', 'warm', 'wall'):.2f} | "
                f"{r.median('hfsoup', 'warm', 'anon') / MB:.0f} | "
                f"{r.median('mergekit', 'warm', 'wall') if mk else float('nan'):.2f} | "
                f"{r.median('mergekit', 'warm', 'anon') / MB if mk else float('nan'):.0f} |"
            )
        print()
    print("## Targets")
    largest = results[-1]
    checks = []
    hf_warm = largest.median("hfsoup", "warm", "wall")
    checks.append(
        (f"{largest.size} warm: hfsoup / I/O floor <= {TARGET_FLOOR}", hf_warm / largest.floor_s("warm"), TARGET_FLOOR)
    )
    if ("mergekit", "warm") in largest.runs:
        ratio = hf_warm / largest.median("mergekit", "warm", "wall")
        checks.append((f"{largest.size} warm: hfsoup / mergekit <= {TARGET_MERGEKIT}", ratio, TARGET_MERGEKIT))
    anon = [max(r.median("hfsoup", m, "anon") for m in ("cold", "warm")) for r in results]
    if len(results) > 1:
        growth = max(anon) / min(anon) - 1
        checks.append(
            (f"anon memory growth {results[0].size} -> {largest.size} <= {TARGET_FLAT:.0%}", growth, TARGET_FLAT)
        )
    checks.append(
        (
            f"{largest.size}: anon peak / one checkpoint <= {TARGET_ANON}",
            anon[-1] / largest.checkpoint_bytes,
            TARGET_ANON,
        )
    )
    for text, value, limit in checks:
        held = value <= limit
        ok &= held
        print(f"- {text}: {value:.3f} {'OK' if held else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.1B,0.5B,1B", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--build-only", action="store_true", help="build the checkpoints, time nothing")
    parser.add_argument("--runs", type=int, default=1, help="rounds (medians are reported)")
    parser.add_argument("--cache", type=Path, default=Path(".hfsoup-bench-cache"), help="checkpoints and mergekit")
    parser.add_argument("--device", default="cpu", help="hfsoup's --device; cuda also runs mergekit with --cuda")
    parser.add_argument("--no-mergekit", action="store_true", help="time hfsoup and the floor only")
    parser.add_argument("--no-deviation", action="store_true", help="skip the float64 comparison (minutes at 1B)")
    parser.add_argument("--wait-idle", type=float, default=60.0, help="seconds to wait for a quiet machine per run")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    args.cache = args.cache.resolve()
    if args.build_only:
        for size in sizes:
            build_checkpoints(args.cache, size)
        return 0
    results = [bench_size(size, args) for size in sorted(sizes, key=n_params)]
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
