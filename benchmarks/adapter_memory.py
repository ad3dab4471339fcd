"""Memory of a soup of LoRA adapters: a uniform soup of three adapters of a BERT-base-sized base.

    python benchmarks/adapter_memory.py            # builds the base and adapters once (1-2 min), then 2 x 2 soups

Acceptance (issue 18): the anonymous-memory peak of `hfsoup soup lora-0 lora-1 lora-2 --base base` stays within
2 x the largest tensor plus the engine's blocks. "The engine's blocks" is measured in the same invocation, as the
anonymous peak of `hfsoup soup` of three full checkpoints of the same size (peft's merges of the same adapters): the
interpreter, the imports and the engine's buffers, everything but the adapters' expansion. The adapters adapt every
linear layer and the word embeddings (the largest tensor, 30522 x 768 float32 = 94 MB), at rank 16, with the
classifier as a module to save: the worst case for a merge that computed whole tensors.

Also printed: the largest per-tensor `max|out - ref|` of the adapter soup against the float64 mean of peft's
`merge_and_unload` of each adapter (the full checkpoints souped beside it), and the two soups' wall times. The
anonymous peak is measured as `soup_speed.py` measures it (RSS less file-backed pages, polled every 5 ms, in a lean
wrapper process), with its helpers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from soup_speed import ENV, MB, bert_base, run_measured

N_ADAPTERS = 3
SEED = 0
RANK = 16
TARGETS = ["query", "key", "value", "dense", "word_embeddings"]
BUILD_VERSION = 1


def build(cache: Path) -> tuple[Path, list[Path], list[Path]]:
    """The base, the adapters (peft, B nonzero) and peft's merge of each; reused while `built.json` matches."""
    root = cache / "adapters"
    base, adapters = root / "base", [root / f"lora-{i}" for i in range(N_ADAPTERS)]
    merged = [root / f"merged-{i}" for i in range(N_ADAPTERS)]
    stamp = {"version": BUILD_VERSION, "seed": SEED, "rank": RANK, "targets": TARGETS}
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return base, adapters, merged
    import peft
    import torch
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    shutil.rmtree(root, ignore_errors=True)
    print(f"building a BERT-base base, {N_ADAPTERS} LoRA adapters and their merges in {root} ...", flush=True)
    model, tokenizer = bert_base(SEED)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    for i in range(N_ADAPTERS):
        fresh = BertForSequenceClassification.from_pretrained(base)
        config = peft.LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS, modules_to_save=["classifier"])
        wrapped = peft.get_peft_model(fresh, config)
        generator = torch.Generator().manual_seed(SEED * 1000 + i + 1)
        with torch.no_grad():
            for name, param in wrapped.named_parameters():
                if param.requires_grad and "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
                elif param.requires_grad:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.002)
        wrapped.save_pretrained(adapters[i])
        wrapped.merge_and_unload().save_pretrained(merged[i])
        tokenizer.save_pretrained(merged[i])
    marker.write_text(json.dumps(stamp))
    return base, adapters, merged


def largest_tensor(folder: Path) -> tuple[str, int]:
    from safetensors import safe_open

    sizes = {}
    with safe_open(folder / "model.safetensors", "np") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            sl = f.get_slice(name)
            n = 1
            for d in sl.get_shape():
                n *= d
            sizes[name] = n * 4 if sl.get_dtype() in ("F32", "float32") else n * 2
    name = max(sizes, key=sizes.__getitem__)
    return name, sizes[name]


def max_deviation(out: Path, merged: list[Path]) -> float:
    import numpy as np
    from safetensors.numpy import load_file

    soup = load_file(out / "model.safetensors")
    states = [load_file(m / "model.safetensors") for m in merged]
    worst = 0.0
    for name, value in soup.items():
        if np.issubdtype(value.dtype, np.floating):
            mean = np.mean([s[name].astype(np.float64) for s in states], axis=0)
            worst = max(worst, float(np.max(np.abs(value.astype(np.float64) - mean))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each soup; the peaks' maxima are reported")
    parser.add_argument("--cache", type=Path, default=Path(".hfsoup-bench-cache"), help="checkpoints and runs")
    parser.add_argument(
        "--threads", type=int, help="BLAS threads (OMP_NUM_THREADS); one is robust to a busy CPU, as in soup_speed"
    )
    args = parser.parse_args()
    if args.threads:
        ENV.update(OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    cache = args.cache.resolve()
    base, adapters, merged = build(cache)
    work = cache / "adapter-runs"
    work.mkdir(parents=True, exist_ok=True)
    hfsoup = str(Path(sys.executable).parent / "hfsoup")
    soups = {
        "3 LoRA adapters": [hfsoup, "soup", *map(str, adapters), "--base", str(base)],
        "3 full checkpoints": [hfsoup, "soup", *map(str, merged)],
    }
    peaks: dict[str, list[int]] = {k: [] for k in soups}
    walls: dict[str, list[float]] = {k: [] for k in soups}
    deviation = None
    for run in range(args.runs):
        for label, argv in soups.items():  # in turn, so that drift on the machine hits both alike
            out = work / f"out-{label.split()[1]}"
            shutil.rmtree(out, ignore_errors=True)
            measured = run_measured([*argv, "-o", str(out)], work / f"{label.split()[1]}-{run}.log")
            peaks[label].append(measured.anon)
            walls[label].append(measured.wall)
            if label.endswith("adapters") and deviation is None:
                deviation = max_deviation(out, merged)
    name, largest = largest_tensor(base)
    lora, full = max(peaks["3 LoRA adapters"]), max(peaks["3 full checkpoints"])
    print(f"\nlargest tensor: {name}, {largest / MB:.1f} MB")
    print(f"{'soup':<22}{'anon peak MB':>14}{'wall s (median)':>17}")
    for label in soups:
        print(f"{label:<22}{max(peaks[label]) / MB:>14.1f}{statistics.median(walls[label]):>17.1f}")
    extra = lora - full
    print(f"adapters' extra anon memory: {extra / MB:.1f} MB = {extra / largest:.2f} x the largest tensor")
    bound = 2 * largest + full
    verdict = "PASS" if lora <= bound else "FAIL"
    print(f"bound (2 x largest tensor + the full soup's peak): {bound / MB:.1f} MB -> {verdict}")
    verdict = "PASS" if deviation is not None and deviation <= 1e-6 else "FAIL"
    print(f"max |adapter soup - float64 mean of peft merges|: {deviation:.2e} ({verdict})")
    print(f"benchmark ran at {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
