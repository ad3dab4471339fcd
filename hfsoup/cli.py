"""The `hfsoup` command line: argparse verbs, and the one place errors are formatted for people."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .constants import DEFAULT_MAX_SHARD_SIZE, debug
from .errors import HfsoupError
from .output import write_file_atomic

logger = logging.getLogger("hfsoup")

SOUP_EPILOG = """\
examples:
  hfsoup soup org/ft-a org/ft-b org/ft-c -o soup/
  hfsoup soup org/ft-a@v1.0 org/ft-b@3f1c2e... ./ft-c -o soup/ --weights 0.5,0.3,0.2
  hfsoup soup org/ft-a org/ft-b -o soup/ --dtype bfloat16 --max-shard-size 2GB --overwrite
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
HUB_EPILOG = """\
examples:
  hfsoup hub serve --root ./hub-store --port 8080
  HF_ENDPOINT=http://127.0.0.1:8080 HF_HUB_DISABLE_XET=1 hf download org/name
"""
MAIN_EPILOG = """\
examples:
  hfsoup demo                                   # offline, end to end, in a minute
  hfsoup soup org/ft-a org/ft-b@main ./ft-c -o soup/
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
    from .constants import DTYPE_NAMES
    from .soups import SOUPS

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
    soup.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    soup.add_argument(
        "--resume", action="store_true", help="reuse the shards an interrupted run completed (checksums verified)"
    )
    soup.add_argument("--force", action="store_true", help="soup even if the compatibility check fails (recorded)")
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
    evaluate.set_defaults(func=_cmd_eval)

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
    serve.set_defaults(func=_cmd_hub_serve)

    demo = verbs.add_parser(
        "demo",
        help="offline end-to-end demo on a local Hub",
        description="Publish tiny fine-tunes to an in-process local Hub, soup them by Hub ID, load the soup.",
    )
    demo.add_argument("--workdir", metavar="DIR", help="keep the demo's files here (default: a temporary folder)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _cmd_soup(args: argparse.Namespace) -> int:
    from .cook import soup

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
        pinned = ingredient.get("sha") or ingredient.get("path")
        print(f"  {weight:.4f}  {ingredient['spec']}  ({pinned})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import json

    from .cook import check

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

    from .evaluator import evaluate_model

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
    )
    if int(os.environ.get("RANK", "0")) != 0:  # Under torchrun every process holds the report; one prints it.
        return 0
    print(report.format_table())
    if args.json:
        write_file_atomic(args.json, json.dumps(report.to_dict(), indent=2))
    if args.predictions:
        write_file_atomic(args.predictions, json.dumps({r.split: r.predictions for r in report.results}))
    return 0


def _cmd_hub_serve(args: argparse.Namespace) -> int:
    from .testing.hub_server import LocalHubServer

    server = LocalHubServer(args.root, host=args.host, port=args.port)
    server.start()
    print(f"Local Hub serving {server.root} at {server.url}")
    print(f"Point clients at it with: export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1")
    print("Press Ctrl-C to stop.")
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(workdir=args.workdir, report=print)
    return 0


def _configure_logging(args: argparse.Namespace) -> logging.Handler:
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
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
        text = f"Unexpected {type(exc).__name__}: {exc}. This is probably a bug in hfsoup; please report it."
    # One line, unwrapped: terminals wrap it, and logs and greps keep it whole.
    return f"Error: {' '.join(text.split())}\n(Set HFSOUP_DEBUG=1 to see the traceback.)"


def _as_hfsoup_error(exc: BaseException) -> HfsoupError | None:
    """Hub client errors that escaped a stage (the stages convert the ones they expect)."""
    try:
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:  # pragma: no cover
        return None
    from .errors import HubError

    if isinstance(exc, HfHubHTTPError):
        return HubError(f"The Hub answered: {str(exc).splitlines()[0]}", fix="Check HF_ENDPOINT and your token.")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logger.level
    handler = _configure_logging(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("Interrupted; nothing was moved into place.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the single place errors reach a person
        if debug():
            raise
        print(format_error(exc), file=sys.stderr)
        return exc.exit_code if isinstance(exc, HfsoupError) else 1
    finally:
        # main() may be called again in the same process (tests, notebooks): leave logging as it was.
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
