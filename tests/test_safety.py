"""Bad input and hostile content (issue 9): tokens, private and gated repos, code shipped with a model, lying
headers, a full disk. Each test fails if the promise it names is broken."""

from __future__ import annotations

import ast
import errno
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import DiskFullError, EvaluationError
from hfsoup.io.staging import write_file_atomic
from hfsoup.testing.publish import upload

from .test_engine_runs import SHAPES
from .test_soup_local import make_checkpoint

ORG = "safety"
TOKEN = "hf_SeCrEtTokenThatMustNeverBeSeen0123456789"
PACKAGE = Path(hfsoup.__file__).parent


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("HFSOUP_HUB_RETRIES", "2")
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0.01")


@pytest.fixture
def private_repos(local_hub, tmp_path):
    api = HfApi(token=TOKEN)
    names = []
    for i in range(2):
        folder = make_checkpoint(tmp_path / "src" / f"ft{i}", seed=i)
        upload(folder, f"{ORG}/private{i}", private=True, api=api)
        names.append(f"{ORG}/private{i}")
    return names


def clean_failure(code: int, err: str, *fragments: str) -> str:
    """The error paragraph (after any warnings), checked: exit 1, one paragraph, no traceback, the fragments."""
    text = " ".join(err[err.index("Error: ") :].split()) if "Error: " in err else err
    assert code == 1 and text.startswith("Error: ") and "Traceback" not in text, err
    for fragment in fragments:
        assert fragment in text, (fragment, err)
    return text


def test_private_repo_without_a_token(private_repos, tmp_path, capsys):
    code = main(["soup", *private_repos, "-o", str(tmp_path / "out")])
    clean_failure(code, capsys.readouterr().err, "it is private and no valid token was sent", "--token")
    assert not (tmp_path / "out").exists()


def test_expired_token(private_repos, local_hub, tmp_path, capsys):
    expired = "hf_ExpiredTokenExpiredToken0000000000000"
    local_hub.faults.add(
        "status", token=expired, status=401, times=None, message="Invalid credentials in Authorization header"
    )
    code = main(["soup", *private_repos, "-o", str(tmp_path / "out"), "--token", expired])
    text = clean_failure(
        code, capsys.readouterr().err, "refused the token", "invalid, expired or revoked", "hf auth login"
    )
    assert expired not in text and local_hub.faults.injected["status"] >= 1


def test_gated_repo_without_access(private_repos, local_hub, tmp_path, capsys):
    local_hub.faults.add(
        "status",
        path=rf"/{ORG}/private1",
        status=403,
        error_code="GatedRepo",
        message="Access is restricted",
        times=None,
    )
    code = main(["soup", *private_repos, "-o", str(tmp_path / "out"), "--token", TOKEN])
    clean_failure(code, capsys.readouterr().err, "is a gated repo", "Accept its conditions")


def test_token_never_appears_in_output_logs_or_files(private_repos, local_hub, tmp_path, capsys, caplog):
    """A soup and a check of private repos with --token, at the most verbose level, plus a failing run: the token
    is in no byte of stdout, stderr, any log record (every logger, DEBUG) or any file under the test's folder (the
    soup, its hfsoup.json, the check's JSON, the Hugging Face cache, the Hub's store)."""
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        assert main(["-vv", "soup", *private_repos, "-o", str(out), "--token", TOKEN]) == 0
        report = tmp_path / "report.json"
        assert main(["-vv", "check", *private_repos, "--token", TOKEN, "--json", str(report)]) == 0
        local_hub.faults.add("status", path=r"model\.safetensors$", status=500, times=None)
        assert main(["-vv", "soup", *private_repos, "-o", str(tmp_path / "out2"), "--token", TOKEN]) == 1
    captured = capsys.readouterr()
    assert (out / "hfsoup.json").is_file() and report.is_file() and local_hub.faults.injected["status"] >= 1
    assert "HTTP 500" in captured.err  # the failing run did report, so its output was looked at
    assert TOKEN not in captured.out + captured.err
    assert TOKEN not in "\n".join(r.getMessage() for r in caplog.records)
    assert all(TOKEN.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink())


def test_code_shipped_with_a_model_is_never_run(local_hub, tmp_path):
    """A repo whose config has `auto_map` pointing at its own Python files: evaluating it is refused with the reason,
    souping it neither runs nor copies that code. The code, if run, would write a sentinel file."""
    sentinel = tmp_path / "CODE-WAS-RUN"
    folders = []
    for i in range(2):
        folder = make_checkpoint(tmp_path / f"custom{i}", seed=i)
        config = {
            "model_type": "custom-soup",
            "architectures": ["CustomForSequenceClassification"],
            "auto_map": {
                "AutoConfig": "configuration_custom.CustomConfig",
                "AutoModelForSequenceClassification": "modeling_custom.CustomForSequenceClassification",
            },
        }
        (folder / "config.json").write_text(json.dumps(config))
        payload = f"open({str(sentinel)!r}, 'w').write('ran')\n"
        (folder / "configuration_custom.py").write_text(payload)
        (folder / "modeling_custom.py").write_text(payload)
        upload(folder, f"{ORG}/custom{i}")
        folders.append(folder)
    data = tmp_path / "dev.csv"
    data.write_text("sentence,label\na fine soup,1\na cold soup,0\n")
    for model in (f"{ORG}/custom0", folders[0]):
        with pytest.raises(EvaluationError, match="hfsoup never runs code that comes with a model"):
            hfsoup.evaluate_model(model, "sst2", data_files={"validation": [str(data)]})
    result = hfsoup.soup([f"{ORG}/custom0", f"{ORG}/custom1"], tmp_path / "soup")
    assert not sentinel.exists()
    assert not list(result.output_dir.glob("*.py"))


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def test_audit_no_unsafe_loading_in_the_package():
    """The audit of issue 9 as a test: in hfsoup's own code, `torch.load` is called only with `weights_only=True`,
    `pickle`, `eval` and `exec` are never used, `trust_remote_code` is only ever passed as `False`, and subprocesses
    run only fixed argument lists (no shell). Test helpers (hfsoup/testing) are audited in docs/reliability.md."""
    loads, remote = 0, 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if "testing" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names), path
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                assert func not in ("eval", "exec", "compile", "os.system", "os.popen"), (path, node.lineno)
                for keyword in node.keywords:
                    if keyword.arg == "trust_remote_code":
                        remote += 1
                        assert ast.unparse(keyword.value) == "False", (path, node.lineno)
                    if keyword.arg == "shell":
                        assert ast.unparse(keyword.value) == "False", (path, node.lineno)
        for call in _calls(tree, "torch.load"):
            loads += 1
            kwargs = {k.arg: ast.unparse(k.value) for k in call.keywords}
            assert kwargs.get("weights_only") == "True", (path, call.lineno)
    assert loads >= 1 and remote >= 5  # the audit found the calls it is about (it would pass vacuously otherwise)


@pytest.mark.parametrize(
    ("lie", "fragment"),
    [
        # Found after the download, before any tensor is read: bytes past the end of the file.
        ("offsets", "'head.weight' claims bytes 872..936 of a 336-byte data section"),
        # A dtype whose size does not fit the bytes: float64 claimed for 32 bytes of float32.
        ("dtype", "'encoder.bias' claims bytes 48..80"),
        # Found in the remote header read, before any download.
        ("not-json", "is not valid safetensors"),
    ],
)
def test_lying_header_on_the_hub_is_a_clear_error(local_hub, tmp_path, capsys, lie, fragment):
    """A safetensors file on the Hub whose header lies: refused with the file named, not a crash, no output."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    path = folders[1] / "model.safetensors"
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + size]
    lies = {
        "offsets": (b'"data_offsets":[272,336]', b'"data_offsets":[872,936]'),
        "dtype": (b'"encoder.bias":{"dtype":"F32"', b'"encoder.bias":{"dtype":"F64"'),
    }
    if lie == "not-json":
        lied = b"{" + b"\x00" * (size - 1)
    else:
        assert lies[lie][0] in header  # the lie keeps the header's length
        lied = header.replace(*lies[lie])
    path.write_bytes(raw[:8] + lied + raw[8 + size :])
    for i, folder in enumerate(folders):
        upload(folder, f"{ORG}/hdr{i}")
    out = tmp_path / "out"
    code = main(["soup", f"{ORG}/hdr0", f"{ORG}/hdr1", "-o", str(out), "--force"])  # past the structure check
    clean_failure(code, capsys.readouterr().err, "model.safetensors", fragment)
    assert not out.exists()


# --- a full disk ------------------------------------------------------------------------------------------------
class _FillsUp:
    """A file object that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_disk_full_while_writing_shards_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The second shard's write fails with ENOSPC on the writer's thread: one clear error, no output folder, no
    staging folder, no completed first shard kept behind (nothing partial, not even for --resume)."""
    from hfsoup.io.checkpoint import SafetensorsStreamWriter

    ingredients = [make_checkpoint(tmp_path / f"ft{i}", seed=i, shapes=SHAPES) for i in range(2)]
    opened = []
    original = SafetensorsStreamWriter.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        opened.append(self.path.name)
        if len(opened) == 2:
            self._file = _FillsUp(self._file, room=5_000)

    monkeypatch.setattr(SafetensorsStreamWriter, "__init__", init)
    out = tmp_path / "deep" / "out"
    code = main(["soup", *map(str, ingredients), "-o", str(out), "--max-shard-size", "30KB"])
    clean_failure(code, capsys.readouterr().err, "No space left on the device", "nothing was moved into place")
    assert len(opened) == 2 and not (tmp_path / "deep").exists()


def test_disk_full_writing_a_report_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "scores.json"
    target.write_text('{"old": true}')
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: _FillsUp(real_open(p, mode, *a, **k), 10))
    with pytest.raises(DiskFullError, match="an older copy is kept"):
        write_file_atomic(target, json.dumps({"new": list(range(100))}))
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_disk_full_while_downloading_into_the_cache(local_hub, tmp_path, monkeypatch, capsys):
    """The Hub cache's disk fills up during a download: a clear error naming the cache and the fix, no retries of
    something retrying cannot mend, no output."""
    from huggingface_hub import file_download

    for i in range(2):
        upload(make_checkpoint(tmp_path / f"ft{i}", seed=i), f"{ORG}/dl{i}")
    calls = []

    def full(*args, **kwargs):
        calls.append(args[0])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_download, "http_get", full)
    out = tmp_path / "out"
    code = main(["soup", f"{ORG}/dl0", f"{ORG}/dl1", "-o", str(out)])
    clean_failure(code, capsys.readouterr().err, "No space left on the device while downloading", "HF_HUB_CACHE")
    # One attempt of snapshot_download (config.json and tokenizer.json, in parallel), not retried.
    assert len(calls) == len(set(calls)) <= 2 and not out.exists()


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and tmpfs mounts (root, as CI runs)")
def test_disk_full_on_a_real_small_filesystem(tmp_path):
    """A real full disk: `hfsoup soup` writes to a 96 KB tmpfs (in a private mount namespace) a soup of ~75 KB x 2
    shards. Exit 1 with the message, and the filesystem is left empty."""
    ingredients = [
        make_checkpoint(tmp_path / f"ft{i}", seed=i, shapes=SHAPES | {"x.weight": (96, 96)}) for i in range(2)
    ]
    small = tmp_path / "small"
    small.mkdir()
    soup = [sys.executable, "-m", "hfsoup.cli", "soup", *map(str, ingredients), "-o", str(small / "out")]
    script = f"mount -t tmpfs -o size=96k tmpfs {small} && {' '.join(soup)}; echo rc=$?; ls -A {small}"
    run = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    lines = run.stdout.split()
    assert "rc=1" in lines and lines[-1] == "rc=1", run.stdout + run.stderr  # nothing listed after the exit code
    clean_failure(1, run.stderr.strip(), "No space left on the device")
