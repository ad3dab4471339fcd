"""`hfsoup check`: the compatibility report, before any soup is made."""

from __future__ import annotations

import argparse
import os

from ..io.staging import check_report_file, write_file_atomic
from .common import base_arg, ingredient_args, report_overwrite_arg

CHECK_EPILOG = """\
examples:
  hfsoup check org/ft-a org/ft-b org/ft-c
  hfsoup check org/ft-a org/ft-b --base org/pretrained --json report.json
  hfsoup check org/ft-a org/ft-b --skip-weights      # headers and small files only
"""


def add(verbs: argparse._SubParsersAction) -> None:
    check = verbs.add_parser(
        "check",
        help="can these models be souped? (architecture, labels, tokenizer, shared init)",
        description="Print the compatibility report. Exit status: 0 souping may proceed, 1 it must not, 2 usage.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingredient_args(check)
    base_arg(check)
    check.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="write the report as JSON (to FILE, or stdout)"
    )
    check.add_argument(
        "--skip-weights",
        action="store_true",
        help="only the checks that need no weights download; shared init is estimated from a few kB of each remote "
        "ingredient's largest matrices, read by Range requests",
    )
    report_overwrite_arg(check)
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..io import guard
    from ..pipeline import check

    local = [(spec, spec) for spec in [*args.ingredients, *([args.base] if args.base else [])] if os.path.isdir(spec)]
    check_report_file(args.json, overwrite=args.overwrite, protected=guard.inputs_protected(local))
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
