"""`hfsoup push`: a soup folder to a Hub model repo, in one commit, with its model card."""

from __future__ import annotations

import argparse

from ..options import add_flags, given
from ..publish.target import Push
from .common import print_push

PUSH_EPILOG = """\
examples:
  hfsoup push soup/ me/my-soup --dry-run        # print the files and the model card, push nothing
  hfsoup push soup/ me/my-soup --private
  hfsoup push soup/ me/my-soup --branch v2 --commit-message "Greedy soup of 7 fine-tunes"
"""


def add(verbs: argparse._SubParsersAction) -> None:
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
    add_flags(push, Push, dest="push")
    push.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or 'hf auth login')")
    push.add_argument("--overwrite", action="store_true", help="push over a model that hfsoup did not make")
    push.add_argument("--dry-run", action="store_true", help="print the files and the card; push nothing")
    push.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..publish.upload import push

    result = push(
        args.output,
        args.repo_id,
        **given(args, Push, dest="push"),
        token=args.token,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
    )
    print_push(result)
    return 0
