"""What several verbs share: the ingredient arguments, the token flag, and printing a push."""

from __future__ import annotations

import argparse

TOKEN_HELP = "Hub token (default: HF_TOKEN or the token from 'hf auth login')"


def ingredient_args(parser: argparse.ArgumentParser, *, nargs: str = "+") -> None:
    """What `soup` and `check` share: the ingredients and how to read them."""
    parser.add_argument(
        "ingredients", nargs=nargs, metavar="INGREDIENT", help="org/name, org/name@revision or a folder"
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="accept pytorch_model.bin, loaded with weights_only=True"
    )
    parser.add_argument("--token", help=TOKEN_HELP)
    parser.add_argument(
        "--no-align-labels", action="store_true", help="refuse, rather than reorder, heads with permuted labels"
    )


BASE_HELP = (
    "the pretrained model (Hub ID or folder) the ingredients were fine-tuned from: pinned, fetched and checked like "
    "an ingredient; required by the methods defined by task vectors (theta_i - base)"
)


def report_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """`--overwrite` for the verbs that write report files (`--json FILE`): an existing file is refused without it."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing report file (never an input or one inside it)"
    )


def base_arg(parser: argparse.ArgumentParser) -> None:
    """`--base MODEL`, the one declaration `soup` and `check` share (a recipe's `base:` key)."""
    parser.add_argument("--base", metavar="MODEL", help=BASE_HELP)


def print_push(result) -> None:  # noqa: ANN001 - a publish.upload.PushResult (imported lazily)
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
