"""What the default results table costs, and how long a greedy soup goes without saying anything (issue 16).

    python benchmarks/progress_overhead.py              # 4 tiny BERT fine-tunes on a tiny sst2, 3 runs each
    python benchmarks/progress_overhead.py --runs 5 --compare uniform,greedy,learned,ensemble

Publishes four tiny seeded BERT fine-tunes and a tiny GLUE sst2 to a local Hub (in-process, over HTTP), then runs, in
turn, round after round, each as its own `hfsoup soup ... --method greedy --task sst2` process with its stderr on a
terminal (`hfsoup.testing.terminal`):

  default    no --compare: the table's default baselines (every ingredient, the uniform soup, the ensemble);
  cheap      --compare uniform,ensemble, the baselines the issue names as cheap;
  asked      --compare as given (by default uniform,learned,ensemble: the learned soup when named).

Reported, medians over `--runs`: wall seconds, the ratio to `cheap`, and the longest silence (seconds without a line
or a bar update, start and exit included). The targets: default within 1.5 x cheap, no silence of 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from hfsoup.localhub.server import LocalHubServer
from hfsoup.testing.env import local_hub_environ, use_local_hub
from hfsoup.testing.families import build_family, publish_family
from hfsoup.testing.glue import build_glue, publish_glue
from hfsoup.testing.terminal import run_in_terminal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare", default="uniform,learned,ensemble", help="the third contender's --compare")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hfsoup-progress-"))
    family = build_family("bert", root / "family", n_finetunes=4, seed=3)
    contenders = {"default": [], "cheap": ["--compare", "uniform,ensemble"], "asked": ["--compare", args.compare]}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    silences: dict[str, list[float]] = {name: [] for name in contenders}
    with LocalHubServer(root / "store", anonymous_writes=True) as server:
        with use_local_hub(server.url, root / "publish-home"):
            ids = publish_family(family, members=[f"ft{i}" for i in range(4)])
            publish_glue(build_glue(root / "glue", tasks=["sst2"]))
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
        env.update(local_hub_environ(server.url, root / "home"))
        command = [sys.executable, "-m", "hfsoup.cli", "soup", *(ids[f"ft{i}"] for i in range(4))]
        command += ["--method", "greedy", "--task", "sst2", "--no-plot"]
        run_in_terminal([*command, "-o", str(root / "warm-up")], env)  # the Hub cache and the datasets cache
        for k in range(args.runs):
            for name, extra in contenders.items():
                run = run_in_terminal([*command, *extra, "-o", str(root / f"{name}-{k}")], env)
                if run.code != 0:
                    print("\n".join(run.lines), file=sys.stderr)
                    raise SystemExit(f"{name} failed with exit code {run.code}")
                walls[name].append(run.updates[-1][0])
                silences[name].append(run.longest_silence)
    cheap = statistics.median(walls["cheap"])
    print(f"greedy soup of 4 tiny BERT fine-tunes, medians of {args.runs} runs")
    print(f"{'contender':<10} {'--compare':<28} {'wall s':>7} {'x cheap':>8} {'longest silence s':>18}")
    for name, extra in contenders.items():
        wall = statistics.median(walls[name])
        shown = extra[1] if extra else "(default)"
        print(f"{name:<10} {shown:<28} {wall:>7.2f} {wall / cheap:>8.2f} {statistics.median(silences[name]):>18.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
