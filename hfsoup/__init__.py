"""hfsoup: model soups from Hugging Face Hub checkpoints.

Example:
    ```py
    >>> import hfsoup
    >>> result = hfsoup.soup(["org/ft-a", "org/ft-b@v1", "./ft-c"], output_dir="soup/")
    >>> result.output_dir
    PosixPath('/home/me/soup')
    ```
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# Public names, imported on first use so that `import hfsoup` (and the CLI's start-up) does not pay for torch. None
# may share a submodule's name: importing the submodule would rebind the package attribute to the module.
_LAZY = {
    "soup": "pipeline",
    "check": "pipeline",
    "cook_recipe": "pipeline",
    "CookResult": "pipeline",
    "Recipe": "recipe",
    "load_recipe": "recipe",
    "Sweep": "finetune",
    "plan_sweep": "finetune",
    "run_sweep": "finetune",
    "CompatReport": "compat",
    "SoupResult": "pipeline",
    "Selection": "selection.options",
    "ResultsTable": "selection.results",
    "parse_ingredient": "hub",
    "resolve": "hub",
    "fetch": "hub",
    "SOUPS": "soups",
    "evaluate_model": "evaluation.evaluator",
    "Evaluator": "evaluation.evaluator",
    "EvalReport": "evaluation.evaluator",
    "TASKS": "evaluation.tasks",
    "push": "publish.upload",
    "PushResult": "publish.upload",
    "build_card": "publish.card",
    "read_soup_folder": "publish.card",
    # Every public error class (tests/test_errors.py checks none is missing), in errors.py's order.
    "HfsoupError": "errors",
    "IngredientNotFoundError": "errors",
    "MissingWeightsError": "errors",
    "IncompatibleIngredientsError": "errors",
    "InvalidSoupArgumentsError": "errors",
    "MemoryLimitError": "errors",
    "OutputExistsError": "errors",
    "OutputCollisionError": "errors",
    "UnsafeStagingError": "errors",
    "HubError": "errors",
    "CorruptCheckpointError": "errors",
    "EvaluationError": "errors",
    "NotASoupError": "errors",
    "PushRefusedError": "errors",
    "InvalidRepoIdError": "errors",
    "MissingDependencyError": "errors",
    "InputLimitError": "errors",
    "IngredientConfigError": "errors",
    "RecipeError": "errors",
    "CorruptDownloadError": "errors",
    "DiskFullError": "errors",
    "SweepError": "errors",
    "UnsafePathError": "errors",
    "SoupWorkerError": "errors",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_exports(__name__, _LAZY)
