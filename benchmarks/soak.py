# python benchmarks/soak.py                        # 200 soups, an evaluation after every 2nd: < 10 min on 2 cores
# python benchmarks/soak.py --soups 50 --eval-every 2 --rate 0.08 --seed 3
"""Soak run (issue 9): soups and evaluations in a loop through a local Hub that injects faults at random.

Three tiny BERT sst2 classifiers (one seeded base, three seeded heads and noisy bodies) and a GLUE-shaped sst2 are
published to an in-process local Hub whose `FaultPlan` gives each request a chance of one fault: HTTP 500/503, a
delay past the client timeout, a truncated body, corrupted bytes, a dropped connection. Each round soups two or three
of the classifiers by Hub ID (weights varying from round to round) into a fresh output folder with an empty Hugging
Face cache, so every file is downloaded through the faults; every `--eval-every`-th round also evaluates one
classifier by Hub ID (fresh cache again) on sst2.

Every output is checked against the output of the same soup or evaluation made before any fault was switched on:
the soup's safetensors bytes (sha256) and hfsoup.json's weights and SHAs, the evaluation's predictions and metrics. A
run that fails (the faults outlasted hfsoup's bounded retries) must fail with an HfsoupError and leave no output and
no staging folder behind; it is counted as "failed cleanly", and the round is not retried. Printed at the end: faults
injected by kind, rounds, outputs right, wrong (must be 0), lost (an output missing with no error, or a partial
output left behind: must be 0), clean failures, and the time taken.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

FAULT_MIX = {  # kind -> (share of the fault rate, options): what a flaky network and a struggling Hub do
    "status-503": (0.25, {"kind": "status", "status": 503}),
    "status-500": (0.15, {"kind": "status", "status": 500}),
    "truncate": (0.2, {"kind": "truncate", "method": "GET"}),
    "corrupt": (0.2, {"kind": "corrupt", "method": "GET"}),
    "drop": (0.15, {"kind": "drop"}),
    "delay": (0.05, {"kind": "delay", "seconds": 2.5}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soups", type=int, default=200, help="soup rounds (default: 200)")
    parser.add_argument("--eval-every", type=int, default=2, help="evaluate after every Nth soup (default: 2)")
    parser.add_argument("--rate", type=float, default=0.05, help="chance of a fault per request (default: 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep files here (default: a temporary folder, removed at the end)")
    args = parser.parse_args()

    # Short client timeouts (the delays go past them) and quick retries; set before huggingface_hub is imported.
    os.environ.update(
        {
            "HF_HUB_DOWNLOAD_TIMEOUT": "2",
            "HF_HUB_ETAG_TIMEOUT": "2",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HFSOUP_HUB_RETRY_WAIT": "0.2",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    logging.basicConfig(level=logging.ERROR)
    import torch
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its "Trying to resume download..." lines are the faults doing their work

    torch.set_num_threads(1)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hfsoup-soak-"))
    try:
        return run(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> int:
    from hfsoup import soup
    from hfsoup.errors import HfsoupError
    from hfsoup.evaluation.evaluator import Evaluator
    from hfsoup.io.staging import staging_path
    from hfsoup.localhub.faults import FaultPlan
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub
    from hfsoup.testing.families import build_family
    from hfsoup.testing.glue import build_glue, publish_glue, tiny_classifier
    from hfsoup.testing.publish import upload

    started = time.perf_counter()
    family = build_family("bert", workdir / "family", n_finetunes=3, seed=0)
    plan = FaultPlan(seed=args.seed)
    hub = LocalHubServer(workdir / "store", anonymous_writes=True, faults=plan).start()
    homes = iter(range(10**9))

    def fresh_home():  # an empty Hugging Face cache: every file is downloaded again, through the faults
        return use_local_hub(hub.url, workdir / "homes" / str(next(homes)))

    with fresh_home():
        publish_glue(build_glue(workdir / "glue", tasks=["sst2"]))
        repos = []
        for i, finetune in enumerate(family.finetunes):
            # sst2 heads on each fine-tuned body (same seed: the heads start alike, as fine-tunes of one model do)
            folder = tiny_classifier(finetune, "sst2", workdir / f"clf{i}", seed=0)
            upload(folder, f"soak/clf{i}")
            repos.append(f"soak/clf{i}")

    rounds = [_round(i, repos) for i in range(args.soups)]
    expected_soups, expected_evals = {}, {}
    with fresh_home():  # the references: each distinct soup and evaluation, made before any fault is switched on
        evaluator = Evaluator("sst2", "validation")
        for ingredients, weights in {(tuple(r[0]), tuple(r[1])) for r in rounds}:
            out = workdir / "expected" / hashlib.sha1(repr((ingredients, weights)).encode()).hexdigest()
            expected_soups[(ingredients, weights)] = _soup_digest(
                soup(list(ingredients), out, options={"weights": weights})
            )
        for repo in repos:
            expected_evals[repo] = _eval_digest(evaluator.evaluate(repo))
    setup_s = time.perf_counter() - started

    for name, (share, options) in FAULT_MIX.items():
        options = dict(options)
        kind = options.pop("kind")
        plan.add(kind, times=None, probability=args.rate * share, **options)
        del name
    seen = _HubLog()  # what hfsoup itself did about the faults: retries, damaged files caught
    hub_logger = logging.getLogger("hfsoup.hub")
    hub_logger.addHandler(seen)
    hub_logger.setLevel(logging.WARNING)
    hub_logger.propagate = False  # counted, not printed
    counts = {"soups right": 0, "evals right": 0, "wrong": 0, "lost": 0, "failed cleanly": 0}
    failures: list[str] = []
    loop_started = time.perf_counter()
    (workdir / "out").mkdir()
    for i, (ingredients, weights) in enumerate(rounds):
        out = workdir / "out" / f"soup{i}"
        with fresh_home():
            try:
                result = soup(ingredients, out, options={"weights": weights})
                digest = _soup_digest(result)
                ok = digest == expected_soups[(tuple(ingredients), tuple(weights))]
                counts["soups right" if ok else "wrong"] += 1
                if not ok:
                    failures.append(f"soup {i}: WRONG output {digest}")
            except HfsoupError as e:
                leftovers = [p.name for p in out.parent.iterdir() if p.name in (out.name, staging_path(out).name)]
                counts["lost" if leftovers else "failed cleanly"] += 1
                failures.append(f"soup {i}: {type(e).__name__}: {e.message[:160]} (left behind: {leftovers})")
            if args.eval_every and i % args.eval_every == args.eval_every - 1:
                repo = repos[(i // args.eval_every) % len(repos)]
                try:
                    digest = _eval_digest(evaluator.evaluate(repo))
                    ok = digest == expected_evals[repo]
                    counts["evals right" if ok else "wrong"] += 1
                    if not ok:
                        failures.append(f"eval {i} of {repo}: WRONG result")
                except HfsoupError as e:
                    counts["failed cleanly"] += 1
                    failures.append(f"eval {i} of {repo}: {type(e).__name__}: {e.message[:160]}")
        shutil.rmtree(out, ignore_errors=True)
        if i % 20 == 19:
            elapsed = time.perf_counter() - loop_started
            print(f"  {i + 1} rounds, {elapsed:.0f} s, faults so far {plan.total}", flush=True)
    loop_s = time.perf_counter() - loop_started
    hub.stop()

    evals = sum(1 for i in range(args.soups) if args.eval_every and i % args.eval_every == args.eval_every - 1)
    requests = len(hub.traffic)
    print(f"soak: {args.soups} soups and {evals} evaluations through the faulty local Hub (seed {args.seed})")
    print(f"  fault rate {args.rate:.3f} per request; {requests} requests answered, {plan.total} faults injected:")
    for kind, n in sorted(plan.injected.items()):
        print(f"    {kind:<9} {n}")
    print(f"  hfsoup retried {seen.retries} Hub calls; {seen.mismatches} downloads failed their checksum, redone")
    print("  outputs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"  time: setup {setup_s:.0f} s, loop {loop_s:.0f} s ({loop_s / max(args.soups, 1):.2f} s per round)")
    for line in failures:
        print(f"  - {line}")
    return 0 if counts["wrong"] == 0 and counts["lost"] == 0 else 1


class _HubLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = self.mismatches = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.retries += "trying again" in message or "reading it again" in message
        self.mismatches += "does not match its checksum" in message


def _round(i: int, repos: list[str]) -> tuple[list[str], list[float]]:
    """Round i's ingredients and weights: the three, or a pair, with weights that vary from round to round."""
    if i % 3 == 0:
        return list(repos), [0.5, 0.3, 0.2] if i % 2 else [1 / 3, 1 / 3, 1 / 3]
    pair = [repos[i % 3], repos[(i + 1) % 3]]
    return pair, [0.6, 0.4] if i % 2 else [0.5, 0.5]


def _soup_digest(result) -> tuple:
    provenance = json.loads(result.provenance_path.read_text())
    weights = hashlib.sha256((result.output_dir / "model.safetensors").read_bytes()).hexdigest()
    return weights, tuple(provenance["weights"]), tuple(i["sha"] for i in provenance["ingredients"])


def _eval_digest(report) -> tuple:
    [result] = report.results
    return report.model["sha"], tuple(sorted(result.metrics.items())), tuple(result.predictions)


if __name__ == "__main__":
    sys.exit(main())
