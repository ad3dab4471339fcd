"""The base of each LoRA adapter ingredient: named by its config, checked, pinned like any ingredient.

An adapter's `adapter_config.json` names its base (`base_model_name_or_path`, and `revision` when PEFT recorded
one) as whatever string was passed to `from_pretrained`: a Hub ID, or a path on the trainer's disk. That string is
data from someone else, so:

- an adapter from the Hub names a Hub model, never a path (its config must not make hfsoup read the user's disk);
- a local adapter's relative path is read as PEFT reads it, from the current folder, and must stay inside it;
- an absolute path (or `~`, or one climbing out with `..`) is refused: the user names the base with `--base`.

`--base MODEL` names the base of every adapter: it overrides a path, and must agree with a Hub ID (the same repo).
All adapters must share one base (pinned to the same commit), which is fetched like an ingredient.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import IncompatibleIngredientsError, option
from ..io.adapter import ADAPTER_CONFIG_NAME, AdapterConfig, InvalidAdapterError
from ..io.confine import confined
from ..io.headers import bounded_repr
from .download import fetch, resolve
from .refs import IngredientRef, PinnedIngredient

logger = logging.getLogger(__name__)


def attach_bases(
    pinned: list[PinnedIngredient],
    *,
    base: PinnedIngredient | None,
    token: str | bool | None = None,
    allow_pickle: bool = False,
) -> None:
    """Read each adapter's config (a small file: no weights) and pin its base into `adapter_config` and
    `adapter_base`; refuse adapters whose bases differ, from each other or from `base` (the user's `--base`)."""
    adapters = [i for i in pinned if i.is_adapter]
    if not adapters:
        return
    bases: dict[object, PinnedIngredient] = {}
    if base is not None:
        bases[_key(base)] = base
    for adapter in adapters:
        folder = fetch(adapter, token=token, weights=False)
        where = f"Adapter {adapter.name!r}"
        config = AdapterConfig.read(confined(folder, ADAPTER_CONFIG_NAME, where=where), where=where)
        adapter.adapter_config = config
        if base is not None:
            _agree(adapter, config, base)
            adapter.adapter_base = base
            continue
        ref = _named_base(adapter, config)
        found = next((b for b in bases.values() if b.ref == ref), None)
        if found is None:
            found = resolve(ref, token=token, allow_pickle=allow_pickle)
            if found.is_adapter:
                raise InvalidAdapterError(
                    f"{where} names {found.name!r} as its base, which is itself an adapter.",
                    fix=f"Name the base model with {option('base', metavar='MODEL')}.",
                )
            found = bases.setdefault(_key(found), found)
        adapter.adapter_base = found
    distinct = {_key(a.adapter_base) for a in adapters}  # type: ignore[arg-type]
    if len(distinct) > 1:
        named = [f"{a.name} -> {a.adapter_base.name} at {a.adapter_base.sha or 'a local folder'}" for a in adapters]  # type: ignore[union-attr]
        raise IncompatibleIngredientsError(
            f"The LoRA adapters were trained on different bases ({len(distinct)}); a soup of adapters is the soup of "
            "their merged models, which must share one base.",
            fix="Soup adapters of one base (pinned to one commit), or merge each with peft and soup the merged models "
            "if they truly share an initialization.",
            problems=named,
        )


def _key(ingredient: PinnedIngredient) -> object:
    if ingredient.ref.path is not None:
        return ("path", str(ingredient.ref.path))
    return ("hub", (ingredient.ref.repo_id or "").lower(), ingredient.sha)


def _agree(adapter: PinnedIngredient, config: AdapterConfig, base: PinnedIngredient) -> None:
    """`--base` must be the repo the adapter's config names, when it names a Hub ID (a path it overrides)."""
    named = config.base
    if named is None or base.ref.repo_id is None or _path_like(named):
        return
    named_repo, given = named.partition("@")[0].lower(), base.ref.repo_id.lower()
    # A legacy canonical name (`bert-base-uncased`) is the repo it moved to under an org (`google-bert/...`).
    if named_repo != given and not ("/" not in named_repo and given.split("/")[-1] == named_repo):
        raise IncompatibleIngredientsError(
            f"Adapter {adapter.name!r} was trained on {bounded_repr(named)} (its {ADAPTER_CONFIG_NAME}), and "
            f"{option('base', metavar='MODEL')} names {base.ref.repo_id!r}: an adapter merged into another base is "
            "another model.",
            fix="Name the adapter's own base with --base, or leave --base out to use the one its config names.",
        )


def _path_like(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or os.path.isabs(name)


def _named_base(adapter: PinnedIngredient, config: AdapterConfig) -> IngredientRef:
    """The base the adapter's config names, as a ref hfsoup may read; refused when it may not."""
    where = f"Adapter {adapter.name!r}"
    fix = f"Name the base yourself with {option('base', metavar='MODEL')} (a Hub ID or a folder)."
    named = config.base
    if not named:
        raise InvalidAdapterError(f"{where}: its {ADAPTER_CONFIG_NAME} names no base_model_name_or_path.", fix=fix)
    spec = named if config.revision is None else f"{named}@{config.revision}"
    if adapter.ref.path is not None:  # a local adapter: a relative folder is read from here, as PEFT does
        candidate = Path(os.path.expanduser(named)) if named.startswith("~") else Path(named)
        if candidate.is_absolute() or named.startswith("~"):
            raise InvalidAdapterError(
                f"{where} names its base by the absolute path {bounded_repr(named)}; hfsoup does not follow "
                "absolute paths from a config (a config someone else wrote could make it read any folder).",
                fix=fix,
            )
        here = Path.cwd().resolve()
        real = (here / candidate).resolve()
        if ".." in candidate.parts or not real.is_relative_to(here):
            raise InvalidAdapterError(
                f"{where} names its base {bounded_repr(named)}, which leaves the current folder; hfsoup reads a "
                "base a config names only inside the current folder.",
                fix=fix,
            )
        if real.is_dir():
            return IngredientRef(named, path=real)
    elif _path_like(named):
        raise InvalidAdapterError(
            f"{where} (on the Hub) names its base by the path {bounded_repr(named)}; a Hub adapter's config may name "
            "a Hub model only, never a folder on this machine.",
            fix=fix,
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:  # a Hub ID, never a local folder of the same spelling
        validate_repo_id(named)
    except HFValidationError as e:
        raise InvalidAdapterError(
            f"{where} names its base {bounded_repr(named)}: no such folder here, and not a Hub ID ({e}).", fix=fix
        ) from None
    ref = IngredientRef(spec, repo_id=named, revision=config.revision)
    logger.info("%s: its base is %s", adapter.name, ref.spec)
    return ref
