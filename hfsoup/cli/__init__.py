"""The `hfsoup` command line: argparse verbs, and the one place errors are formatted for people."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from .. import __version__, scrub
from ..constants import DEFAULT_MAX_SHARD_SIZE, debug
from ..errors import HfsoupError
from ..io.staging import write_file_atomic

logger = logging.getLogger("hfsoup")

SOUP_EPILOG = """\
examples:
  hfsoup soup org/ft-a org/ft-b org/ft-c -o soup/
  hfsoup soup org/ft-a@v1.0 org/ft-b@3f1c2e... ./ft-c -o soup/ --weights 0.5,0.3,0.2
  hfsoup soup org/ft-a org/ft-b -o soup/ --dtype bfloat16 --max-shard-size 2GB --overwrite
  hfsoup soup org/ft-a org/ft-b org/ft-c -o soup/ --method greedy --task sst2      # held-out: half of validation
  hfsoup soup org/ft-a org/ft-b org/ft-c -o soup/ --method learned --by-layer --task mrpc --held-out train \\
      --held-out-size 1000 --report validation
  hfsoup soup ./ft-a ./ft-b -o soup/ --method greedy --task text-classification --data-files test=reviews.jsonl \\
      --report test --max-length 128
"""
CHECK_EPILOG = """\
examples:
  hfsoup check org/ft-a org/ft-b org/ft-c
  hfsoup check org/ft-a org/ft-b --base org/pretrained --json report.json
  hfsoup check org/ft-a org/ft-b --skip-weights      # headers and small files only
"""
EVAL_EPILOG = """\
examples:
  hfsoup eval org/ft-a --task sst2
  hfsoup eval org/ft-a@v1.0 --task mnli --json scores.json        # validation_matched and _mismatched
  hfsoup eval ./soup --task mrpc --limit 200 --data-files validation=dev.csv
  torchrun --nproc_per_node 4 -m hfsoup.cli eval ./soup --task qqp  # split across processes
  hfsoup eval google-t5/t5-small --task rte                        # T5 text-to-text: scored label words
  hfsoup eval openai/clip-vit-base-patch32 --task image-classification --dataset org/images  # zero-shot
"""
PUSH_EPILOG = """\
examples:
  hfsoup push soup/ me/my-soup --dry-run        # print the files and the model card, push nothing
  hfsoup push soup/ me/my-soup --private
  hfsoup push soup/ me/my-soup --branch v2 --commit-message "Greedy soup of 7 fine-tunes"
"""
FINETUNE_EPILOG = """\
examples:
  hfsoup finetune google-bert/bert-base-uncased --task mrpc -o sweeps/mrpc --grid learning_rate=1e-5,2e-5 seed=0,1
  hfsoup finetune ./base --task sst2 -o sweeps/sst2 --random 8 --seed 0 --range learning_rate=1e-5:5e-5 \\
      weight_decay=0:0.1 label_smoothing=0:0.1 --epochs 2 --push-org me
  hfsoup finetune ./base -o sweeps/reviews --data-files train=reviews.jsonl --grid seed=0,1,2 --max-steps 500
"""
RECIPE_EPILOG = """\
examples:
  hfsoup validate recipes/glue-bert-base-mrpc.yaml       # every problem, with its location
  hfsoup cook recipes/glue-bert-base-mrpc.yaml -o soups/mrpc
  hfsoup cook recipes/glue-bert-base-mrpc.yaml --push me/bert-mrpc-soup --dry-run
  hfsoup cook my-recipe.yaml                               # rerun after an interruption: resumes
"""
HUB_EPILOG = """\
examples:
  hfsoup hub serve --root ./hub-store --port 8080            # prints a write token for you, once
  hfsoup hub serve --root ./hub-store --user me --org team   # the token may also write to team/...
  hfsoup hub serve --root ./hub-store --token-file tokens.json
  HF_ENDPOINT=http://127.0.0.1:8080 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_... hf upload me/name ./folder

A token file (chmod 600) maps tokens to users and the organizations they may write to:
  {"tokens": [{"token": "hf_...", "user": "alice", "orgs": ["team"]}, {"token": "hf_...", "user": "bob"}]}
"""
MAIN_EPILOG = """\
examples:
  hfsoup demo                                   # offline, end to end, on real MiniLM fine-tunes
  hfsoup demo --fast                            # the same path with tiny models, in seconds
  hfsoup soup org/ft-a org/ft-b@main ./ft-c -o soup/
  hfsoup push soup/ me/my-soup                  # one commit, with a model card
  hfsoup cook recipes/glue-bert-base-mrpc.yaml  # a recipe: soup, scores, card, push
  hfsoup hub serve --root ./hub-store           # a local Hub for air-gapped teams

Set HFSOUP_DEBUG=1 to see tracebacks.
"""


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.5,0.3,0.2, got {text!r}") from e


def _ingredient_args(parser: argparse.ArgumentParser) -> None:
    """What `soup` and `check` share: the ingredients and how to read them."""
    parser.add_argument("ingredients", nargs="+", metavar="INGREDIENT", help="org/name, org/name@revision or a folder")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="accept pytorch_model.bin, loaded with weights_only=True"
    )
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the token from 'hf auth login')")
    parser.add_argument(
        "--no-align-labels", action="store_true", help="refuse, rather than reorder, heads with permuted labels"
    )


def build_parser() -> argparse.ArgumentParser:
    # Only light modules here: `hfsoup --help` and `--version` must not pay for importing torch.
    from ..constants import DTYPE_NAMES
    from ..soups import SOUPS

    parser = argparse.ArgumentParser(
        prog="hfsoup",
        description="Average fine-tuned Hugging Face models into a model soup (Wortsman et al., 2022).",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hfsoup {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more output (-vv for debug)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bars")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")

    soup = verbs.add_parser(
        "soup",
        help="average fine-tunes given by Hub ID or folder",
        description="Average fine-tuned checkpoints, tensor by tensor, into a new model folder.",
        epilog=SOUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _ingredient_args(soup)
    soup.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (must not exist)")
    soup.add_argument("--method", default="uniform", choices=sorted(SOUPS), help="soup method (default: uniform)")
    soup.add_argument("--weights", type=_weights, metavar="W1,W2,...", help="one weight per ingredient, summing to 1")
    soup.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES], help="output dtype (default: auto)")
    soup.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE", help="e.g. 5GB, 500MB")
    soup.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    soup.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier hfsoup output at the output path (never any other folder)",
    )
    soup.add_argument(
        "--resume",
        action="store_true",
        help="reuse the shards an interrupted run completed (each recomputed and compared, not rewritten)",
    )
    soup.add_argument(
        "--force",
        action="store_true",
        help="soup even if the compatibility check fails, or select on rows that are also reported (recorded)",
    )
    _selection_args(soup)
    soup.set_defaults(func=_cmd_soup)

    check = verbs.add_parser(
        "check",
        help="can these models be souped? (architecture, labels, tokenizer, shared init)",
        description="Print the compatibility report. Exit status: 0 souping may proceed, 1 it must not, 2 usage.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _ingredient_args(check)
    check.add_argument("--base", metavar="MODEL", help="the pretrained model they should all be fine-tuned from")
    check.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="write the report as JSON (to FILE, or stdout)"
    )
    check.add_argument(
        "--skip-weights", action="store_true", help="only the checks that need no weights download (no shared-init)"
    )
    check.set_defaults(func=_cmd_check)

    evaluate = verbs.add_parser(
        "eval",
        help="score a model on a GLUE task",
        description="Score a model (Hub ID, org/name@revision or folder) on a task's split; print a table.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("model", metavar="MODEL", help="org/name, org/name@revision or a folder")
    evaluate.add_argument(
        "--task",
        required=True,
        metavar="TASK",
        help="cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, or image-classification (with --dataset)",
    )
    evaluate.add_argument(
        "--split", default="validation", help="default: validation (for mnli: both validation_matched and _mismatched)"
    )
    evaluate.add_argument("--limit", type=int, metavar="N", help="score only the first N examples of each split")
    evaluate.add_argument("--json", metavar="FILE", help="write the scores, the model's SHA and the data's as JSON")
    evaluate.add_argument("--predictions", metavar="FILE", help="write the predictions, in row order, as JSON")
    evaluate.add_argument(
        "--dataset", metavar="ID[@REV]", help="another dataset repo or folder with the task's config"
    )
    evaluate.add_argument(
        "--data-files",
        nargs="+",
        metavar="[SPLIT=]FILE",
        help="local csv/json/parquet files instead of a dataset repo (FILE alone is the --split)",
    )
    evaluate.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per batch (default: 32)")
    evaluate.add_argument(
        "--max-length", type=int, metavar="N", help="truncate to N tokens (default: model max, <=512)"
    )
    evaluate.add_argument(
        "--kind",
        metavar="KIND",
        help="how to run the model, when its architecture allows several: sequence-classification, t5-text, "
        "image-classification, clip-zero-shot (default: chosen from the architecture)",
    )
    evaluate.add_argument("--token", help="Hub token (default: HF_TOKEN or the token from 'hf auth login')")
    _hub_metrics_arg(evaluate)
    evaluate.set_defaults(func=_cmd_eval)

    push = verbs.add_parser(
        "push",
        help="push a soup to the Hub in one commit, with a model card",
        description="Push a soup output folder to a Hub model repo in one commit. The model card (README.md) records "
        "the ingredients at their commits, the recipe, the compatibility verdict and the scores.",
        epilog=PUSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("output", metavar="OUTPUT_DIR", help="the folder 'hfsoup soup' wrote")
    push.add_argument("repo_id", metavar="ORG/NAME", help="the model repo (created if it does not exist)")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--branch", metavar="B", help="commit to this branch (created from main if needed)")
    push.add_argument("--commit-message", metavar="M", help="the commit's title")
    push.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or 'hf auth login')")
    push.add_argument("--overwrite", action="store_true", help="push over a model that hfsoup did not make")
    push.add_argument("--dry-run", action="store_true", help="print the files and the card; push nothing")
    push.set_defaults(func=_cmd_push)

    validate = verbs.add_parser(
        "validate",
        help="check a recipe file without running it",
        description="Load and validate a YAML recipe; every problem is listed with its location.",
        epilog=RECIPE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("recipe", metavar="RECIPE", help="a YAML recipe (see recipes/)")
    validate.set_defaults(func=_cmd_validate)

    cook = verbs.add_parser(
        "cook",
        help="run a recipe: fetch, check, soup, evaluate, card and push",
        description="Run a YAML recipe end to end. A rerun resumes: a finished soup of the same recipe is reused, "
        "an interrupted one continues from its completed shards, an unchanged soup is not pushed twice.",
        epilog=RECIPE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cook.add_argument("recipe", metavar="RECIPE", help="a YAML recipe (see recipes/)")
    cook.add_argument("-o", "--output", metavar="DIR", help="output folder (default: the recipe's output.dir)")
    cook.add_argument("--push", metavar="ORG/NAME", help="push the soup here (default: the recipe's push.repo_id)")
    cook.add_argument("--token", help="Hub token (default: HF_TOKEN or the token from 'hf auth login')")
    cook.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier hfsoup output at the output path (never any other folder)",
    )
    cook.add_argument("--dry-run", action="store_true", help="make the soup, but only show what would be pushed")
    _hub_metrics_arg(cook)
    cook.set_defaults(func=_cmd_cook)

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
    finetune.add_argument("--token", help="Hub token (default: HF_TOKEN or the token from 'hf auth login')")
    finetune.set_defaults(func=_cmd_finetune)

    hub = verbs.add_parser("hub", help="a local Hub-compatible server", epilog=HUB_EPILOG)
    hub_verbs = hub.add_subparsers(dest="hub_command", metavar="HUB_COMMAND", required=True)
    serve = hub_verbs.add_parser(
        "serve",
        help="serve model and dataset repos from a folder",
        description="Serve a folder as a Hub that huggingface_hub, transformers and datasets reach via HF_ENDPOINT.",
        epilog=HUB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--root", required=True, metavar="DIR", help="where repos are stored (created if missing)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default: 127.0.0.1)")
    serve.add_argument("--token-file", metavar="FILE", help="JSON file of tokens and their users (see below)")
    serve.add_argument("--user", help="without --token-file: the user of the token created at start (default: you)")
    serve.add_argument("--org", action="append", default=[], metavar="ORG", help="an organization it may write to")
    serve.add_argument(
        "--anonymous-writes",
        action="store_true",
        help="take writes without a token, to any namespace: only for a throwaway store",
    )
    serve.add_argument("--max-body-mb", type=float, default=16, help="largest JSON body, in MiB (default: 16)")
    serve.add_argument("--max-upload-gb", type=float, default=50, help="largest upload, in GiB (default: 50)")
    serve.add_argument("--timeout", type=float, default=30, help="seconds a connection may stall (default: 30)")
    serve.add_argument("--max-connections", type=int, default=64, help="connections served at once (default: 64)")
    serve.set_defaults(func=_cmd_hub_serve)

    demo = verbs.add_parser(
        "demo",
        help="offline end-to-end demo on a local Hub",
        description="Offline, on an in-process local Hub: fine-tune all-MiniLM-L6-v2 four ways on real drug reviews "
        "(cached after the first run), publish them, cook a greedy-soup recipe by Hub ID (check, soup, table, card, "
        "push) and reload the soup from the Hub. --fast: the same path with tiny models, in seconds.",
    )
    demo.add_argument("--workdir", metavar="DIR", help="keep the demo's files here (default: a temporary folder)")
    demo.add_argument("--fast", action="store_true", help="tiny seeded models instead of real MiniLM fine-tunes")
    demo.add_argument("--cache", metavar="DIR", help="where the MiniLM fine-tunes are kept (default: ~/.cache/hfsoup)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _selection_args(parser: argparse.ArgumentParser) -> None:
    """Scoring on a task: what greedy and learned soups select with, and what the results table reports."""
    group = parser.add_argument_group(
        "scoring and selection",
        "With --task, every ingredient, the uniform, greedy and learned soups and the output ensemble are scored on a "
        "held-out part (where soups are selected) and a reported part (never used for selection); the table is "
        "printed and written to the output folder (results.json, results.csv, results.png).",
    )
    group.add_argument(
        "--task",
        metavar="TASK",
        help="a GLUE task (sst2, mrpc, ...) or text-classification (labels from the first ingredient; data from "
        "--dataset or --data-files with text and label columns); needed by greedy and learned",
    )
    group.add_argument(
        "--report", default="validation", metavar="SPLIT", help="split to report on (default: validation)"
    )
    group.add_argument(
        "--held-out",
        metavar="SPLIT",
        help="split to select on (default: a seeded part of the --report split, the rest being reported)",
    )
    group.add_argument(
        "--held-out-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of a shared split held out (default: 0.5)",
    )
    group.add_argument("--held-out-size", type=int, metavar="N", help="hold out a seeded sample of N rows instead")
    group.add_argument("--seed", type=int, default=0, help="seed of the held-out sample (default: 0)")
    group.add_argument("--dataset", metavar="ID[@REV]", help="another dataset repo or folder with the task's config")
    group.add_argument(
        "--data-files",
        nargs="+",
        metavar="[SPLIT=]FILE",
        help="local csv/json/parquet files instead of a dataset repo (FILE alone is the --report split)",
    )
    group.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per batch (default: 32)")
    group.add_argument("--max-length", type=int, metavar="N", help="truncate to N tokens (default: model max, <=512)")
    group.add_argument(
        "--accept",
        default="ge",
        choices=["ge", "gt"],
        help="greedy: keep an ingredient when the held-out score does not drop (ge, the paper's rule) or rises (gt)",
    )
    group.add_argument(
        "--no-early-stop",
        action="store_true",
        help="greedy: score every candidate fully (same decisions, slower; for measuring)",
    )
    group.add_argument("--by-layer", action="store_true", help="learned: one weight per ingredient and tensor")
    group.add_argument("--learned-steps", type=int, default=20, metavar="N", help="learned: passes (default: 20)")
    group.add_argument("--learned-lr", type=float, default=0.05, metavar="LR", help="learned: Adam's rate (0.05)")
    group.add_argument(
        "--compare",
        default="uniform,greedy,learned,ensemble",
        metavar="LIST",
        help="baselines in the table: uniform,greedy,learned,ensemble (default: all) or none",
    )
    group.add_argument("--no-plot", action="store_true", help="do not draw results.png (no matplotlib needed)")
    _hub_metrics_arg(group)


def _hub_metrics_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--hub-metrics`, the same on every verb that scores: absent, `HFSOUP_HUB_METRICS` decides (None)."""
    parser.add_argument(
        "--hub-metrics",
        action="store_true",
        default=None,
        help="score with the Hub's evaluate-metric/<name> module, Python code downloaded from HF_ENDPOINT and run "
        "(default: the module shipped with hfsoup; also HFSOUP_HUB_METRICS=1)",
    )


def _selection(args: argparse.Namespace):  # noqa: ANN202 - tasting.Selection, imported lazily
    if args.task is None:
        return None
    from ..selection.stage import Selection

    compare = [] if args.compare.strip() == "none" else [c.strip() for c in args.compare.split(",") if c.strip()]
    return Selection(
        task=args.task,
        report=args.report,
        held_out=args.held_out,
        fraction=args.held_out_fraction,
        size=args.held_out_size,
        seed=args.seed,
        dataset=args.dataset,
        data_files=_data_files(args.data_files, args.report),
        batch_size=args.batch_size,
        max_length=args.max_length,
        accept=args.accept,
        early_stop=not args.no_early_stop,
        by_layer=args.by_layer,
        learned_steps=args.learned_steps,
        learned_lr=args.learned_lr,
        compare=compare,
        force=args.force,
        plot=not args.no_plot,
        hub_metrics=args.hub_metrics,
    )


def _cmd_soup(args: argparse.Namespace) -> int:
    from ..pipeline import soup

    if args.quiet and args.task:  # datasets draws its own progress bars (preparing, tokenizing)
        import datasets

        datasets.disable_progress_bars()
    result = soup(
        args.ingredients,
        args.output,
        method=args.method,
        weights=args.weights,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        allow_pickle=args.allow_pickle,
        token=args.token,
        device=args.device,
        force=args.force,
        align_labels=not args.no_align_labels,
        resume=args.resume,
        selection=_selection(args),
    )
    if result.report is not None:
        for finding in result.report.findings:
            if finding.level != "info":
                logger.warning(
                    "%s: %s%s",
                    finding.check,
                    f"[{finding.ingredient}] " if finding.ingredient else "",
                    finding.message,
                )
    print(f"{result.method} soup of {len(result.ingredients)} ingredients written to {result.output_dir}")
    for ingredient, weight in zip(result.ingredients, result.weights, strict=True):
        pinned = ingredient.get("sha") or f"local folder {ingredient.get('folder')}"
        print(f"  {weight:.4f}  {ingredient['spec']}  ({pinned})")
    if result.method == "greedy":
        record = result.method_record
        for decision in record.get("decisions", []):
            verdict = "kept" if decision["kept"] else "dropped"
            trial = "stopped early" if decision["trial"] is None else f"{decision['trial']:.4f}"
            print(f"  greedy: {decision['name']}: soup {decision['before']:.4f}, with it {trial}: {verdict}")
    if result.results is not None:
        print(result.results.format_table())
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import json

    from ..pipeline import check

    report = check(
        args.ingredients,
        base=args.base,
        weights=not args.skip_weights,
        align_labels=not args.no_align_labels,
        allow_pickle=args.allow_pickle,
        token=args.token,
    )
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_table())
        if args.json:
            write_file_atomic(args.json, json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


def _data_files(values: list[str] | None, split: str) -> dict[str, list[str]] | None:
    if not values:
        return None
    files: dict[str, list[str]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        files.setdefault(name if sep else split, []).append(path if sep else value)
    return files


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    import os

    from ..evaluation.evaluator import evaluate_model

    if args.quiet:  # datasets draws its own progress bars (preparing, tokenizing)
        import datasets

        datasets.disable_progress_bars()
    report = evaluate_model(
        args.model,
        args.task,
        args.split,
        dataset=args.dataset,
        data_files=_data_files(args.data_files, args.split),
        limit=args.limit,
        batch_size=args.batch_size,
        max_length=args.max_length,
        token=args.token,
        kind=args.kind,
        hub_metrics=args.hub_metrics,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # Under torchrun every process holds the report; one prints it.
        return 0
    print(report.format_table())
    if args.json:
        write_file_atomic(args.json, json.dumps(report.to_dict(), indent=2))
    if args.predictions:
        write_file_atomic(args.predictions, json.dumps({r.split: r.predictions for r in report.results}))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from ..publish.upload import push

    result = push(
        args.output,
        args.repo_id,
        private=args.private,
        branch=args.branch,
        commit_message=args.commit_message,
        token=args.token,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
    )
    _print_push(result)
    return 0


def _print_push(result) -> None:  # noqa: ANN001 - a publish.PushResult (imported lazily)
    if result.unchanged:
        print(f"{result.repo_id} (branch {result.branch}) already holds this soup: nothing to commit.")
        return
    if result.dry_run:
        print(f"Dry run: would push {len(result.files)} files to {result.repo_id} (branch {result.branch}):")
    else:
        print(f"Pushed {len(result.files)} files to {result.repo_id} (branch {result.branch}) in one commit:")
    for path, size in result.files:
        print(f"  {size:>12,}  {path}")
    for path in result.deleted:
        print(f"  {'deleted':>12}  {path}")
    if result.dry_run:
        print(f"\n{result.card}")
    else:
        print(f"{result.commit_sha}  {result.commit_url}")


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if recipe.sweep is not None:
        from ..finetune import plan_sweep

        parts = [f"a fine-tune sweep of {len(plan_sweep(recipe.sweep))} runs", f"method {recipe.method.name}"]
    else:
        parts = [f"{len(recipe.ingredients)} ingredients", f"method {recipe.method.name}"]
    if recipe.evaluation is not None:
        parts.append(f"scored on {recipe.evaluation.task}")
    parts.append(f"output {recipe.output.dir}")
    if recipe.push is not None:
        parts.append(f"push to {recipe.push.repo_id}")
    print(f"{args.recipe}: valid ({', '.join(parts)})")
    return 0


def _cmd_cook(args: argparse.Namespace) -> int:
    from ..pipeline import cook_recipe

    result = cook_recipe(
        args.recipe,
        output_dir=args.output,
        push_to=args.push,
        token=args.token,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
        hub_metrics=args.hub_metrics,
    )
    if result.reused:
        print(f"{result.output_dir} already holds this recipe's soup (delete it, or pass --overwrite, to cook again)")
    elif result.soup is not None:
        if result.soup.results is not None:
            print(result.soup.results.format_table())
        made = result.soup
        print(f"{made.method} soup of {len(made.ingredients)} ingredients written to {result.output_dir}")
    if result.push is not None:
        _print_push(result.push)
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
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
        data_files=_data_files(args.data_files, "train"),
        text_column=args.text_column,
        label_column=args.label_column,
        head_seed=args.head_seed,
        push_org=args.push_org,
        private=args.private or None,
    )
    for output in run_sweep(sweep, token=args.token):
        print(output)
    return 0


def _cmd_hub_serve(args: argparse.Namespace) -> int:
    from ..localhub.access import HubUser, load_token_file, new_token
    from ..localhub.server import LocalHubServer
    from ..localhub.store import check_namespace

    token = None
    if args.token_file:
        tokens = load_token_file(args.token_file)
    else:
        user = args.user or _default_hub_user()
        for name in [user, *args.org]:
            if not check_namespace(name):
                raise HfsoupError(
                    f"{name!r} is not a valid user or organization name for the local Hub.",
                    fix="Use letters, digits and '-_.' (at most 96 characters), e.g. --user alice.",
                )
        token = new_token()
        tokens = {token: HubUser(user, tuple(args.org))}
    server = LocalHubServer(
        args.root,
        tokens=tokens,
        anonymous_writes=args.anonymous_writes,
        host=args.host,
        port=args.port,
        max_json_bytes=int(args.max_body_mb * (1 << 20)),
        max_upload_bytes=int(args.max_upload_gb * (1 << 30)),
        timeout=args.timeout,
        max_connections=args.max_connections,
    )
    server.start()
    print(f"Local Hub serving {server.root} at {server.url}")
    if args.anonymous_writes:
        print("WARNING: --anonymous-writes: anyone on this machine may create, change and delete any repo.")
    if token is not None:
        # Printed here once, never logged or stored: whoever reads this terminal may write as this user.
        orgs = f" and organizations {', '.join(args.org)}" if args.org else ""
        print(f"Write token for user '{tokens[token].name}'{orgs} (shown only now): {token}")
    else:
        print(f"Tokens from {args.token_file}: {len(tokens)}")
    hint = "the write token above" if token is not None else "your token"
    print(f"Point clients at it with: export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<{hint}>")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def _default_hub_user() -> str:
    """The OS user's name as a Hub user name (characters the Hub refuses become '-'), or 'local'."""
    import getpass
    import re

    try:
        name = re.sub(r"[^A-Za-z0-9._-]", "-", getpass.getuser()).strip("-._")[:96]
    except (OSError, KeyError):  # no user name in this environment (a container without a passwd entry)
        name = ""
    return name or "local"


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(workdir=args.workdir, report=print, fast=args.fast, cache=args.cache)
    return 0


def _configure_logging(args: argparse.Namespace) -> logging.Handler:
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    scrub.remember(getattr(args, "token", None))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(scrub.ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    # Python warnings (from hfsoup or the libraries) go through the same scrubbing handler, not straight to stderr.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)
    if args.quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return handler


def format_error(exc: BaseException) -> str:
    """One paragraph for a person: what went wrong and, when known, the fix."""
    if not isinstance(exc, HfsoupError):
        exc = _as_hfsoup_error(exc) or exc
    if isinstance(exc, HfsoupError):
        text = exc.message if exc.fix is None else f"{exc.message} {exc.fix}"
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        text = (
            f"No space left on the device while writing {exc.filename or 'the output'}. Nothing was moved into "
            "place. Free some space or choose an output folder on another disk with -o."
        )
    else:
        said = scrub.cut(str(exc), 1000)  # it may quote input of any size, and a token
        text = f"Unexpected {type(exc).__name__}: {said}. This is probably a bug in hfsoup; please report it."
    # One line, unwrapped: terminals wrap it, and logs and greps keep it whole. Itemized problems (a recipe's) follow,
    # one per line, each with its location, unless the paragraph already names each (a compatibility refusal).
    listed = isinstance(exc, HfsoupError) and not exc.problems_in_message
    items = "".join(f"\n  - {p}" for p in exc.problems) if listed else ""
    return scrub.scrub(f"Error: {' '.join(text.split())}{items}\n(Set HFSOUP_DEBUG=1 to see the traceback.)")


def _restore_logging(handler: logging.Handler, level: int) -> None:
    """Undo `_configure_logging`: main() may be called again in the same process (tests, notebooks)."""
    logger.removeHandler(handler)
    logger.setLevel(level)
    logging.getLogger("py.warnings").removeHandler(handler)
    logging.captureWarnings(False)


def _as_hfsoup_error(exc: BaseException) -> HfsoupError | None:
    """Hub client errors that escaped a stage (the stages convert the ones they expect)."""
    from ..hub.errors import translate

    return translate(exc)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, a scheduler ending a job), raised in the main thread as Ctrl-C is, so that the same
    cleanup runs: the shard being written is discarded, never recorded as complete, and nothing is moved into place."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _on_sigterm_raise():  # noqa: ANN202 - the previous handler, to restore (None when none was installed)
    """Handle SIGTERM like SIGINT while a command runs; only the main thread can (main() may run in another)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logger.level
    handler = _configure_logging(args)
    previous = _on_sigterm_raise()
    try:
        return args.func(args)
    except _Terminated:
        print("Terminated (SIGTERM); nothing was moved into place.", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("Interrupted; nothing was moved into place.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the single place errors reach a person
        if debug():  # the traceback, scrubbed: chained exceptions may quote a server that echoed the token
            print(scrub.scrub("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
            return exc.exit_code if isinstance(exc, HfsoupError) else 1
        print(format_error(exc), file=sys.stderr)
        return exc.exit_code if isinstance(exc, HfsoupError) else 1
    finally:
        _restore_logging(handler, level)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
