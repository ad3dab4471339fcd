"""The package's shape holds: no import cycle among hfsoup's modules, and the import paths the README and the
notebooks teach (and the old ones users already wrote) still import.

The cycle check reads the source with `ast` rather than importing it, so it sees every import: at module level, inside
functions and methods, under `if TYPE_CHECKING:`; an import inside a function is a cycle waiting for the day someone
moves it to the top. It is self-contained so that CI, on a clean clone, runs it.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hfsoup"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module under `package_dir` by dotted name; a package is named by its `__init__.py`."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _resolve(name: str, files: dict[str, Path]) -> str | None:
    """The module that `import name` runs last: `name` itself, or the package that holds the attribute it names."""
    while name and name not in files:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, files: dict[str, Path]) -> list[str]:
    top = next(iter(files)).partition(".")[0]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            # `from . import x` in a/b.py is relative to package a; in a/__init__.py to a itself.
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # `from pkg import x` imports the submodule pkg.x when there is one, else only pkg (x is its attribute).
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names]
    return [n for n in names if n == top or n.startswith(top + ".")]


def _imports(package_dir: Path):
    """(module, imported name, line) for every import of one of the package's modules, anywhere in its source."""
    files = module_files(package_dir)
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(node, module, path.name == "__init__.py", files):
                    yield module, name, node.lineno


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (self-imports left out)."""
    files = module_files(package_dir)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, name, _ in _imports(package_dir):
        target = _resolve(name, files)
        if target and target != module:
            graph[module].add(target)
    return graph


def unresolved_imports(package_dir: Path) -> list[str]:
    """`module: name (line n)` for each import of a package module that does not exist: a path a move broke, which an
    import inside a function would only reveal when it runs."""
    files = module_files(package_dir)
    # `from pkg import x` yields pkg.x when that is a module, else pkg: either way it must be a module.
    return [f"{module}: {name} (line {line})" for module, name, line in _imports(package_dir) if name not in files]


def _shortest_cycle(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & within):
            if nxt == start:
                back = [node]  # node, ..., start: followed back along the search
                while back[-1] != start:
                    back.append(came_from[back[-1]])
                return [*reversed(back), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in no cycle")


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components (Tarjan, iterative so a deep package cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each import cycle as `a -> b -> a`: for every module caught in one, the shortest cycle through it (so every
    module involved is named, and every cycle shown is a real chain of imports to break), duplicates removed."""
    cycles: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for component in _components(graph):
        if len(component) == 1 and not (graph[next(iter(component))] & component):
            continue
        for start in sorted(component):
            cycle = _shortest_cycle(start, graph, component)
            # The same loop read from another of its modules is the same cycle.
            ring = cycle[:-1]
            key = min(tuple(ring[i:] + ring[:i]) for i in range(len(ring)))
            if key not in seen:
                seen.add(key)
                cycles.append(" -> ".join(cycle))
    return cycles


def test_hfsoup_has_no_import_cycle():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles among hfsoup's modules:\n" + "\n".join(cycles)


def test_every_hfsoup_import_names_a_module_that_exists():
    missing = unresolved_imports(PACKAGE)
    assert not missing, "imports of hfsoup modules that do not exist:\n" + "\n".join(missing)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "fake"


# Every way a module can import another, each closing one cycle: a relative `from . import <submodule>`, an import
# inside a function, one under `if TYPE_CHECKING:`, an absolute `import a.b`, an absolute `from pkg import <module>`,
# and a package imported by name (which runs its `__init__`).
CYCLIC = {
    "fake/__init__.py": "",
    "fake/a.py": "from . import b\n",
    "fake/b.py": "def later():\n    from .a import thing\n    return thing\n",
    "fake/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.d import D\n",
    "fake/sub/__init__.py": "",
    "fake/sub/d.py": "class D:\n    def method(self):\n        import fake.c\n",
    "fake/e.py": "from fake import f\n",
    "fake/f.py": "import fake.g\n",
    "fake/g.py": "from .. import fake\nfrom ..fake.e import E\n",
    "fake/pkg/__init__.py": "from .h import H\n",
    "fake/pkg/h.py": "from fake import pkg\n",
}


def test_find_cycles_finds_every_kind_of_import_cycle(tmp_path):
    cycles = find_cycles(import_graph(_write_package(tmp_path, CYCLIC)))
    assert sorted(cycles) == [
        "fake.a -> fake.b -> fake.a",
        "fake.c -> fake.sub.d -> fake.c",
        "fake.e -> fake.f -> fake.g -> fake.e",
        "fake.pkg -> fake.pkg.h -> fake.pkg",
    ]
    # Several loops through one module are each named: a second loop e -> g -> e beside e -> f -> g -> e.
    both = find_cycles(import_graph(_write_package(tmp_path, {**CYCLIC, "fake/e.py": "from fake import f, g\n"})))
    assert {"fake.e -> fake.g -> fake.e", "fake.f -> fake.g -> fake.e -> fake.f"} <= set(both)


def test_find_cycles_passes_an_acyclic_package_and_names_only_real_modules(tmp_path):
    acyclic = {
        **CYCLIC,
        "fake/__init__.py": "VERSION = '1'\n",
        "fake/b.py": "from . import VERSION\n",  # an attribute of the package: an edge to its __init__, not a module
        "fake/sub/d.py": "import json\nimport fakeish.c\n",  # not this package: no edge
        "fake/g.py": "from .sub import d\n",
        "fake/pkg/h.py": "def later():\n    from .. import VERSION\n",
    }
    package = _write_package(tmp_path, acyclic)
    graph = import_graph(package)
    assert find_cycles(graph) == []
    assert graph["fake.b"] == graph["fake.pkg.h"] == {"fake"}
    assert graph["fake.g"] == {"fake.sub.d"} and graph["fake.sub.d"] == set()
    assert unresolved_imports(package) == []


def test_unresolved_imports_names_a_moved_module_imported_inside_a_function(tmp_path):
    package = _write_package(tmp_path, {"fake/__init__.py": "", "fake/a.py": "def f():\n    from .gone import x\n"})
    assert unresolved_imports(package) == ["fake.a: fake.gone (line 2)"]


# ---- the import paths users were taught -------------------------------------------------------------------------

#: Paths users wrote before the move to one folder per stage; each must keep importing.
OLD_PATHS = ["from hfsoup.evaluator import Evaluator"]

_IMPORT_LINE = re.compile(r"^\s*(?:>>> |\.\.\. )?((?:import|from)\s+hfsoup\b.*)$")


def taught_imports(code: str) -> list[str]:
    """The `import hfsoup...` and `from hfsoup... import ...` statements in a block of example code."""
    lines = [re.sub(r"^(\s*)(>>> |\.\.\. )", r"\1", line) for line in code.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:  # a shell line, a `%magic` or `...` output: fall back to reading the lines one by one
        return [m.group(1).split("#")[0].strip() for line in code.splitlines() if (m := _IMPORT_LINE.match(line))]
    statements = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "hfsoup" for a in node.names):
            statements.append(ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "hfsoup":
            statements.append(ast.unparse(node))
    return statements


def readme_imports(text: str) -> list[str]:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    return [s for block in blocks for s in taught_imports(block)]


def notebook_imports(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [s for c in cells if c["cell_type"] == "code" for s in taught_imports("".join(c["source"]))]


def failing_imports(statements: list[str]) -> dict[str, str]:
    """Run every statement in one fresh interpreter (the checkout's hfsoup first on its path); return the failures."""
    script = (
        "import json, sys\n"
        "failed = {}\n"
        "for statement in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        exec(statement, {})\n"
        "    except Exception as exc:\n"
        "        failed[statement] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(statements)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_every_import_path_the_readme_and_notebooks_teach_imports():
    readme = readme_imports((ROOT / "README.md").read_text(encoding="utf-8"))
    notebooks = {p.name: notebook_imports(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    # The extraction itself is checked, so that a README rewritten into another shape cannot pass by finding nothing.
    assert "from hfsoup.evaluation import Evaluator" in readme and "import hfsoup" in readme
    assert notebooks and all("import hfsoup" in found for found in notebooks.values()), notebooks
    statements = sorted({*readme, *(s for found in notebooks.values() for s in found), *OLD_PATHS})
    failed = failing_imports(statements)
    listing = "\n".join(f"{statement}: {error}" for statement, error in failed.items())
    assert not failed, f"taught import paths that no longer import:\n{listing}"


def test_failing_imports_reports_a_broken_path():
    failed = failing_imports(["import hfsoup", "from hfsoup.evaluator import NoSuchName", "import hfsoup.no_such"])
    assert set(failed) == {"from hfsoup.evaluator import NoSuchName", "import hfsoup.no_such"}


def test_taught_imports_reads_blocks_that_are_not_python():
    shell = "$ pip install hfsoup\n>>> from hfsoup.evaluation import (\n...     Evaluator,\n... )\n%time x = 1\n"
    assert taught_imports("import os\nimport hfsoup.cli as cli\nfrom hfsoup import soup  # note\n") == [
        "import hfsoup.cli as cli",
        "from hfsoup import soup",
    ]
    assert taught_imports(">>> import hfsoup\n>>> hfsoup.soup(['a'], 'out')\n") == ["import hfsoup"]
    assert taught_imports("hfsoup soup a b -o out\nimport hfsoup.errors\n") == ["import hfsoup.errors"]
    assert taught_imports(shell) == ["from hfsoup.evaluation import ("]  # reported, so a failure shows it


def test_every_public_name_resolves_and_the_old_evaluator_path_is_the_same_object():
    import hfsoup.evaluation
    import hfsoup.evaluation.evaluator as evaluator
    import hfsoup.evaluator
    import hfsoup.publish

    for package in (hfsoup, hfsoup.evaluation, hfsoup.publish, hfsoup.evaluator):
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert not missing, f"{package.__name__}.__all__ names what it lacks: {missing}"
    assert hfsoup.evaluator.__all__ == evaluator.__all__  # the old path exports what the old module exported
    for name in evaluator.__all__:
        assert getattr(hfsoup.evaluator, name) is getattr(evaluator, name)
    assert hfsoup.evaluation.Evaluator is evaluator.Evaluator is hfsoup.Evaluator
