"""Time hfsoup's evaluator against `transformers.pipeline("text-classification")` on the same models and data.

    python benchmarks/eval_speed.py                     # 1 and 8 tiny BERT sst2 classifiers, 2000 sentences
    python benchmarks/eval_speed.py --rows 500 --models 4 --threads 2

Everything is built in a temporary folder and served by hfsoup's local Hub (nothing leaves loopback): a synthetic
sst2 validation split of `--rows` sentences published as `nyu-mll/glue`, and `--models` classifiers from the tiny
BERT family (`hfsoup.testing.glue.tiny_classifier`, one seed each). Tiny models make the figures mostly overhead
(tokenization, batching, Python): that is what the evaluator's shared, length-sorted batches save.

Reported per contender: wall seconds for scoring (loading included, building excluded), examples per second, and
the accuracy, computed for both from their predictions by scikit-learn, which must agree:
  hfsoup 1      `Evaluator("sst2").score(model)` for the first model (tokenizes, then scores)
  pipeline 1    `pipeline("text-classification", model=folder, batch_size=...)` over the sentences
  hfsoup N      one `Evaluator`, every model: the data is tokenized once and its batches reused
  pipeline N    one pipeline per model
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="validation sentences (default: 2000)")
    parser.add_argument("--models", type=int, default=8, help="classifiers for the many-model run (default: 8)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    args = parser.parse_args()

    import datasets
    import torch
    from sklearn.metrics import accuracy_score
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    from hfsoup.evaluation.evaluator import Evaluator
    from hfsoup.evaluation.tasks import TASKS
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub
    from hfsoup.testing.families import build_family
    from hfsoup.testing.glue import glue_features, glue_rows, publish_glue, tiny_classifier

    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    task = TASKS["sst2"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with LocalHubServer(root / "store", anonymous_writes=True) as hub, use_local_hub(hub.url, root / "hf_home"):
            rows = glue_rows(task, "validation", args.rows, seed=1)
            data = root / "glue"
            (data / "sst2").mkdir(parents=True)
            datasets.Dataset.from_dict(rows, features=glue_features(task)).to_parquet(
                str(data / "sst2" / "validation-00000-of-00001.parquet")
            )
            (data / "README.md").write_text(
                "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: validation\n"
                "    path: sst2/validation-*\n---\n"
            )
            publish_glue(data)
            base = build_family("bert", root / "bert", n_finetunes=1).base
            models = [tiny_classifier(base, "sst2", root / f"m{i}", seed=i) for i in range(args.models)]
            references = rows["label"]

            def by_pipeline(folder: Path) -> list[int]:
                classify = pipeline("text-classification", model=str(folder), device=-1)
                out = classify(rows["sentence"], batch_size=args.batch_size, truncation=True)
                return [task.label_names.index(o["label"]) for o in out]

            results = []

            def timed(name: str, n_models: int, run) -> None:
                start = time.perf_counter()
                predictions = run()
                wall = time.perf_counter() - start
                accuracies = [accuracy_score(references, p) for p in predictions]
                results.append((name, wall, n_models * args.rows / wall, accuracies))

            evaluator = Evaluator("sst2", batch_size=args.batch_size)

            def hfsoup_many(folders: list[Path]) -> list[list[int]]:
                return [evaluator.evaluate(f).results[0].predictions for f in folders]

            timed("hfsoup 1", 1, lambda: hfsoup_many(models[:1]))
            timed("pipeline 1", 1, lambda: [by_pipeline(models[0])])
            # A fresh evaluator: it reads the tokenization back from the datasets cache, then scores every model.
            evaluator = Evaluator("sst2", batch_size=args.batch_size)
            timed(f"hfsoup {args.models}", args.models, lambda: hfsoup_many(models))
            timed(f"pipeline {args.models}", args.models, lambda: [by_pipeline(m) for m in models])

    print(f"sst2 (synthetic), {args.rows} sentences, batch size {args.batch_size}, {args.threads} thread(s)")
    print(f"{'contender':<14}{'wall s':>9}{'examples/s':>12}  accuracy (model 0 ..)")
    for name, wall, rate, accuracies in results:
        print(f"{name:<14}{wall:>9.2f}{rate:>12.0f}  {' '.join(f'{a:.4f}' for a in accuracies)}")
    first = {name.split()[0]: accs for name, _, _, accs in results if name.endswith(str(args.models))}
    agree = first.get("hfsoup") == first.get("pipeline")
    print("accuracies agree" if agree else "ACCURACIES DIFFER: the two do not predict alike")


if __name__ == "__main__":
    main()
