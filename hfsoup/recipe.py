"""Recipes: a soup described as data (YAML), validated in one pass that reports every problem with its location.

    # hfsoup cook recipes/example.yaml
    name: sst2-greedy
    ingredients:
      - org/bert-sst2-a
      - org/bert-sst2-b@v1.0
      - {id: org/bert-sst2-c, revision: 3f2c...}
      - ./local-fine-tune
    method: {name: greedy, accept: ge}
    evaluation: {task: sst2, report: validation, fraction: 0.5, seed: 0}
    output: {dir: soups/sst2-greedy, dtype: auto}
    push: {repo_id: org/bert-sst2-soup, private: true}

Instead of `ingredients`, a recipe can name a fine-tune sweep (`hfsoup.finetune.Sweep`'s fields) whose runs are the
ingredients; `cook` trains it first, skipping the runs already complete:

    sweep: {base: google-bert/bert-base-uncased, task: sst2, output_dir: sweeps/sst2,
            grid: {learning_rate: [1e-5, 2e-5], seed: [0, 1]}, epochs: 3}

`load_recipe` turns the file into a `Recipe` (dataclasses); `cook` runs it: fetch, check, soup (and evaluation and
selection, when the recipe names a task), card and push. Rerun after an interruption, it resumes the soup from the
shards already written and does not push twice.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import schema
from .errors import HfsoupError, RecipeError, quote
from .find.options import Search
from .io import guard
from .io.output import Output
from .options import as_dict, candidate_lists
from .publish.target import Push
from .scrub import cut
from .selection.options import Selection, parse_report_set
from .soups import SOUPS, SoupMethod

if TYPE_CHECKING:
    from .finetune import Sweep


@dataclass
class Ingredient:
    """One ingredient: a Hub ID (with an optional revision) or a local folder."""

    id: str
    revision: str | None = None

    @property
    def spec(self) -> str:
        return self.id if self.revision is None else f"{self.id}@{self.revision}"


@dataclass
class Method:
    """The soup method's name in `SOUPS` and its options (the method's own `Options`; defaults when None)."""

    name: str = "uniform"
    options: Any = None

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = SOUPS[self.name].Options()

    def make(self) -> SoupMethod:
        return SOUPS[self.name](self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **as_dict(self.options)}


#: A recipe's `evaluation:`, `output:` and `push:` sections are these option dataclasses, declared with their stage.
Evaluation = Selection


@dataclass
class Recipe:
    """A validated recipe. Relative paths (local ingredients, output, data files) are relative to the recipe file."""

    ingredients: list[Ingredient]
    output: Output
    name: str | None = None
    base: str | None = None
    method: Method = field(default_factory=Method)
    evaluation: Evaluation | None = None
    push: Push | None = None
    force: bool = False
    sweep: Sweep | None = None  # trained by `cook` first; its runs are the ingredients
    search: Search | None = None  # `ingredients: {search: ...}`: found on the Hub by `cook` (hfsoup.find)
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as data (what the model card and the provenance record embed)."""
        from .publish.naming import public_path, scrub_paths

        data = asdict(self)
        data["method"] = self.method.to_dict()
        if isinstance(data.get("output"), dict) and data["output"].get("max_memory") is None:
            data["output"].pop("max_memory", None)  # no limit: as records were before the option existed
        if self.evaluation is not None:
            data["evaluation"] = as_dict(self.evaluation, recipe_only=True)
        source = data.pop("source")
        base = Path(source).parent if source is not None else Path.cwd()
        # Local paths were made absolute for the run; the record is published, so they go back to the recipe's
        # folder (a path outside it is named by its last component): never the user's absolute paths.
        data = _map_strings(data, lambda v: public_path(v, base) if os.path.isabs(v) else v)
        data = scrub_paths(data, [(str(base.absolute()), "."), (str(Path.home()), "~")])
        return {k: v for k, v in data.items() if v is not None}


def _map_strings(data: Any, change: Callable[[str], str]) -> Any:
    if isinstance(data, str):
        return change(data)
    if isinstance(data, dict):
        return {k: _map_strings(v, change) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_map_strings(v, change) for v in data]
    return data


# ---- validation: one pass, every problem with its location (hfsoup.schema) ----

TOP_KEYS = ("name", "ingredients", "sweep", "base", "method", "evaluation", "output", "push", "force")


def parse_recipe(data: Any, *, source: str | os.PathLike | None = None) -> Recipe:
    """Validate recipe data (already parsed YAML); raise `RecipeError` listing every problem with its location."""
    from .hub import parse_ingredient

    problems = schema.Problems()
    where = str(source) if source is not None else "recipe"
    if not isinstance(data, dict):
        raise RecipeError(
            f"{where} is not a recipe: expected a YAML mapping with at least 'ingredients' and 'output', got "
            f"{schema.type_name(data)}.",
            fix="See recipes/ in the hfsoup repository for examples.",
        )
    for key in data:
        if key not in TOP_KEYS:
            problems.add(schema.at("", key), f"unknown key (expected one of: {', '.join(TOP_KEYS)})")
    if "output" not in data:
        problems.add("output", "missing (required)")
    sweep = _sweep(data, problems)

    ingredients: list[Ingredient] = []
    raw = data.get("ingredients", [])
    search = None
    if isinstance(raw, dict):  # found on the Hub when cooked: `ingredients: {search: {base: ..., task: ...}}`
        if set(raw) != {"search"}:
            problems.add("ingredients", "a mapping of ingredients holds one key, search (or give a list)")
        search = schema.section(raw.get("search"), "ingredients.search", Search, problems, required=("base",))
        raw = []
    elif not isinstance(raw, list):
        problems.add("ingredients", f"expected a list, got {schema.type_name(raw)}")
        raw = []
    elif search is None and "ingredients" in data and len(raw) < max(_fewest(data.get("method")), 1):
        problems.add("ingredients", f"a soup needs at least {_fewest(data.get('method'))} ingredients, got {len(raw)}")
    for i, item in enumerate(raw):
        spot = f"ingredients[{i}]"
        if isinstance(item, str):
            item = {"id": item}
        ingredient = _ingredient(item, spot, problems)
        if ingredient is None:
            continue
        if not _looks_local(ingredient.id):  # folders are checked when the recipe is cooked, not when validated
            try:
                parse_ingredient(ingredient.spec)
            except HfsoupError as e:
                problems.add(spot, e.message)
                continue
            except OSError as e:  # a name the filesystem refuses to look up (too long, say) is no ingredient either
                problems.add(spot, f"{quote(ingredient.spec)} is neither a folder nor a Hub model ID ({e.strerror})")
                continue
        ingredients.append(ingredient)

    method = _method(data, len(raw), problems)
    evaluation = None
    if data.get("evaluation") is not None:
        evaluation = schema.section(data["evaluation"], "evaluation", Evaluation, problems, required=("task",))
    if SOUPS[method.name].needs_base and not data.get("base"):
        problems.add(
            "base",
            f"the {method.name} method merges task vectors (each fine-tune minus the base): name the "
            "pretrained model the ingredients were fine-tuned from",
        )
    lists = candidate_lists(method.options)
    if math.prod(len(v) for v in lists.values()) > schema.MAX_CANDIDATES:
        sizes = " x ".join(f"{len(v)} ({k})" for k, v in lists.items())
        problems.add("method", f"{sizes} candidates are more than the {schema.MAX_CANDIDATES} one soup may score")
    if data.get("evaluation") is None:
        for key, values in lists.items():
            if len(values) > 1:  # several candidates: chosen between by held-out scores, which need a task
                problems.add(
                    f"method.{key}",
                    f"{len(values)} candidates are chosen between on held-out data: give evaluation.task or one value",
                )
    if SOUPS[method.name].needs_scores and evaluation is None and "evaluation" not in data:
        problems.add("evaluation", f"the {method.name} method selects on held-out data: give evaluation.task")

    output = (
        schema.section(data.get("output"), "output", Output, problems, required=("dir",)) if "output" in data else None
    )
    push = None
    if data.get("push") is not None:
        push = schema.section(data["push"], "push", Push, problems, required=("repo_id",))
    for key, kind in (("name", schema.string(optional=True)), ("base", schema.string(optional=True))):
        if key in data and (message := kind.check(data[key])):
            problems.add(key, message)
    if "force" in data and (message := schema.boolean().check(data["force"])):
        problems.add("force", message)

    base_dir = Path(source).parent if source is not None else Path.cwd()
    if sweep is not None:
        sweep = _relative_sweep(sweep, base_dir)
    raw_output = data.get("output")
    if output is None and isinstance(raw_output, dict) and isinstance(raw_output.get("dir"), str):
        output = Output(dir=raw_output["dir"])  # other output keys are wrong: the folder is still checked
    recipe = Recipe(
        ingredients=[_relative(i, base_dir) for i in ingredients],
        output=output,  # type: ignore[arg-type]
        name=data.get("name"),
        # A local base is relative to the recipe's folder, like a local ingredient.
        base=_relative(Ingredient(data["base"]), base_dir).id if isinstance(data.get("base"), str) else None,
        method=method,
        evaluation=evaluation,
        push=push,
        force=bool(data.get("force", False)),
        sweep=sweep,
        search=search,
        source=Path(source) if source is not None else None,
    )
    if evaluation is not None and not problems.items:
        _relative_data(evaluation, base_dir)
    if output is not None:
        recipe.output.dir = str(_path(recipe.output.dir, base_dir))
        # In the same pass as every other problem: an output that would replace the recipe's own inputs.
        for collision in output_problems(recipe, recipe.output.dir):
            problems.add("output.dir", collision)
    if problems.items:
        count = len(problems.items)
        raise RecipeError(
            f"{where} has {count} problem{'s' if count > 1 else ''}, each listed below with its location.",
            fix="Fix them (recipes/ in the hfsoup repository holds complete examples), then run `hfsoup validate` "
            "again.",
            problems=problems.lines(),
        )
    return recipe


def _fewest(method: Any) -> int:
    """The fewest ingredients the recipe's method takes (2, or 1 for WiSE-FT); 2 when the method is malformed."""
    name = method.get("name", "uniform") if isinstance(method, dict) else method
    cls = SOUPS.get(name) if isinstance(name, str) else None
    return cls.min_ingredients if cls is not None else 2


def _ingredient(item: Any, where: str, problems: schema.Problems) -> Ingredient | None:
    if not isinstance(item, dict):
        problems.add(where, f"expected a mapping, got {schema.type_name(item)}")
        return None
    found = len(problems.items)
    for key in item:
        if key not in ("id", "revision"):
            problems.add(schema.at(where, key), "unknown key (expected one of: id, revision)")
    if "id" not in item:
        problems.add(f"{where}.id", "missing (required)")
    for key, kind in (("id", schema.string()), ("revision", schema.string(optional=True))):
        if key in item and (message := kind.check(item[key])):
            problems.add(f"{where}.{key}", message)
    return Ingredient(**item) if len(problems.items) == found else None


def _method(data: dict, n_ingredients: int, problems: schema.Problems) -> Method:
    """`method: greedy` or `method: {name: greedy, accept: gt}`: the options are the named method's `Options`; an
    option of another method is refused with its owner named, rather than ignored."""
    if "method" not in data:
        return Method()
    raw = {"name": data["method"]} if isinstance(data["method"], str) else data["method"]
    if not isinstance(raw, dict):
        problems.add("method", f"expected a method name or a mapping, got {schema.type_name(raw)}")
        return Method()
    name = raw.get("name", "uniform")
    if not isinstance(name, str) or name not in SOUPS:  # a list or a mapping is no name (nor hashable)
        problems.add("method.name", f"expected one of {', '.join(SOUPS)}, got {quote(name)}")
        return Method()
    cls = SOUPS[name]
    own = {f.name for f in schema.declared(cls.Options)}
    owners: dict[str, str] = {}  # an option several methods share is named by the first that declares it
    for other, c in SOUPS.items():
        for f in schema.declared(c.Options):
            if other != name:
                owners.setdefault(f.name, other)
    options: dict[str, Any] = {}
    misplaced: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key == "name":
            continue
        if key in own:
            options[key] = value
        elif key in owners:
            problems.add(f"method.{key}", f"applies to the {owners[key]} method, not {name}")
            misplaced.setdefault(owners[key], {})[key] = value
        else:
            expected = ", ".join(["name", *own])
            problems.add(schema.at("method", key), f"unknown key (expected one of: {expected})")
    # Every problem at once: a misplaced option is also checked as its own method would check it.
    for owner, values in misplaced.items():
        _method_options(SOUPS[owner], values, n_ingredients, problems)
    built = _method_options(cls, options, n_ingredients, problems)
    return Method(name) if built is None else Method(name, built)


def _method_options(cls: type[SoupMethod], values: dict, n_ingredients: int, problems: schema.Problems) -> Any:
    built = schema.section(values, "method", cls.Options, problems)
    if built is not None and n_ingredients:  # a sweep's runs are counted when it is cooked
        for key, message in cls(built).problems(n_ingredients):
            problems.add(f"method.{key}", message)
    return built


def protected_inputs(recipe: Recipe) -> list[guard.Protected]:
    """What the recipe's output must keep away from (`guard`): its folder, its local ingredients, data files, and
    for a sweep its local base and the folders of its runs and shared start."""
    # Every local ingredient, however it is spelled (an existing folder wins over a Hub ID, as in `parse_ingredient`).
    local = [i.id for i in recipe.ingredients if i.revision is None and (_looks_local(i.id) or _is_dir(Path(i.id)))]
    folders = [(spec, spec) for spec in local]
    files: list[str] = [f for fs in ((recipe.evaluation and recipe.evaluation.data_files) or {}).values() for f in fs]
    if recipe.sweep is not None:
        from .finetune import START_DIR, plan_sweep

        root = Path(recipe.sweep.output_dir)
        folders += [(f"sweep run {r.name}", root / r.name) for r in plan_sweep(recipe.sweep)]
        folders.append(("the sweep's shared start", root / START_DIR))
        if os.path.isabs(recipe.sweep.base):
            folders.append((recipe.sweep.base, recipe.sweep.base))
        files += [f for fs in (recipe.sweep.data_files or {}).values() for f in fs]
    recipe_dir = recipe.source.parent if recipe.source is not None else None
    return guard.inputs_protected(folders, recipe_dir=recipe_dir, files=files)


def output_problems(recipe: Recipe, output_dir: str | os.PathLike) -> list[str]:
    """Why `output_dir` may not be this recipe's output (`guard.collisions`), as one problem; empty when it may."""
    protected = [*guard.always_protected(), *protected_inputs(recipe)]
    found = guard.collisions(output_dir, protected)
    if not found:
        return []
    more = "".join(f"; it also {r} {item.what}" for r, item in found[1:])
    return [f"{guard.describe(output_dir, *found[0])}{more}: writing it would replace or delete what is there"]


# ---- a fine-tune sweep as the ingredients (hfsoup.finetune) ----


def _sweep(data: dict, problems: schema.Problems) -> Sweep | None:
    """`sweep:` instead of `ingredients:`: validated by hfsoup.finetune, its problems located under `sweep.`."""
    if "sweep" not in data:
        if "ingredients" not in data:
            problems.add("ingredients", "missing (required, or give a fine-tune sweep under 'sweep')")
        return None
    if "ingredients" in data:
        problems.add("sweep", "give either ingredients or a sweep whose runs are the ingredients, not both")
    from .finetune import make_sweep, sweep_problems

    found = sweep_problems(data["sweep"], where="sweep")
    for where, message in found:
        problems.add(where, message)
    return None if found else make_sweep(data["sweep"])


def _relative_sweep(sweep: Sweep, base_dir: Path) -> Sweep:
    """The sweep's folder, data files and a local base are relative to the recipe's folder."""
    sweep.output_dir = str(_path(sweep.output_dir, base_dir))
    if _looks_local(sweep.base) or _is_dir(base_dir / sweep.base):
        sweep.base = str(_path(sweep.base, base_dir))
    if sweep.data_files:
        sweep.data_files = {s: [str(_path(f, base_dir)) for f in files] for s, files in sweep.data_files.items()}
    return sweep


def _relative_data(evaluation: Evaluation, base_dir: Path) -> None:
    """Local data named by the recipe (data files, a dataset folder, the DATASET of a DATASET:SPLIT report set) is
    relative to the recipe's folder, like a local ingredient, so a recipe cooks the same from any current folder."""
    if evaluation.data_files:
        evaluation.data_files = {
            split: [str(_path(f, base_dir)) for f in ([files] if isinstance(files, str) else files)]
            for split, files in evaluation.data_files.items()
        }
    if isinstance(evaluation.dataset, str) and _local_data(evaluation.dataset, base_dir):
        evaluation.dataset = str(_path(evaluation.dataset, base_dir))
    reports = evaluation.report if isinstance(evaluation.report, list) else [evaluation.report]
    moved = []
    for text in reports:
        found = parse_report_set(text) if isinstance(text, str) else None
        if found is not None and found.dataset is not None and _local_data(found.dataset, base_dir):
            # Relative to the current folder rather than absolute: the set's text is its name in the table.
            where = os.path.relpath(_path(found.dataset, base_dir))
            text = f"{where}:{found.split}"
        moved.append(text)
    evaluation.report = moved if isinstance(evaluation.report, list) else moved[0]


def _local_data(spec: str, base_dir: Path) -> bool:
    """A dataset spec that names a local folder or file (`./x`, `/x`, `~/x`, or a name that exists beside the
    recipe); a Hub ID (`org/name@rev`) stays as it is."""
    return _looks_local(spec) or ("@" not in spec and _exists(base_dir / spec))


def _path(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name longer than the filesystem allows: no folder of that name exists
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # as in `_is_dir`: a name the filesystem refuses to look up names nothing
        return False


def _looks_local(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in spec)


def _relative(ingredient: Ingredient, base_dir: Path) -> Ingredient:
    """A local folder named relative to the recipe is resolved against the recipe's folder; Hub IDs stay."""
    local = _looks_local(ingredient.id) or _is_dir(base_dir / ingredient.id)
    if local and ingredient.revision is None:
        return Ingredient(str(_path(ingredient.id, base_dir)))
    return ingredient


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a YAML recipe.

    Example:
        ```py
        >>> recipe = load_recipe("recipes/glue-bert-base-mrpc.yaml")
        >>> recipe.method.name, [i.spec for i in recipe.ingredients][:1]
        ```
    """
    import yaml

    from .io import safeyaml

    path = Path(path)
    try:
        text = safeyaml.read_text(path)
        data = safeyaml.load(text)
    except OSError as e:
        raise RecipeError(f"Cannot read the recipe {path}: {e.strerror or e}.", fix="Check the path.") from e
    except safeyaml.YamlLimitError as e:
        raise RecipeError(f"{path} is refused: {e.message}.", fix=e.fix) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RecipeError(
            f"{path} is not valid YAML{at}: {cut(str(getattr(e, 'problem', None) or e), 300)}.",
            fix="Fix the YAML syntax.",
        ) from e
    return parse_recipe(data, source=path)
