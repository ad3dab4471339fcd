"""docs/reliability.md lists every fault and bad input the tests try: no row names a test that does not exist, and no
test of the fault and safety modules is missing from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
LISTED_IN_FULL = (
    "tests/test_faults.py",
    "tests/test_safety.py",
    "tests/test_attack_paths.py",
    "tests/test_attack_outputs.py",
    "tests/test_attack_parsers.py",
    "tests/test_localhub_access.py",
    "tests/test_localhub_api.py",
    "tests/test_metrics_source.py",
    "tests/test_errors.py",
    "tests/test_layout.py",
    "tests/test_layout_hub.py",
    "tests/test_hub_errors.py",
    "tests/test_contracts.py",
    "tests/test_method_protocol.py",
    "tests/test_split_syntax.py",
    "tests/test_greedy_excludes.py",
    "tests/test_select_processes.py",
    "tests/test_trained_fixtures.py",
    "tests/test_merge_methods.py",
    "tests/test_card_reproduce.py",
    "tests/test_lora.py",
    "tests/test_max_memory.py",
    "tests/test_fisher_cache.py",
)


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_named_in_the_doc_exists_and_every_fault_test_is_named():
    named = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", DOC.read_text())
    assert len(named) >= 30
    for file, test in named:
        assert test in _tests_in(ROOT / file), f"docs/reliability.md names {file}::{test}, which does not exist"
    for file in LISTED_IN_FULL:
        missing = _tests_in(ROOT / file) - {test for f, test in named if f == file}
        assert not missing, f"tests of {file} missing from docs/reliability.md: {sorted(missing)}"
