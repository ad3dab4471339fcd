"""What an output folder may never be: a folder whose replacement would destroy an input or the user's files.

An output is written beside its final place and moved over it at the end (`output.staged_output`), and with
`--overwrite` whatever was there is deleted. So before any work the output path is compared with everything the run
reads or the user keeps: it may not be, contain, or lie inside an ingredient folder (symlinks resolved) or the
Hugging Face cache; it may not be the recipe's folder or contain it (an output inside the recipe's folder is the
normal case); it may not be the current folder or one of its ancestors, the home folder or a filesystem root. These
rules hold with or without `--overwrite`. And `--overwrite` replaces only what hfsoup itself wrote: an empty folder,
or a finished soup (a valid `hfsoup.json`, as `push` checks) holding nothing but the files it lists and its card.

Example:
    ```py
    >>> inputs = [Protected("ingredient 'ft-a'", Path("ft-a"))]
    >>> refuse_collisions(Path("ft-a"), inputs)
    Traceback (most recent call last):
    hfsoup.errors.OutputCollisionError: The output folder .../ft-a is the ingredient 'ft-a' ...
    ```
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import constants
from ..errors import NotASoupError, OutputCollisionError, OutputExistsError

# Files a finished soup holds besides those its hfsoup.json lists: the provenance itself and the card `push` writes.
_SOUP_EXTRAS = {constants.PROVENANCE_FILE, "README.md"}


@dataclass(frozen=True)
class Protected:
    """A folder the output must keep away from. `outside_only`: the output may lie inside it (the recipe's folder,
    the current folder), but neither be it nor contain it. `may_contain`: the output may hold it (a sweep folder,
    which is never replaced, holding its own base)."""

    what: str
    path: Path
    outside_only: bool = False
    may_contain: bool = False


def real(path: str | os.PathLike) -> Path:
    """`path` made absolute, `~` expanded and every symlink resolved (the folder that would really be touched)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def always_protected() -> list[Protected]:
    """What no output may be whatever the inputs: the current folder (and so its ancestors and the root), the home
    folder, and the Hugging Face home and cache."""
    from huggingface_hub import constants as hub_constants

    protected = [
        Protected("the current folder", real(Path.cwd()), outside_only=True),
        Protected("your home folder", real(Path.home()), outside_only=True),
        Protected("the Hugging Face cache", real(constants.hub_cache())),
        Protected("the Hugging Face home (HF_HOME)", real(os.environ.get("HF_HOME") or hub_constants.HF_HOME)),
    ]
    return protected


def inputs_protected(
    ingredients: Iterable[tuple[str, str | os.PathLike]] = (),
    *,
    recipe_dir: str | os.PathLike | None = None,
    files: Iterable[str | os.PathLike] = (),
) -> list[Protected]:
    """The inputs of one run: `(name, folder)` of each local ingredient, the recipe's folder, data files."""
    protected = [Protected(f"the ingredient {name!r}", real(folder)) for name, folder in ingredients]
    if recipe_dir is not None:
        protected.append(Protected("the recipe's folder", real(recipe_dir), outside_only=True))
    protected += [Protected(f"the data file {os.fspath(f)!r}", real(f)) for f in files]
    return protected


def collisions(output: str | os.PathLike, protected: Iterable[Protected]) -> list[tuple[str, Protected]]:
    """Every way `output` would destroy something protected: `(relation, protected)` with relation `is`,
    `contains` or `lies inside`. Filesystem roots are refused here too."""
    out = real(output)
    found: list[tuple[str, Protected]] = []
    if out.parent == out:
        found.append(("is", Protected("a filesystem root", out)))
    for item in protected:
        if out == item.path:
            found.append(("is", item))
        elif out in item.path.parents and not item.may_contain:
            found.append(("contains", item))
        elif item.path in out.parents and not item.outside_only:
            found.append(("lies inside", item))
    return found


def describe(output: str | os.PathLike, relation: str, item: Protected) -> str:
    """One collision in words (also a recipe problem's text)."""
    shown = "" if real(output) == item.path else f" ({item.path})"
    return f"{real(output)} {relation} {item.what}{shown}"


def refuse_collisions(output: str | os.PathLike, protected: Iterable[Protected]) -> None:
    """Raise `OutputCollisionError` when `output` is, contains or lies inside something protected."""
    found = collisions(output, [*always_protected(), *protected])
    if not found:
        return
    relation, item = found[0]
    more = "".join(f"; it also {r} {i.what}" for r, i in found[1:])
    raise OutputCollisionError(
        f"The output folder {describe(output, relation, item)}{more}: writing it would replace or delete what is "
        "there, so hfsoup refuses it, with or without --overwrite.",
        fix="Choose an output folder of its own with -o (e.g. soups/my-soup), outside every ingredient.",
        output=real(output),
        collides_with=item.path,
        relation=relation,
    )


def check_replaceable(out: Path) -> None:
    """With `--overwrite`: refuse an existing folder unless hfsoup wrote it (empty, or a finished soup and its
    card only). Anything else may be the user's, and is never deleted."""
    from .soupfolder import read_soup_folder

    if out.is_symlink() or not any(out.iterdir()):
        return  # the link itself is replaced, never its target; an empty folder holds nothing to lose
    fix = f"Empty or remove {out} yourself if you mean to replace it, or choose another output folder with -o."
    try:
        soup = read_soup_folder(out)
    except NotASoupError as e:
        raise OutputExistsError(
            f"The output folder {out} exists and was not written by hfsoup ({e.message}); --overwrite replaces only "
            "an hfsoup output.",
            fix=fix,
        ) from None
    listed = {str(f) for f in soup.provenance.get("files") or []} | _SOUP_EXTRAS
    foreign = sorted(p.name for p in out.iterdir() if p.name not in listed)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputExistsError(
            f"The output folder {out} holds an hfsoup soup, but also what hfsoup did not write there ({shown}); "
            "--overwrite would delete it.",
            fix=f"Move those out of {out} first, or choose another output folder with -o.",
        )
