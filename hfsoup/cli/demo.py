"""`hfsoup demo`: offline, end to end, on an in-process local Hub."""

from __future__ import annotations

import argparse


def add(verbs: argparse._SubParsersAction) -> None:
    demo = verbs.add_parser(
        "demo",
        help="offline end-to-end demo on a local Hub",
        description="Offline, on an in-process local Hub: fine-tune all-MiniLM-L6-v2 four ways on real drug reviews "
        "(cached after the first run), publish them, cook a greedy-soup recipe by Hub ID (check, soup, table, card, "
        "push) and reload the soup from the Hub; the results (soup, card, table, plot, recipe) are kept in "
        "./hfsoup-demo. --fast, in seconds, checks only the souping: three tiny seeded BERT models (not trained) are "
        "published to the local Hub and souped uniformly by Hub ID, every tensor is checked against a float64 average "
        "and the soup is loaded; it skips fine-tuning, scoring, greedy selection, the table and plot, the card, the "
        "push and the reload from the Hub.",
    )
    demo.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep the demo's results here (default: ./hfsoup-demo); the local Hub and "
        "its cache live in a temporary folder, deleted at the end",
    )
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier demo run in the folder (never a folder the demo did not write)",
    )
    demo.add_argument(
        "--fast",
        action="store_true",
        help="seconds: only soup three tiny seeded models by Hub ID and check the average (no fine-tuning, scoring, "
        "selection, table, plot, card, push or reload)",
    )
    demo.add_argument("--cache", metavar="DIR", help="where the MiniLM fine-tunes are kept (default: ~/.cache/hfsoup)")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(workdir=args.workdir, report=print, fast=args.fast, cache=args.cache, overwrite=args.overwrite)
    return 0
