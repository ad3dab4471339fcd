"""`hfsoup find`: a base model's fine-tunes and adapters on the Hub, pinned and vetted before anything downloads."""

from __future__ import annotations

import argparse

from ..constants import FIND_JOBS, FIND_SORTS
from ..io.staging import check_report_file, write_file_atomic
from .common import TOKEN_HELP, report_overwrite_arg

FIND_EPILOG = """\
examples:
  hfsoup find google-bert/bert-base-uncased --task sst2 --limit 20
  hfsoup find org/base --author org --sort likes --json found.json
  hfsoup soup --from-hub org/base --task sst2 --method greedy --limit 20 -o soup/   # soup what passes
"""


def add(verbs: argparse._SubParsersAction) -> None:
    find = verbs.add_parser(
        "find",
        help="list a base model's fine-tunes and adapters on the Hub, each checked before download",
        description="List the fine-tunes and adapters the Hub's model tree links to BASE, pin each to its SHA and "
        "check it against the base and the others from small files, safetensors headers and a few kilobytes of "
        "sampled weights. Exit status: 0 when at least one passed, 1 when none did.",
        epilog=FIND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    find.add_argument("base", metavar="BASE", help="the base model's Hub ID (org/name)")
    search_args(find)
    find.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="write what was found as JSON (to FILE, or stdout)"
    )
    find.add_argument("--token", help=TOKEN_HELP)
    report_overwrite_arg(find)
    find.set_defaults(func=run)


def search_args(parser: argparse.ArgumentParser) -> None:
    """The search's flags, which `soup --from-hub` shares (`--task` is soup's own there)."""
    if not any("--task" in a.option_strings for a in parser._actions):
        parser.add_argument("--task", help="a GLUE task (sst2, mrpc, ...): keep candidates with its labels")
    parser.add_argument("--pipeline-tag", help="only models with this pipeline tag (text-classification)")
    parser.add_argument("--author", help="only models of this user or organization")
    parser.add_argument("--search", help="only models whose ID contains this text")
    parser.add_argument("--sort", default="downloads", choices=FIND_SORTS, help="order, largest first")
    parser.add_argument("--limit", type=int, help="stop once this many candidates passed the checks")
    parser.add_argument(
        "--jobs", type=int, default=FIND_JOBS, help=f"candidates checked at once (default {FIND_JOBS})"
    )


def search(args: argparse.Namespace, base: str):  # noqa: ANN201 - a find.FindResult (imported lazily)
    from ..find import find_ingredients

    return find_ingredients(
        base,
        task=getattr(args, "task", None) or getattr(args, "selection.task", None),
        pipeline_tag=args.pipeline_tag,
        author=args.author,
        search=args.search,
        sort=args.sort,
        limit=args.limit,
        jobs=args.jobs,
        token=args.token,
    )


def run(args: argparse.Namespace) -> int:
    import json

    check_report_file(args.json, overwrite=args.overwrite)
    result = search(args, args.base)
    text = json.dumps(result.to_dict(), indent=2)
    if args.json == "-":
        print(text)
    else:
        print(result.format_table())
        if args.json:
            write_file_atomic(args.json, text)
    return 0 if result.passed else 1
