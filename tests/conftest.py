"""Shared fixtures: a loopback-only network, a fresh Hugging Face cache per test, and the local Hub server."""

from __future__ import annotations

import os
import tempfile

import pytest

from hfsoup.testing import netguard

# Nothing in the suite may leave loopback. Installed at import so that even collection is guarded.
netguard.install()
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Module-scoped fixtures that soup run before any per-test cache (`hfsoup_cache`): never the developer's cache either.
os.environ["HFSOUP_CACHE"] = tempfile.mkdtemp(prefix="hfsoup-cache-")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    # The tiny test models run several times faster on one thread than on two busy cores.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Slow tests (real MiniLM weights, minutes) run when asked: `-m slow`, or HFSOUP_SLOW=1 as .ci/run sets.
    if os.environ.get("HFSOUP_SLOW") == "1" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: set HFSOUP_SLOW=1 or pass -m slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A test may catch the guard's exception; the session still fails if anything tried to leave loopback.
    if netguard.BLOCKED:
        print(f"\nhfsoup network guard: blocked connections outside loopback: {sorted(set(netguard.BLOCKED))}")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def hfsoup_cache(tmp_path_factory, monkeypatch):
    """A fresh, empty hfsoup cache (`HFSOUP_CACHE`: the Fisher estimates) for every test, never the developer's."""
    folder = tmp_path_factory.mktemp("hfsoup_cache")
    monkeypatch.setenv("HFSOUP_CACHE", str(folder))
    return folder


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """A fresh, empty Hugging Face home (and cache) for one test, with no token from the developer's machine."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


@pytest.fixture
def local_hub(tmp_path, hf_home):
    """A local Hub server on a free loopback port, with every Hugging Face client pointed at it.

    Yields the running `LocalHubServer`; its `url` is also in `HF_ENDPOINT` for the duration of the test. Its
    `faults` is an empty `FaultPlan`: `local_hub.faults.add("status", path=..., status=503)` injects failures.
    """
    from hfsoup.localhub.faults import FaultPlan
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    with (
        LocalHubServer(tmp_path / "hub_store", anonymous_writes=True, faults=FaultPlan()) as server,
        use_local_hub(server.url, hf_home),
    ):
        yield server


@pytest.fixture(scope="session")
def families(tmp_path_factory):
    """The tiny BERT, T5 and CLIP families, built once per session; tests publish what they need to a fresh Hub."""
    from hfsoup.testing.families import build_family

    root = tmp_path_factory.mktemp("families")
    return {kind: build_family(kind, root / kind, n_finetunes=3, seed=0) for kind in ("bert", "t5", "clip")}


@pytest.fixture(scope="session")
def sst2_finetunes(tmp_path_factory) -> list[str]:
    """Two tiny BERT sst2 fine-tunes of one base, built once per session (tests copy them before changing them)."""
    from hfsoup.testing.families import build_family
    from hfsoup.testing.glue import build_glue_finetunes

    root = tmp_path_factory.mktemp("sst2-finetunes")
    family = build_family("bert", root / "family", n_finetunes=1, seed=0)
    return [str(p) for p in build_glue_finetunes(family.base, "sst2", root / "bert", n_finetunes=2)]


@pytest.fixture(scope="session")
def sst2_dev_csv(tmp_path_factory):
    """16 rows of sst2 in GLUE's column layout: the held-out data of `sst2_finetunes`."""
    from hfsoup.testing.glue import write_glue_csv

    return write_glue_csv(tmp_path_factory.mktemp("sst2-dev") / "dev.csv", "sst2", 16)


@pytest.fixture(scope="session")
def minilm_family(tmp_path_factory):
    """The real-weights MiniLM family (slow tests only): 4 fine-tunes (3 learning rates, 4 seeds) and the impostor,
    trained once per session and shared by every module that needs it. `HFSOUP_MINILM_CACHE=DIR` keeps it between
    sessions (a build with the same settings and versions is reused)."""
    from hfsoup.testing.minilm import build_minilm_family

    root = os.environ.get("HFSOUP_MINILM_CACHE") or tmp_path_factory.mktemp("minilm")
    return build_minilm_family(root, n_finetunes=4)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The trained tiny families (T5 on a learnable sst2, a CLIP digit classifier, CLIP zero-shot) and their datasets,
    built once per session: `hfsoup.testing.trained.TrainedFixtures` (about half a minute on 2 busy cores)."""
    from hfsoup.testing.trained import build_trained

    return build_trained(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def trained_server(tmp_path_factory, trained):
    """A local Hub holding every trained fixture, published once and serving for the whole session.

    Yields `(server, TrainedHub)`. It does not point the clients at itself: `trained_hub` does, per module.
    """
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub
    from hfsoup.testing.trained import publish_trained

    root = tmp_path_factory.mktemp("trained-hub")
    with LocalHubServer(root / "store", anonymous_writes=True) as server:
        with use_local_hub(server.url, root / "publish_home"):
            ids = publish_trained(trained)
        yield server, ids


@pytest.fixture(scope="module")
def trained_hub(tmp_path_factory, trained_server):
    """For one test module: every Hugging Face client on the trained fixtures' Hub, with a fresh cache and no token.

    Yields `hfsoup.testing.trained.TrainedHub`: `.good("t5-sst2")`, `.swapped("t5-sst2")`, `.ids`,
    `.sentiment_dataset` (`--task sst2 --dataset ...`), `.digits_dataset` (`--task image-classification --dataset
    ...`), and `.folders` (repo id -> local folder).
    """
    from hfsoup.testing.env import use_local_hub

    server, ids = trained_server
    saved_token = os.environ.pop("HF_TOKEN", None)
    with use_local_hub(server.url, tmp_path_factory.mktemp("trained-home") / "hf_home"):
        yield ids
    if saved_token is not None:
        os.environ["HF_TOKEN"] = saved_token


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: one intra-op thread is ~8x faster than two that wait on each other.
    Modules that score tiny models ask for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sst2_hub(tmp_path_factory, families):
    """One local Hub for a test module: the tiny BERT fine-tunes ft0-ft2 and a tiny GLUE (sst2 only)."""
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub
    from hfsoup.testing.families import publish_family
    from hfsoup.testing.glue import build_glue, publish_glue

    root = tmp_path_factory.mktemp("sst2-hub")
    saved_token = os.environ.pop("HF_TOKEN", None)
    with LocalHubServer(root / "store", anonymous_writes=True) as server, use_local_hub(server.url, root / "hf_home"):
        repo_ids = publish_family(families["bert"], members=["ft0", "ft1", "ft2"])
        publish_glue(build_glue(root / "glue", tasks=["sst2"]))
        yield {"ids": [repo_ids[f"ft{i}"] for i in range(3)], "family": families["bert"], "root": root}
    if saved_token is not None:
        os.environ["HF_TOKEN"] = saved_token
