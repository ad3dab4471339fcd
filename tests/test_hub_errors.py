"""The one Hub-error translator (`hfsoup.hub.errors`), over real HTTP to the local Hub (issue 14).

Every failure is injected by the server; each test asserts how many requests got the fault, so a message that
claims retries is checked against the retries that were really made.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hfsoup
from hfsoup.cli import main
from hfsoup.testing.glue import build_glue, publish_glue, tiny_classifier
from hfsoup.testing.publish import upload

from .test_soup_local import make_checkpoint

PACKAGE = Path(hfsoup.__file__).parent
PARQUET = r"^/datasets/nyu-mll/glue/resolve/.*\.parquet$"


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("HFSOUP_HUB_RETRIES", "3")
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0.01")


@pytest.fixture
def classifier(local_hub, families, tmp_path, fast_retries):
    """A tiny sst2 classifier in a local folder, and the tiny GLUE on the local Hub as `nyu-mll/glue`."""
    publish_glue(build_glue(tmp_path / "glue", tasks=["sst2"]))
    return tiny_classifier(families["bert"].base, "sst2", tmp_path / "clf")


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_a_dataset_failure_past_the_retries_names_the_dataset_and_the_tries_made(local_hub, classifier, capsys):
    local_hub.faults.add("status", method="GET", path=PARQUET, status=503, times=None)
    assert main(["eval", str(classifier), "--task", "sst2"]) == 1
    err = _err(capsys)
    assert local_hub.faults.injected["status"] == 4
    assert "answered HTTP 503 while downloading dataset nyu-mll/glue (sst2) (4 tries)" in err
    assert "Traceback" not in err and "Unexpected" not in err


def test_a_dataset_refusal_is_not_retried_and_claims_no_tries(local_hub, classifier, capsys):
    local_hub.faults.add("status", method="GET", path=PARQUET, status=403, times=None, message="no access here")
    assert main(["eval", str(classifier), "--task", "sst2"]) == 1
    err = _err(capsys)
    assert local_hub.faults.injected["status"] == 1  # a 403 is final: no retry
    assert "answered HTTP 403 while downloading dataset nyu-mll/glue (sst2):" in err
    assert not re.search(r"\d+ tries", err) and "Unexpected" not in err


def test_a_model_error_that_was_not_retried_claims_no_retries(local_hub, tmp_path, fast_retries, capsys):
    for i in range(2):
        upload(make_checkpoint(tmp_path / f"ft{i}", seed=i), f"errors/ft{i}")
    local_hub.faults.add("status", method="GET", path=r"^/api/models/errors/ft1", status=400, times=None)
    out = tmp_path / "out"
    assert main(["soup", "errors/ft0", "errors/ft1", "-o", str(out)]) == 1
    err = _err(capsys)
    assert local_hub.faults.injected["status"] == 1
    assert "answered HTTP 400 for ingredient 'errors/ft1':" in err and not re.search(r"\d+ tries", err)
    assert not out.exists()


def test_no_module_imports_a_private_name_of_another():
    """Modules share helpers by public names (`hub.retries.is_connection_error`, not `hub._is_connection_error`):
    a private name is free to change without a look outside its module."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hfsoup")):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno} {name}" for name in private]
    assert offenders == []
