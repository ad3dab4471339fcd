"""`hfsoup soup`: average fine-tunes named by Hub ID or folder. Its flags are generated from the options' declarations:
`Output`, each method's `Options` (one group per method in `SOUPS`) and `Selection`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from .. import distributed
from ..errors import InvalidSoupArgumentsError
from ..io.output import Output
from ..options import add_flags, flag_of, flags_given, given
from ..selection.options import Selection
from ..soups import SOUPS
from .common import base_arg, ingredient_args
from .find import search, search_args

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
  hfsoup soup org/ft-a org/ft-b org/ft-c -o soup/ --method greedy --task sst2 --report validation \\
      --report org/sst2-shifted:validation          # distribution shift: one column per reported set
  hfsoup soup org/t5-a org/t5-b org/t5-c -o soup/ --method greedy --task sst2 \\
      --held-out 'validation[:50%]' --report 'validation[50%:]'   # T5 as text-to-text: label words scored
  hfsoup soup org/clip-a org/clip-b org/clip-c -o soup/ --method greedy --task image-classification \\
      --dataset org/images                          # CLIP zero-shot, or a classifier head (ViT, ...)
  hfsoup soup org/ft-a org/ft-b -o soup/ --method ties --base org/pretrained --density 0.2
  hfsoup soup org/ft-a org/ft-b -o soup/ --method slerp --t 0.3
  hfsoup soup org/clip-ft -o soup/ --method wise-ft --base openai/clip-vit-base-patch32 --alpha 0.5
"""


def add(verbs: argparse._SubParsersAction) -> None:
    soup = verbs.add_parser(
        "soup",
        help="average fine-tunes given by Hub ID or folder",
        description="Average fine-tuned checkpoints, tensor by tensor, into a new model folder.",
        epilog=SOUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingredient_args(soup, nargs="*")
    base_arg(soup)
    add_flags(soup, Output, dest="output")
    methods = "; ".join(f"{name}: {cls.description}" for name, cls in SOUPS.items())
    soup.add_argument(
        "--method", default="uniform", choices=list(SOUPS), help=f"soup method (default: uniform). {methods}"
    )
    soup.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
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
    for name, cls in SOUPS.items():
        group = soup.add_argument_group(f"{name} method", f"{cls.description} (also for the {name} baseline)")
        # Options several methods share (--weights, --scale, --density) are one flag, made by the first method
        # that declares it; `method_and_selection` hands its value to whichever method is chosen.
        add_flags(group, cls.Options, dest=f"method.{name}", skip=set(shared_flags(name)))
    group = soup.add_argument_group(
        "scoring and selection",
        "With --task, every ingredient, every soup method and the output ensemble are scored on a held-out part "
        "(where soups are selected) and each reported set (never used for selection); the table is printed and "
        "written to the output folder (results.json, results.csv, results.png).",
    )
    add_flags(group, Selection, dest="selection", required=False)
    hub_search = soup.add_argument_group(
        "ingredients from a search",
        "--from-hub BASE: the ingredients are the fine-tunes and adapters of BASE that `hfsoup find` passes (with "
        "--task, those with its labels); the rest are listed as excluded, and the query is recorded.",
    )
    hub_search.add_argument("--from-hub", metavar="BASE", help="find the ingredients on the Hub: BASE's children")
    search_args(hub_search)
    soup.set_defaults(func=run)


def shared_flags(name: str) -> dict[str, str]:
    """The options of method `name` whose flag an earlier method in `SOUPS` already makes: field -> that method."""
    import dataclasses

    from ..options import flag_of, spec_of

    first: dict[str, str] = {}
    shared: dict[str, str] = {}
    for other, cls in SOUPS.items():
        for f in dataclasses.fields(cls.Options):
            if not spec_of(f).cli:
                continue
            flag = flag_of(f)
            if other == name and first.get(flag, name) != name:
                shared[f.name] = first[flag]
            first.setdefault(flag, other)
        if other == name:
            return shared
    return shared


def _typed(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The options typed for method `name`, its shared flags' values included."""
    cls = SOUPS[name]
    typed = given(args, cls.Options, dest=f"method.{name}")
    for field, owner in shared_flags(name).items():
        key = f"method.{owner}.{field}"
        if hasattr(args, key):
            typed[field] = getattr(args, key)
    return typed


def method_and_selection(args: argparse.Namespace) -> tuple[Any, Selection | None]:
    """The chosen method with the options typed for it, and the selection.

    Flags of another method are refused rather than ignored: as in a recipe, the options given are the chosen
    method's, and baselines run with their defaults (the Python API takes baselines with options:
    `Selection(compare=[GreedySoup(accept="gt")])`)."""
    chosen = SOUPS[args.method]
    own = {flag_of(f) for f in dataclasses.fields(chosen.Options)}
    for name, cls in SOUPS.items():
        flags = [f for f in flags_given(args, cls.Options, dest=f"method.{name}") if f not in own]
        if name == args.method or not flags:
            continue
        finds = f"; a {args.method} soup finds its own weights from held-out scores" if chosen.needs_scores else ""
        raise InvalidSoupArgumentsError(
            f"{', '.join(flags)} {'is an option' if len(flags) == 1 else 'are options'} of the {name} method, not "
            f"{args.method}{finds}.",
            fix=f"Drop {flags[0]}, or use --method {name}. To compare a baseline with other options than its "
            f"defaults, pass it as an object from Python: Selection(compare=[{cls.__name__}(...)]).",
        )
    method = chosen(_typed(args, args.method))
    typed = given(args, Selection, dest="selection")
    selection = Selection(**typed, force=args.force) if typed.get("task") is not None else None
    return method, selection


def _ingredients(args: argparse.Namespace) -> tuple[list[str], dict | None]:
    """The ingredients named, or (`--from-hub`) found: each passing candidate pinned to its SHA, and the record."""
    if args.from_hub is None:
        if not args.ingredients:
            raise InvalidSoupArgumentsError(
                "A soup needs ingredients: none were named.",
                fix="Name two or more models (org/name, org/name@revision or folders), or find them with "
                "--from-hub BASE.",
            )
        return args.ingredients, None
    if args.ingredients:
        raise InvalidSoupArgumentsError(
            f"Both ingredients ({', '.join(args.ingredients[:3])}) and --from-hub {args.from_hub} were given.",
            fix="Name the ingredients, or let --from-hub find them: not both.",
        )
    from ..find import refuse_unless_enough

    result = search(args, args.from_hub)
    passed = refuse_unless_enough(result)
    for candidate in result.refused:
        logger.warning("excluded %s: %s", candidate.spec, "; ".join(candidate.reasons))
    return [c.spec for c in passed], result.to_dict()


def run(args: argparse.Namespace) -> int:
    method, selection = method_and_selection(args)
    output = Output(**given(args, Output, dest="output"))
    ingredients, found = _ingredients(args)
    from ..pipeline import soup  # torch and transformers: only once the arguments are known good

    result = soup(
        ingredients,
        output.dir,
        method=method,
        dtype=output.dtype,
        max_shard_size=output.max_shard_size,
        max_memory=output.max_memory,
        overwrite=output.overwrite,
        allow_pickle=args.allow_pickle,
        token=args.token,
        device=args.device,
        force=args.force,
        align_labels=not args.no_align_labels,
        resume=args.resume,
        selection=selection,
        base=args.base,
        found=found,
    )
    if distributed.launched_rank() != 0:  # Under torchrun every process holds the result; one reports it.
        return 0
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
    if result.base is not None:
        pinned = result.base.get("sha") or f"local folder {result.base.get('folder')}"
        print(f"  base    {result.base['spec']}  ({pinned})")
    for line in method.summary(result.method_record):
        print(f"  {line}")
    if result.results is not None:
        print(result.results.format_table())
    return 0
