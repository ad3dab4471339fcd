"""`hfsoup eval`: score one model on a task's split."""

from __future__ import annotations

import argparse
import os

from ..io.staging import check_report_file, write_file_atomic
from ..options import add_flags, given
from ..selection.options import Selection
from .common import TOKEN_HELP, report_overwrite_arg

EVAL_EPILOG = """\
examples:
  hfsoup eval org/ft-a --task sst2
  hfsoup eval org/ft-a@v1.0 --task mnli --json scores.json        # validation_matched and _mismatched
  hfsoup eval ./soup --task mrpc --limit 200 --data-files validation=dev.csv
  hfsoup eval org/ft-a --task sst2 --split 'validation[:50%]'      # datasets split syntax
  torchrun --nproc_per_node 4 -m hfsoup.cli eval ./soup --task qqp  # split across processes
  hfsoup eval google-t5/t5-small --task rte                        # T5 text-to-text: scored label words
  hfsoup eval openai/clip-vit-base-patch32 --task image-classification --dataset org/images  # zero-shot
  hfsoup eval ./soup --task text-classification --data-files test=reviews.jsonl   # classes: the model's id2label
  hfsoup eval ./llm-soup --task perplexity --data-files test=notes.jsonl --text-field body  # a causal LM
"""


#: The `Selection` options that `eval` takes: the model kind, the data, the batching and the metric module.
SCORING = ("kind", "dataset", "data_files", "batch_size", "max_length", "hub_metrics", "text_field")


def add(verbs: argparse._SubParsersAction) -> None:
    evaluate = verbs.add_parser(
        "eval",
        help="score a model on a GLUE task, or text or image classification",
        description="Score a model (Hub ID, org/name@revision or folder) on a task's split; print a table.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("model", metavar="MODEL", help="org/name, org/name@revision or a folder")
    evaluate.add_argument(
        "--task",
        required=True,
        metavar="TASK",
        help="cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, image-classification (with --dataset), or "
        "text-classification (with --dataset or --data-files; the classes are the model's id2label), or perplexity "
        "(a causal LM, with --dataset or --data-files and --text-field)",
    )
    evaluate.add_argument(
        "--split",
        help="a split, or a datasets slice such as 'validation[:50%%]' or 'train+validation' (default: the one split "
        "of --data-files, else validation; for mnli: both validation_matched and _mismatched)",
    )
    evaluate.add_argument("--limit", type=int, metavar="N", help="score only the first N examples of each split")
    evaluate.add_argument("--json", metavar="FILE", help="write the scores, the model's SHA and the data's as JSON")
    evaluate.add_argument("--predictions", metavar="FILE", help="write the predictions, in row order, as JSON")
    evaluate.add_argument("--token", help=TOKEN_HELP)
    report_overwrite_arg(evaluate)
    # The data and batching options are the scoring options of `hfsoup soup --task`, declared once in `Selection`.
    add_flags(
        evaluate,
        Selection,
        dest="selection",
        only=SCORING,
        help={"data_files": "local csv/json/parquet files instead of a dataset repo (FILE alone is the --split)"},
    )
    evaluate.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from .. import distributed
    from ..evaluation.evaluator import evaluate_model
    from ..evaluation.splitspec import parse_split
    from ..io import guard

    split = args.split or "validation"
    parse_split(split)  # a malformed spec is an EvaluationError that names the syntax, before any download
    scoring = Selection(task=args.task, report=split, **given(args, Selection, dest="selection"))
    scoring.check_fields()
    # The report files are checked before any download: an existing one is refused (unless --overwrite), an input
    # (the model's folder, a data file) always.
    data = [f for files in (scoring.data_files or {}).values() for f in ([files] if isinstance(files, str) else files)]
    local = [("model", args.model)] if os.path.isdir(args.model) else []
    inputs = guard.inputs_protected(local, files=data)
    for path in (args.json, args.predictions):
        check_report_file(path, overwrite=args.overwrite, protected=inputs)
    if args.split is None and scoring.data_files and len(scoring.data_files) == 1:
        split = next(iter(scoring.data_files))  # `--data-files test=FILE` is scored on test without --split test
    report = evaluate_model(
        args.model,
        args.task,
        split,
        limit=args.limit,
        token=args.token,
        **{name: getattr(scoring, name) for name in SCORING},
    )
    if distributed.launched_rank() != 0:  # Under torchrun every process holds the report; one prints it.
        return 0
    print(report.format_table())
    if args.json:
        write_file_atomic(args.json, json.dumps(report.to_dict(), indent=2))
    if args.predictions:
        write_file_atomic(args.predictions, json.dumps({r.split: r.predictions for r in report.results}))
    return 0
