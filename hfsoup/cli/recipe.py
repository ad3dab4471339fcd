"""`hfsoup validate` and `hfsoup cook`: a YAML recipe checked, or run end to end."""

from __future__ import annotations

import argparse

from ..io.output import Output
from ..options import add_flags, given
from ..selection.options import Selection
from .common import TOKEN_HELP, print_push

RECIPE_EPILOG = """\
examples:
  hfsoup validate recipes/glue-bert-base-mrpc.yaml       # every problem, with its location
  hfsoup cook recipes/glue-bert-base-mrpc.yaml -o soups/mrpc
  hfsoup cook recipes/glue-bert-base-mrpc.yaml --push me/bert-mrpc-soup --dry-run
  hfsoup cook my-recipe.yaml                               # rerun after an interruption: resumes
"""


def add(verbs: argparse._SubParsersAction) -> None:
    validate = verbs.add_parser(
        "validate",
        help="check a recipe file without running it",
        description="Load and validate a YAML recipe; every problem is listed with its location.",
        epilog=RECIPE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("recipe", metavar="RECIPE", help="a YAML recipe (see recipes/)")
    validate.set_defaults(func=run_validate)

    cook = verbs.add_parser(
        "cook",
        help="run a recipe: fetch, check, soup, evaluate, card and push",
        description="Run a YAML recipe end to end. A rerun resumes: a finished soup of the same recipe is reused, "
        "an interrupted one continues from its completed shards, an unchanged soup is not pushed twice.",
        epilog=RECIPE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cook.add_argument("recipe", metavar="RECIPE", help="a YAML recipe (see recipes/)")
    add_flags(
        cook,
        Output,
        dest="output",
        only=("dir",),
        required=False,
        help={"dir": "output folder (default: the recipe's output.dir)"},
    )
    cook.add_argument("--push", metavar="ORG/NAME", help="push the soup here (default: the recipe's push.repo_id)")
    cook.add_argument("--token", help=TOKEN_HELP)
    add_flags(cook, Output, dest="output", only=("overwrite", "max_memory"))
    cook.add_argument("--dry-run", action="store_true", help="make the soup, but only show what would be pushed")
    cook.add_argument(
        "--refresh",
        action="store_true",
        help="ingredients from a search: search the Hub again instead of reusing the pinned list of a finished output",
    )
    add_flags(cook, Selection, dest="selection", only=("hub_metrics",))
    cook.set_defaults(func=run_cook)


def run_validate(args: argparse.Namespace) -> int:
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if recipe.sweep is not None:
        from ..finetune import plan_sweep

        parts = [f"a fine-tune sweep of {len(plan_sweep(recipe.sweep))} runs", f"method {recipe.method.name}"]
    elif recipe.search is not None:
        parts = [f"the children of {recipe.search.base} found on the Hub", f"method {recipe.method.name}"]
    else:
        parts = [f"{len(recipe.ingredients)} ingredients", f"method {recipe.method.name}"]
    if recipe.evaluation is not None:
        parts.append(f"scored on {recipe.evaluation.task}")
    parts.append(f"output {recipe.output.dir}")
    if recipe.push is not None:
        parts.append(f"push to {recipe.push.repo_id}")
    print(f"{args.recipe}: valid ({', '.join(parts)})")
    return 0


def _memory_limit(typed: dict) -> str | None:
    """`--max-memory` as typed: None when absent (the recipe's applies), `"none"` when it lifts the recipe's."""
    if "max_memory" not in typed:
        return None
    return "none" if typed["max_memory"] is None else typed["max_memory"]


def run_cook(args: argparse.Namespace) -> int:
    from ..pipeline import cook_recipe

    result = cook_recipe(
        args.recipe,
        output_dir=given(args, Output, dest="output").get("dir"),
        push_to=args.push,
        token=args.token,
        overwrite=given(args, Output, dest="output").get("overwrite", False),
        dry_run=args.dry_run,
        hub_metrics=given(args, Selection, dest="selection").get("hub_metrics"),
        refresh=args.refresh,
        max_memory=_memory_limit(given(args, Output, dest="output")),
    )
    if result.reused:
        print(f"{result.output_dir} already holds this recipe's soup (delete it, or pass --overwrite, to cook again)")
    elif result.soup is not None:
        if result.soup.results is not None:
            print(result.soup.results.format_table())
        made = result.soup
        print(f"{made.method} soup of {len(made.ingredients)} ingredients written to {result.output_dir}")
    if result.push is not None:
        print_push(result.push)
    return 0
