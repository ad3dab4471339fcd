"""`hfsoup finetune`: train soup ingredients from one base over a grid or a random search."""

from __future__ import annotations

import argparse

from ..selection.options import split_files
from .common import TOKEN_HELP

FINETUNE_EPILOG = """\
examples:
  hfsoup finetune google-bert/bert-base-uncased --task mrpc -o sweeps/mrpc --grid learning_rate=1e-5,2e-5 seed=0,1
  hfsoup finetune ./base --task sst2 -o sweeps/sst2 --random 8 --seed 0 --range learning_rate=1e-5:5e-5 \\
      weight_decay=0:0.1 label_smoothing=0:0.1 --epochs 2 --push-org me
  hfsoup finetune ./base -o sweeps/reviews --data-files train=reviews.jsonl --grid seed=0,1,2 --max-steps 500
"""


def add(verbs: argparse._SubParsersAction) -> None:
    finetune = verbs.add_parser(
        "finetune",
        help="train soup ingredients from one base over a hyperparameter grid or random search",
        description="Fine-tune BASE once per hyperparameter setting, every run from one shared start (the base with "
        "one seeded classification head), through transformers' Trainer on the task's train split. Each run is "
        "written to DIR/<run name> when complete, with finetune.json; a rerun skips complete runs.",
        epilog=FINETUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    finetune.add_argument("base", metavar="BASE", help="the pretrained model: a Hub ID or a folder")
    finetune.add_argument("--task", default="text-classification", help="a GLUE task, or text-classification")
    finetune.add_argument("-o", "--output", required=True, metavar="DIR", help="the sweep folder")
    finetune.add_argument("--grid", nargs="+", metavar="NAME=V,V", help="hyperparameter values, every combination")
    finetune.add_argument("--random", type=int, metavar="N", help="N runs drawn at random instead of a grid")
    finetune.add_argument("--seed", type=int, default=0, help="the random search's seed (default: 0)")
    finetune.add_argument("--range", nargs="+", metavar="NAME=LOW:HIGH", help="a random search's ranges")
    steps = finetune.add_mutually_exclusive_group()
    steps.add_argument("--epochs", type=float, help="training epochs per run (default: 3)")
    steps.add_argument("--max-steps", type=int, help="training steps per run instead of epochs")
    finetune.add_argument("--batch-size", type=int, help="per-device training batch size (default: 32)")
    finetune.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default: 128)")
    finetune.add_argument("--dataset", metavar="ORG/NAME", help="a GLUE-shaped dataset instead of nyu-mll/glue")
    finetune.add_argument("--data-files", nargs="+", metavar="train=FILE", help="training data of text-classification")
    finetune.add_argument("--text-column", help="text-classification's text column (default: text)")
    finetune.add_argument("--label-column", help="text-classification's label column (default: label)")
    finetune.add_argument("--head-seed", type=int, help="seed of the shared head's initialization (default: 0)")
    finetune.add_argument("--push-org", metavar="ORG", help="push each run to ORG/<sweep folder>-<run name>")
    finetune.add_argument("--private", action="store_true", help="make pushed repos private")
    finetune.add_argument("--token", help=TOKEN_HELP)
    finetune.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..finetune import run_sweep, sweep_from_args

    sweep = sweep_from_args(
        args.base,
        args.output,
        grid=args.grid,
        ranges=args.range,
        random_n=args.random,
        random_seed=args.seed,
        task=args.task,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dataset=args.dataset,
        data_files=split_files(args.data_files, "train") if args.data_files else None,
        text_column=args.text_column,
        label_column=args.label_column,
        head_seed=args.head_seed,
        push_org=args.push_org,
        private=args.private or None,
    )
    for output in run_sweep(sweep, token=args.token):
        print(output)
    return 0
