"""The whole pipeline through a faulty Hub (issue 9): downloads retry and resume, damaged files are never used, a
failure that outlasts the retries is one clear error with nothing left behind, and a rerun gives the same bytes as a
run that met no fault. Every fault is injected by the local Hub server (`hfsoup.localhub.faults`) over real HTTP.

Each test asserts that its faults were really injected (`faults.injected`), so a rule that stops matching (a renamed
endpoint, a client that changed its requests) fails the test instead of silently testing nothing.
"""

from __future__ import annotations

import hashlib
import logging

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

import hfsoup
from hfsoup.cli import main
from hfsoup.testing.publish import upload

from .test_engine_runs import SHAPES
from .test_soup_local import make_checkpoint

ORG = "faults"
# The weights of ft0 at its pinned SHA. The first GET reads the safetensors header (a Range request) before anything
# is downloaded; `skip=1` spares it, so that a rule hits the download itself.
FT0_WEIGHTS = rf"{ORG}/ft0/resolve/[0-9a-f]{{40}}/model\.safetensors$"


@pytest.fixture
def fast_retries(monkeypatch):
    """Short waits and client timeouts, so that a test of retries costs a second, not a minute."""
    from huggingface_hub import constants

    monkeypatch.setenv("HFSOUP_HUB_RETRIES", "3")
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0.05")
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)


@pytest.fixture
def repos(local_hub, tmp_path, fast_retries):
    """Three ~75 KB fine-tunes on the Hub, and the soup of their local folders: what every faulty run must give."""
    folders = [make_checkpoint(tmp_path / "src" / f"ft{i}", seed=i, shapes=SHAPES) for i in range(3)]
    names = []
    for i, folder in enumerate(folders):
        upload(folder, f"{ORG}/ft{i}")
        names.append(f"{ORG}/ft{i}")
    expected = hfsoup.soup(folders, tmp_path / "expected").output_dir / "model.safetensors"
    return names, expected.read_bytes()


def soup_bytes(result) -> bytes:
    return (result.output_dir / "model.safetensors").read_bytes()


def assert_nothing_left(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_5xx_on_every_kind_of_call_is_retried(local_hub, repos, tmp_path):
    """HTTP 500/503 on the repo info, the header reads and the weight downloads: huggingface_hub retries none of the
    API calls nor a 5xx answer to a file GET; hfsoup's bounded retries carry the soup through."""
    names, expected = repos
    faults = local_hub.faults
    faults.add("status", method="GET", path=rf"/api/models/{ORG}/ft0", status=503, times=2)
    faults.add("status", method="GET", path=rf"{ORG}/ft1/resolve/.*model\.safetensors$", status=500, times=2)
    faults.add("status", method="GET", path=FT0_WEIGHTS, status=503, times=2, skip=1)
    result = hfsoup.soup(names, tmp_path / "out")
    assert soup_bytes(result) == expected
    assert faults.injected == {"status": 6}


def test_truncated_download_resumes_with_a_range_request(local_hub, repos, tmp_path, monkeypatch):
    """huggingface_hub resumes a download cut short from the last chunk it wrote (its chunks are 10 MB; 8 KB here,
    so that a 75 KB file has several), and checks the size; hfsoup then checks the content."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    names, expected = repos
    local_hub.faults.add("truncate", method="GET", path=FT0_WEIGHTS, at=20_000, skip=1)
    result = hfsoup.soup(names, tmp_path / "out")
    assert soup_bytes(result) == expected
    assert local_hub.faults.injected == {"truncate": 1}
    size = (tmp_path / "src/ft0/model.safetensors").stat().st_size
    resumed = [n for m, p, status, n in local_hub.traffic[-40:] if "ft0/resolve" in p and m == "GET" and status == 206]
    assert size - 16_384 in resumed  # two whole chunks were kept, the rest asked for with Range


def test_delay_past_the_client_timeout_is_retried(local_hub, repos, tmp_path):
    names, expected = repos
    local_hub.faults.add("delay", method="GET", path=FT0_WEIGHTS, seconds=2.5, skip=1)
    result = hfsoup.soup(names, tmp_path / "out")
    assert soup_bytes(result) == expected and local_hub.faults.injected == {"delay": 1}


def test_dropped_connections_are_retried(local_hub, repos, tmp_path):
    names, expected = repos
    local_hub.faults.add("drop", method="GET", path=rf"/api/models/{ORG}/ft2")  # repo info: hfsoup retries
    local_hub.faults.add("drop", method="GET", path=FT0_WEIGHTS, skip=1)  # a download: huggingface_hub retries
    result = hfsoup.soup(names, tmp_path / "out")
    assert soup_bytes(result) == expected and local_hub.faults.injected == {"drop": 2}


def test_huggingface_hub_alone_keeps_a_corrupted_download(local_hub, repos):
    """Why hfsoup checks checksums itself: bytes changed in transit, at the right length, pass huggingface_hub."""
    names, _ = repos
    local_hub.faults.add("corrupt", method="GET", path=r"model\.safetensors$")
    path_name = "model.safetensors"
    path = hf_hub_download(names[0], path_name)
    [weights] = [s for s in HfApi().model_info(names[0], files_metadata=True).siblings if s.rfilename == path_name]
    assert local_hub.faults.injected == {"corrupt": 1}
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() != weights.lfs.sha256


def test_corrupted_download_is_deleted_and_fetched_again(local_hub, repos, tmp_path, caplog):
    names, expected = repos
    local_hub.faults.add("corrupt", method="GET", path=FT0_WEIGHTS, times=2, skip=1)
    local_hub.faults.add("corrupt", method="GET", path=rf"{ORG}/ft1/resolve/[0-9a-f]{{40}}/config\.json$")
    with caplog.at_level(logging.WARNING, logger="hfsoup"):
        result = hfsoup.soup(names, tmp_path / "out")
    assert soup_bytes(result) == expected and local_hub.faults.injected == {"corrupt": 3}
    assert (result.output_dir / "config.json").read_bytes() == (tmp_path / "src/ft0/config.json").read_bytes()
    assert "does not match its checksum on the Hub" in caplog.text


def test_always_corrupted_is_a_clear_error_and_the_damage_is_not_kept(local_hub, repos, tmp_path, capsys):
    names, _ = repos
    local_hub.faults.add("corrupt", method="GET", path=rf"{ORG}/ft1/resolve/.*model\.safetensors$", times=None, skip=1)
    out = tmp_path / "out"
    code = main(["soup", *names, "-o", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "Traceback" not in err
    assert "model.safetensors in ingredient 'faults/ft1'" in err and "4 downloads in a row" in err
    assert local_hub.faults.injected["corrupt"] == 4  # 1 try + HFSOUP_HUB_RETRIES=3
    assert_nothing_left(out)
    # The damaged copies were deleted from the cache: every LFS blob left (named by its sha256) holds that content.
    blobs = [b for b in (tmp_path / "hf_home/hub/models--faults--ft1/blobs").iterdir() if len(b.name) == 64]
    assert blobs == [] or all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in blobs)
    assert not list((tmp_path / "hf_home/hub/models--faults--ft1/snapshots").glob("*/model.safetensors"))


def test_failure_outlasting_the_retries_then_a_rerun_gives_the_same_soup(local_hub, repos, tmp_path, capsys):
    """An interrupted download: one clear error, no output, the completed downloads kept in the cache; the rerun
    downloads only what is missing and writes the very bytes of a run that met no fault."""
    names, expected = repos
    ft2 = rf"{ORG}/ft2/resolve/.*model\.safetensors$"
    local_hub.faults.add("status", method="GET", path=ft2, times=None, skip=1)
    out = tmp_path / "out"
    code = main(["soup", *names, "-o", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "answered HTTP 503 for ingredient 'faults/ft2' after 4 tries" in err
    assert "HFSOUP_HUB_RETRIES" in err and local_hub.faults.injected["status"] == 4
    assert_nothing_left(out)
    requests = len(local_hub.traffic)
    local_hub.faults.clear()
    assert main(["soup", *names, "-o", str(out)]) == 0
    assert (out / "model.safetensors").read_bytes() == expected
    # Only the missing ingredient's weights came down again (the rest, and the headers, are read with Range).
    downloads = [p for m, p, status, _ in local_hub.traffic[requests:] if m == "GET" and status == 200]
    assert [p for p in downloads if p.endswith(".safetensors")] == [p for p in downloads if "ft2/" in p][-1:]


def test_faults_on_header_reads(local_hub, repos, tmp_path):
    """The safetensors headers are read remotely (Range requests) before any download; damaged reads are retried."""
    names, expected = repos
    faults = local_hub.faults
    faults.add("corrupt", method="GET", path=rf"{ORG}/ft0/resolve/.*model\.safetensors$")  # the header's first read
    faults.add("truncate", method="GET", path=rf"{ORG}/ft1/resolve/.*model\.safetensors$", at=4)
    result = hfsoup.soup(names, tmp_path / "out")
    assert soup_bytes(result) == expected and faults.injected == {"corrupt": 1, "truncate": 1}


def test_interrupted_upload_leaves_the_repo_as_it_was_and_a_rerun_completes(local_hub, tmp_path, fast_retries):
    """What a push relies on (`hfsoup push` builds on `upload_folder`): a connection dropped in the middle of an LFS
    upload is retried by huggingface_hub; a commit that fails creates no commit at all (no half-pushed model); the
    rerun makes the very commit content an uninterrupted push makes."""
    folder = make_checkpoint(tmp_path / "soup", seed=0, shapes=SHAPES)
    api = HfApi()
    api.create_repo(f"{ORG}/pushed")
    before = api.model_info(f"{ORG}/pushed").sha
    local_hub.faults.add("drop", method="PUT", path=r"^/_lfs/", at=10_000)
    local_hub.faults.add("status", method="POST", path=r"/commit/main$", status=500)
    with pytest.raises(HfHubHTTPError):
        api.upload_folder(repo_id=f"{ORG}/pushed", folder_path=folder, commit_message="soup")
    assert local_hub.faults.injected == {"drop": 1, "status": 1}
    assert api.model_info(f"{ORG}/pushed").sha == before

    api.upload_folder(repo_id=f"{ORG}/pushed", folder_path=folder, commit_message="soup")
    upload(folder, f"{ORG}/reference")
    pushed, reference = (
        {s.rfilename: s.blob_id for s in api.model_info(repo, files_metadata=True).siblings}
        for repo in (f"{ORG}/pushed", f"{ORG}/reference")
    )
    assert pushed == reference and {p.name for p in folder.iterdir()} <= set(pushed)


def test_fault_plan_counts_and_limits(local_hub, fast_retries):
    """The plan itself: `times` limits, method and token filters, and unmatched requests untouched."""
    api = HfApi()
    api.create_repo(f"{ORG}/plain")
    faults = local_hub.faults
    faults.add("status", method="GET", path=r"/api/models/faults/plain$", status=502, times=2)
    faults.add("status", method="POST", path=r"/api/models/faults/plain$", status=500)
    faults.add("status", path=r"/api/models/faults/plain", token="hf_other", status=401)
    codes = []
    for _ in range(3):
        try:
            api.model_info(f"{ORG}/plain")
            codes.append(200)
        except Exception as e:  # noqa: BLE001
            codes.append(e.response.status_code)
    assert codes == [502, 502, 200] and faults.injected == {"status": 2}


def test_interrupted_evaluation_writes_nothing_and_the_rerun_matches_a_clean_run(
    local_hub, families, tmp_path, fast_retries, capsys
):
    """`hfsoup eval` whose model download fails past the retries: one clear error, no --json or --predictions file
    (not even a partial one). A transient fault on the dataset is ridden out. The rerun's files are byte-identical to
    those of a run that met no fault."""
    from hfsoup.testing.glue import build_glue, publish_glue, tiny_classifier

    publish_glue(build_glue(tmp_path / "glue", tasks=["sst2"]))
    upload(tiny_classifier(families["bert"].base, "sst2", tmp_path / "clf"), f"{ORG}/clf")
    args = ["eval", f"{ORG}/clf", "--task", "sst2"]
    clean = [*args, "--json", str(tmp_path / "clean.json"), "--predictions", str(tmp_path / "clean-pred.json")]
    assert main(clean) == 0

    for cache in ("hub", "datasets"):  # the faulty run downloads everything anew
        (tmp_path / "hf_home" / cache).rename(tmp_path / f"first-{cache}")
    local_hub.faults.add("status", method="GET", path=r"^/datasets/nyu-mll/glue/resolve/.*\.parquet$", status=503)
    local_hub.faults.add("status", method="GET", path=rf"{ORG}/clf/resolve/.*\.safetensors$", times=None)
    outputs = ["--json", str(tmp_path / "scores.json"), "--predictions", str(tmp_path / "pred.json")]
    assert main([*args, *outputs]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "answered HTTP 503 for ingredient 'faults/clf' after 4 tries" in err and "Traceback" not in err
    assert not (tmp_path / "scores.json").exists() and not (tmp_path / "pred.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".hfsoup-tmp-" in p.name]

    assert local_hub.faults.injected["status"] == 5  # the dataset's fault too: its download was ridden out

    local_hub.faults.clear()
    assert main([*args, *outputs]) == 0
    assert (tmp_path / "scores.json").read_bytes() == (tmp_path / "clean.json").read_bytes()
    assert (tmp_path / "pred.json").read_bytes() == (tmp_path / "clean-pred.json").read_bytes()
