"""`hfsoup hub serve` is a product: it runs without `hfsoup/testing/`, which holds test fixtures only (issue 14).

Two checks. Statically, no module of the package outside `hfsoup/testing/` imports `hfsoup.testing`, at the top or
inside a function. At run time, `hfsoup hub serve` started for real, in its own process, answers Hub requests with
no `hfsoup.testing` module loaded.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import hfsoup

PACKAGE = Path(hfsoup.__file__).parent
TESTING = "hfsoup.testing"
# Modules allowed to import the fixtures, and why. The demo builds its tiny and MiniLM models with the fixtures
# (`hfsoup demo` is a showcase, not part of the pipeline); it moves with them when they become a product.
FIXTURE_USERS = {"hfsoup/demo.py": "the demo's models are built by the test fixtures"}

# Runs `hfsoup hub serve` in a thread of its own process; once the test has been answered it writes a line, and the
# process reports which hfsoup.testing modules had been imported by then.
_SERVE_AND_REPORT = """
import json, sys, threading
from hfsoup.cli import main
threading.Thread(target=main, args=(sys.argv[1:],), daemon=True).start()
sys.stdin.readline()
loaded = [m for m in sys.modules if m == "hfsoup.testing" or m.startswith("hfsoup.testing.")]
print("LOADED " + json.dumps(sorted(loaded)), flush=True)
"""


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, absolute, with its line: `import x`, `from x import y` (`x.y` too, as `y` may be
    a submodule), relative imports resolved, `importlib.import_module("x")`; at any depth (in functions too)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts if parts[-1] == "__init__" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _imports_testing(path: Path) -> list[str]:
    return [
        f"line {line}: {module}"
        for line, module in _imported_modules(path)
        if module == TESTING or module.startswith(TESTING + ".")
    ]


def test_nothing_outside_testing_imports_the_fixtures():
    offenders, allowed = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        if name.startswith("hfsoup/testing/"):
            continue
        hits = _imports_testing(path)
        if hits:
            (allowed if name in FIXTURE_USERS else offenders)[name] = hits
    assert not offenders, f"modules outside hfsoup/testing/ import the fixtures: {offenders}"
    # An exception that no longer imports the fixtures is stale: drop it, so it cannot hide a new import.
    assert sorted(allowed) == sorted(FIXTURE_USERS)


def test_the_static_check_sees_every_form_of_import(tmp_path, monkeypatch):
    """The check must be able to fail: each spelling of an import of the fixtures, planted in a package module."""
    package = tmp_path / "hfsoup"
    (package / "cli").mkdir(parents=True)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    spellings = {
        "import hfsoup.testing.env": "hfsoup.testing.env",
        "from hfsoup.testing import families": "hfsoup.testing",
        "from .. import testing": "hfsoup.testing",
        "from ..testing.env import use_local_hub": "hfsoup.testing.env",
        "def f():\n    from ..testing import netguard": "hfsoup.testing",
        "import importlib\nimportlib.import_module('hfsoup.testing.glue')": "hfsoup.testing.glue",
    }
    for source, module in spellings.items():
        planted = package / "cli" / "verb.py"
        planted.write_text(source + "\n")
        assert any(hit.endswith(module) for hit in _imports_testing(planted)), source
    planted.write_text("from ..localhub.server import LocalHubServer\nimport hfsoup.testingish\n")
    assert _imports_testing(planted) == []


def test_hub_serve_answers_requests_without_importing_the_fixtures(tmp_path, hf_home):
    from huggingface_hub import HfApi

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    root = tmp_path / "served"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE_AND_REPORT, "hub", "serve", "--root", str(root), "--user", "alice"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def next_line(what: str) -> str:
        try:
            return lines.get(timeout=60)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"hfsoup hub serve printed no {what}") from None

    try:
        url = token = ""
        while not (url and token):
            line = next_line("URL and token")
            if line.startswith("Local Hub serving"):
                url = line.rsplit(" at ", 1)[1].strip()
            elif line.startswith("Write token"):
                token = line.rsplit(": ", 1)[1].strip()
        # Real requests, answered by the served process: a write (with its token) and a read.
        api = HfApi(endpoint=url, token=token)
        api.create_repo("alice/model")
        assert api.model_info("alice/model").id == "alice/model"
        assert (root / "repos" / "models" / "alice" / "model").is_dir()

        proc.stdin.write("report\n")
        proc.stdin.flush()
        line = next_line("report")
        while not line.startswith("LOADED "):
            line = next_line("report")
        loaded = json.loads(line.removeprefix("LOADED "))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert loaded == [], f"hfsoup hub serve imported test fixtures: {loaded}"


@pytest.mark.parametrize("module", ["hfsoup.cli", "hfsoup.localhub.server"])
def test_importing_the_server_loads_no_fixture(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m == 'hfsoup.testing' or m.startswith('hfsoup.testing.')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
