"""Public names a package re-exports, imported on first use: `import hfsoup` (and the CLI's start-up) must not pay for
torch, and a stage's package must not load the whole stage to hand out one name."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package`: `table` maps a public name to the submodule (relative) defining it.

    A name resolved once is set on the package, so the next access is a plain attribute. No name may be a
    submodule's: importing that submodule would rebind the package attribute to the module.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
