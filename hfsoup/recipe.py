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

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HfsoupError, RecipeError, quote
from .evaluation.data import data_files_problem
from .io import guard
from .scrub import cut

if TYPE_CHECKING:
    from .finetune import Sweep

METHODS = ("uniform", "greedy", "learned")
DTYPES = ("auto", "float32", "float16", "bfloat16")


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
    """The soup method and its options (those that do not apply to it are refused)."""

    name: str = "uniform"
    weights: list[float] | None = None  # uniform
    accept: str = "ge"  # greedy
    early_stop: bool = True  # greedy
    by_layer: bool = False  # learned
    steps: int = 20  # learned
    lr: float = 0.05  # learned


@dataclass
class Evaluation:
    """Where the soup is scored: the task, the reported split and the held-out part that selection uses."""

    task: str
    report: str = "validation"
    held_out: str | None = None
    fraction: float = 0.5
    size: int | None = None
    seed: int = 0
    dataset: str | None = None
    data_files: dict[str, list[str]] | None = None
    batch_size: int = 32
    max_length: int | None = None
    compare: list[str] | None = None
    plot: bool = True
    force: bool = False


@dataclass
class Output:
    dir: str
    dtype: str = "auto"
    max_shard_size: str = "5GB"
    overwrite: bool = False


@dataclass
class Push:
    repo_id: str
    private: bool = False
    branch: str | None = None
    commit_message: str | None = None


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
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as data (what the model card and the provenance record embed)."""
        from .publish.naming import public_path, scrub_paths

        data = asdict(self)
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


# ---- validation: one pass, every problem with its location ----


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


def _at(where: str, key: Any) -> str:
    """The location of `key` under `where`, for a problem: an odd or huge key is quoted, and cut."""
    if isinstance(key, str) and 0 < len(key) <= 64 and key.isprintable():
        return f"{where}.{key}" if where else key
    return f"{where}[{quote(key, limit=64)}]"


def _type_name(value: Any) -> str:
    return (
        "null"
        if value is None
        else {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "list": "a list",
            "dict": "a mapping",
        }.get(type(value).__name__, type(value).__name__)
    )


def _section(
    data: Any,
    where: str,
    cls: type,
    problems: _Problems,
    *,
    checks: Mapping[str, Callable[[Any], str | None]],
    required: tuple[str, ...] = (),
) -> Any:
    """Build `cls` from the mapping `data`: unknown keys, missing keys and failed checks are all recorded."""
    if not isinstance(data, dict):
        problems.add(where, f"expected a mapping, got {_type_name(data)}")
        return None
    ok = True
    for key in data:
        if key not in checks:
            problems.add(_at(where, key), f"unknown key (expected one of: {', '.join(checks)})")
            ok = False
    for key in required:
        if key not in data:
            problems.add(f"{where}.{key}", "missing (required)")
            ok = False
    for key, value in data.items():
        if key in checks:
            message = checks[key](value)
            if message:
                problems.add(f"{where}.{key}", message)
                ok = False
    return cls(**data) if ok else None


def _is(kind: type | tuple[type, ...], *, optional: bool = False, label: str = "") -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"expected {label}, got {_type_name(value)}"
        if not isinstance(value, kind):
            return f"expected {label}, got {_type_name(value)}"
        return None

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}, got {quote(value)}"

    return check


def _positive_int(optional: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"expected a positive integer, got {quote(value)}"
        return None

    return check


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        return f"expected a number between 0 and 1 (exclusive), got {quote(value)}"
    return None


def _weights(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        return f"expected a list of numbers, got {_type_name(value)}"
    if any(isinstance(w, bool) or not isinstance(w, int | float) or w < 0 for w in value):
        return f"expected non-negative numbers, got {quote(value)}"
    return None


def _string_list(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"expected a list of strings, got {quote(value)}"
    return None


_STR = _is(str, label="a string")
_OPT_STR = _is(str, optional=True, label="a string")
_BOOL = _is(bool, label="true or false")
_NUMBER = _is((int, float), label="a number")

METHOD_CHECKS = {
    "name": _one_of(METHODS),
    "weights": _weights,
    "accept": _one_of(("ge", "gt")),
    "early_stop": _BOOL,
    "by_layer": _BOOL,
    "steps": _positive_int(),
    "lr": _NUMBER,
}
# Which method each option belongs to, so that `accept` on a uniform soup is refused rather than ignored.
METHOD_OPTIONS = {
    "weights": "uniform",
    "accept": "greedy",
    "early_stop": "greedy",
    "by_layer": "learned",
    "steps": "learned",
    "lr": "learned",
}
EVALUATION_CHECKS = {
    "task": _STR,
    "report": _STR,
    "held_out": _OPT_STR,
    "fraction": _fraction,
    "size": _positive_int(optional=True),
    "seed": _is(int, label="an integer"),
    "dataset": _OPT_STR,
    "data_files": data_files_problem,
    "batch_size": _positive_int(),
    "max_length": _positive_int(optional=True),
    "compare": _string_list,
    "plot": _BOOL,
    "force": _BOOL,
}


def _size(value: Any) -> str | None:
    from .io.checkpoint import parse_size

    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"expected a size such as 5GB or 500MB, got {_type_name(value)}"
    try:
        parse_size(value)
    except ValueError as e:
        return str(e)
    return None


OUTPUT_CHECKS = {"dir": _STR, "dtype": _one_of(DTYPES), "max_shard_size": _size, "overwrite": _BOOL}
PUSH_CHECKS = {"repo_id": _STR, "private": _BOOL, "branch": _OPT_STR, "commit_message": _OPT_STR}
TOP_KEYS = ("name", "ingredients", "sweep", "base", "method", "evaluation", "output", "push", "force")


def parse_recipe(data: Any, *, source: str | os.PathLike | None = None) -> Recipe:
    """Validate recipe data (already parsed YAML); raise `RecipeError` listing every problem with its location."""
    from .hub import parse_ingredient

    problems = _Problems()
    where = str(source) if source is not None else "recipe"
    if not isinstance(data, dict):
        raise RecipeError(
            f"{where} is not a recipe: expected a YAML mapping with at least 'ingredients' and 'output', got "
            f"{_type_name(data)}.",
            fix="See recipes/ in the hfsoup repository for examples.",
        )
    for key in data:
        if key not in TOP_KEYS:
            problems.add(_at("", key), f"unknown key (expected one of: {', '.join(TOP_KEYS)})")
    if "output" not in data:
        problems.add("output", "missing (required)")
    sweep = _sweep(data, problems)

    ingredients: list[Ingredient] = []
    raw = data.get("ingredients", [])
    if not isinstance(raw, list):
        problems.add("ingredients", f"expected a list, got {_type_name(raw)}")
        raw = []
    elif "ingredients" in data and len(raw) < 2:
        problems.add("ingredients", f"a soup needs at least 2 ingredients, got {len(raw)}")
    for i, item in enumerate(raw):
        spot = f"ingredients[{i}]"
        if isinstance(item, str):
            item = {"id": item}
        ingredient = _section(
            item, spot, Ingredient, problems, checks={"id": _STR, "revision": _OPT_STR}, required=("id",)
        )
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

    method = Method()
    if "method" in data:
        raw_method = {"name": data["method"]} if isinstance(data["method"], str) else data["method"]
        method = _section(raw_method, "method", Method, problems, checks=METHOD_CHECKS) or method
        if isinstance(raw_method, dict):
            for key, owner in METHOD_OPTIONS.items():
                if key in raw_method and raw_method.get("name", "uniform") != owner:
                    problems.add(
                        f"method.{key}", f"applies to the {owner} method, not {raw_method.get('name', 'uniform')}"
                    )
            if method.weights is not None and raw and len(method.weights) != len(raw):
                problems.add("method.weights", f"{len(method.weights)} weights for {len(raw)} ingredients")

    evaluation = None
    if data.get("evaluation") is not None:
        evaluation = _section(
            data["evaluation"], "evaluation", Evaluation, problems, checks=EVALUATION_CHECKS, required=("task",)
        )
    if method.name in ("greedy", "learned") and evaluation is None and "evaluation" not in data:
        problems.add("evaluation", f"the {method.name} method selects on held-out data: give evaluation.task")

    output = (
        _section(data.get("output"), "output", Output, problems, checks=OUTPUT_CHECKS, required=("dir",))
        if "output" in data
        else None
    )
    push = None
    if data.get("push") is not None:
        push = _section(data["push"], "push", Push, problems, checks=PUSH_CHECKS, required=("repo_id",))
    for key, check in (("name", _OPT_STR), ("base", _OPT_STR), ("force", _BOOL)):
        if key in data and (message := check(data[key])):
            problems.add(key, message)

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
        base=data.get("base"),
        method=method,
        evaluation=evaluation,
        push=push,
        force=bool(data.get("force", False)),
        sweep=sweep,
        source=Path(source) if source is not None else None,
    )
    if output is not None:
        recipe.output.dir = str(_path(recipe.output.dir, base_dir))
        if recipe.evaluation is not None and recipe.evaluation.data_files:
            recipe.evaluation.data_files = {
                split: [str(_path(f, base_dir)) for f in ([files] if isinstance(files, str) else files)]
                for split, files in recipe.evaluation.data_files.items()
            }
        # In the same pass as every other problem: an output that would replace the recipe's own inputs.
        for collision in output_problems(recipe, recipe.output.dir):
            problems.add("output.dir", collision)
    if problems.items:
        count = len(problems.items)
        raise RecipeError(
            f"{where} has {count} problem{'s' if count > 1 else ''}, each listed below with its location.",
            fix="Fix them (recipes/ in the hfsoup repository holds complete examples), then run `hfsoup validate` "
            "again.",
            problems=problems.items,
        )
    return recipe


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


def _sweep(data: dict, problems: _Problems) -> Sweep | None:
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


def _path(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name longer than the filesystem allows: no folder of that name exists
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
