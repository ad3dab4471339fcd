"""The local Hub answers every client call the README's local-Hub table lists: one test per row, each through
`huggingface_hub.HfApi` or the `hf` CLI against a real `LocalHubServer`, checked on the server or on disk.

Rows: listing models, datasets and spaces (author, search, filter with the model tree's tags, sort, limit, full,
paging), private repos in listings, `hf models ls` / `hf datasets ls`, `hf repos ls` (`list_user_repos`),
`duplicate_repo`, `move_repo`, `super_squash_history`, pull requests from `create_commit(create_pr=True)` to
`merge_pull_request` (also opened by a reader, and refused on conflicts), discussions, blob collection (on delete, by
`hfsoup hub gc`, never under a commit in flight), the request log and Ctrl-C of `hfsoup hub serve`, `hfsoup hub
--help`, and the bounds of every new endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import get_session

from hfsoup.cli import main
from hfsoup.localhub.access import HubUser
from hfsoup.localhub.server import LocalHubServer
from hfsoup.testing.env import local_hub_environ, use_local_hub

ALICE = "hf_AliceTokenAliceTokenAliceToken01"
BOB = "hf_BobTokenBobTokenBobTokenBobToken"
WEIGHTS = b"\x00weights\x00" * 512  # binary: goes through LFS


@pytest.fixture
def hub(tmp_path, hf_home):
    """alice (also of org 'team') and bob; two entries a page, so that every listing exercises `Link` paging."""
    tokens = {ALICE: HubUser("alice", ("team",)), BOB: HubUser("bob")}
    with (
        LocalHubServer(tmp_path / "store", tokens=tokens, page_size=2, timeout=5) as server,
        use_local_hub(server.url, hf_home),
    ):
        yield server


@pytest.fixture
def alice():
    return HfApi(token=ALICE)


@pytest.fixture
def bob():
    return HfApi(token=BOB)


def card(**fields) -> bytes:
    return ("---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items()) + "---\n# A model\n").encode()


def put(api: HfApi, repo_id: str, path: str, data: bytes, **kwargs) -> str:
    return api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo_id, **kwargs).oid


def status_of(call, *args, **kwargs) -> int:
    with pytest.raises(HfHubHTTPError) as excinfo:
        call(*args, **kwargs)
    return excinfo.value.response.status_code


def blob_path(hub: LocalHubServer, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return hub.root / "blobs" / sha[:2] / sha


def hf_cli(hub: LocalHubServer, tmp_path: Path, token: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_IMPLICIT_TOKEN"}
    env.update(local_hub_environ(hub.url, tmp_path / "cli_home"), HF_TOKEN=token)
    env.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hf"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def family(alice, bob):
    """A base, three children (finetune, merge, adapter, as the Hub infers them), a private one and bob's."""
    alice.create_repo("alice/base")
    alice.create_repo("alice/ft-a")
    put(alice, "alice/ft-a", "README.md", card(base_model="alice/base", tags=["soup"], license="mit"))
    alice.create_repo("alice/ft-b")
    put(alice, "alice/ft-b", "README.md", card(base_model=["alice/base", "alice/ft-a"], license="apache-2.0"))
    alice.create_repo("alice/lora")
    put(alice, "alice/lora", "adapter_config.json", b"{}")
    put(alice, "alice/lora", "README.md", card(base_model="alice/base"))
    alice.create_repo("alice/secret", private=True)
    bob.create_repo("bob/thing")


# Listing ---------------------------------------------------------------------------------------------------------
def test_list_models_by_author_search_filter_sort_limit_and_full(hub, alice, family):
    start = len(hub.traffic)
    assert [m.id for m in alice.list_models(author="alice")] == [
        "alice/base",
        "alice/ft-a",
        "alice/ft-b",
        "alice/lora",
        "alice/secret",
    ]
    assert sum(1 for t in hub.traffic[start:] if t[:2] == ("GET", "/api/models")) == 3  # 5 entries, 2 a page
    assert [m.id for m in alice.list_models(search="FT-")] == ["alice/ft-a", "alice/ft-b"]
    # The model tree: the Hub's tags derived from each card's base_model, with the relation inferred.
    assert [m.id for m in alice.list_models(filter="base_model:finetune:alice/base")] == ["alice/ft-a"]
    assert [m.id for m in alice.list_models(filter="base_model:merge:alice/base")] == ["alice/ft-b"]
    assert [m.id for m in alice.list_models(filter="base_model:adapter:alice/base")] == ["alice/lora"]
    assert {m.id for m in alice.list_models(filter="base_model:alice/base")} == {
        "alice/ft-a",
        "alice/ft-b",
        "alice/lora",
    }
    assert [m.id for m in alice.list_models(filter=["soup", "license:mit"])] == ["alice/ft-a"]
    assert list(alice.list_models(filter=["soup", "license:apache-2.0"])) == []
    assert "base_model:finetune:alice/base" in alice.model_info("alice/ft-a").tags
    # Sorted newest first, as the Hub sorts; the order the server's own dates give.
    by_date = sorted(alice.list_models(full=True), key=lambda m: m.last_modified, reverse=True)
    assert [m.id for m in alice.list_models(sort="last_modified")] == [m.id for m in by_date]
    assert [m.id for m in alice.list_models(sort="created_at", limit=3)] == ["bob/thing", "alice/secret", "alice/lora"]
    brief, full = next(iter(alice.list_models(search="ft-a"))), next(iter(alice.list_models(search="ft-a", full=True)))
    assert brief.sha is None and brief.siblings is None
    info = alice.model_info("alice/ft-a")
    assert full.sha == info.sha and [s.rfilename for s in full.siblings] == [".gitattributes", "README.md"]


def test_private_repos_are_listed_only_to_those_who_may_read_them(hub, alice, bob, family):
    alice.create_repo("team/hidden", private=True, repo_type="dataset")
    assert "alice/secret" in {m.id for m in alice.list_models()}
    assert "alice/secret" not in {m.id for m in bob.list_models()}
    assert "alice/secret" not in {m.id for m in HfApi(token=False).list_models()}
    assert [d.id for d in alice.list_datasets()] == ["team/hidden"]
    assert list(bob.list_datasets()) == [] and list(HfApi(token=False).list_datasets(author="team")) == []


def test_list_datasets_and_spaces(hub, alice):
    alice.create_repo("alice/reviews", repo_type="dataset")
    put(alice, "alice/reviews", "README.md", card(tags=["sentiment"], license="cc-by-4.0"), repo_type="dataset")
    alice.create_repo("team/glue", repo_type="dataset")
    alice.create_repo("alice/demo", repo_type="space", space_sdk="gradio")
    assert [d.id for d in alice.list_datasets(filter="sentiment")] == ["alice/reviews"]
    assert [d.id for d in alice.list_datasets(author="team")] == ["team/glue"]
    assert [d.id for d in alice.list_datasets(search="rev", full=True)] == ["alice/reviews"]
    assert "license:cc-by-4.0" in next(iter(alice.list_datasets(search="rev"))).tags
    spaces = list(alice.list_spaces(author="alice", full=True))
    assert [(s.id, s.sdk) for s in spaces] == [("alice/demo", "gradio")]


def test_hf_models_ls_and_hf_datasets_ls(hub, alice, family, tmp_path):
    alice.create_repo("alice/reviews", repo_type="dataset")
    models = json.loads(hf_cli(hub, tmp_path, ALICE, "models", "ls", "--author", "alice", "--format", "json"))
    assert [m["id"] for m in models] == ["alice/base", "alice/ft-a", "alice/ft-b", "alice/lora", "alice/secret"]
    tree = hf_cli(hub, tmp_path, BOB, "models", "ls", "--filter", "base_model:merge:alice/base", "--format", "json")
    assert [m["id"] for m in json.loads(tree)] == ["alice/ft-b"]
    datasets = json.loads(hf_cli(hub, tmp_path, BOB, "datasets", "ls", "--search", "review", "--format", "json"))
    assert [d["id"] for d in datasets] == ["alice/reviews"]


def test_hf_repos_ls_lists_the_tokens_repos_with_their_storage(hub, alice, bob, tmp_path):
    alice.create_repo("alice/model")
    put(alice, "alice/model", "w.bin", WEIGHTS)
    put(alice, "alice/model", "w.bin", WEIGHTS[::-1])  # a second version: both stay in the history
    alice.create_repo("alice/data", repo_type="dataset", private=True)
    alice.create_repo("team/shared")
    bob.create_repo("bob/other")
    rows = json.loads(hf_cli(hub, tmp_path, ALICE, "repos", "ls", "--format", "json"))
    assert sorted((r["id"], r["type"], r["visibility"]) for r in rows) == [
        ("alice/data", "dataset", "private"),
        ("alice/model", "model", "public"),
    ]
    storage = {r.id: r.storage for r in alice.list_user_repos()}
    gitattributes = alice.get_paths_info("alice/model", [".gitattributes"])[0].size
    assert storage["alice/model"] == 2 * len(WEIGHTS) + gitattributes
    assert [r.id for r in alice.list_user_repos(namespace="team")] == ["team/shared"]
    assert status_of(lambda: list(bob.list_user_repos(namespace="team"))) == 403
    assert status_of(lambda: list(HfApi(token=False).list_user_repos())) == 401


# Repos -----------------------------------------------------------------------------------------------------------
def test_duplicate_repo_copies_branches_tags_and_history(hub, alice, bob, tmp_path):
    alice.create_repo("alice/model")
    put(alice, "alice/model", "w.bin", WEIGHTS)
    alice.create_tag("alice/model", tag="v1")
    url = bob.duplicate_repo("alice/model", private=True)  # into bob's namespace, named as the source
    assert url.repo_id == "bob/model"
    assert (
        bob.model_info("bob/model").private and bob.model_info("bob/model").sha == alice.model_info("alice/model").sha
    )
    assert [c.commit_id for c in bob.list_repo_commits("bob/model")] == [
        c.commit_id for c in alice.list_repo_commits("alice/model")
    ]
    assert [t.name for t in bob.list_repo_refs("bob/model").tags] == ["v1"]
    assert status_of(alice.model_info, "bob/model") == 404  # private to bob
    assert status_of(bob.duplicate_repo, "alice/model", to_id="alice/copy") == 403
    assert bob.duplicate_repo("alice/model", exist_ok=True).repo_id == "bob/model"
    put(bob, "bob/model", "extra.txt", b"bob's")
    assert "extra.txt" not in alice.list_repo_files("alice/model")
    hf_cli(hub, tmp_path, ALICE, "repos", "duplicate", "alice/model", "team/cli-copy")  # the `hf` CLI's way
    assert alice.model_info("team/cli-copy").sha == alice.model_info("alice/model").sha


def test_move_repo_renames_and_transfers_with_history_and_discussions(hub, alice, bob, tmp_path):
    alice.create_repo("alice/old")
    sha = put(alice, "alice/old", "config.json", b"{}")
    alice.create_discussion("alice/old", title="Keep me")
    alice.move_repo("alice/old", "team/new")
    with pytest.raises(RepositoryNotFoundError):
        alice.model_info("alice/old")
    assert alice.model_info("team/new").sha == sha and alice.list_repo_files("team/new") == [
        ".gitattributes",
        "config.json",
    ]
    assert [d.title for d in alice.get_repo_discussions("team/new")] == ["Keep me"]
    alice.create_repo("alice/taken")
    assert status_of(alice.move_repo, "team/new", "alice/taken") == 409
    assert status_of(bob.move_repo, "team/new", "bob/mine") == 403
    assert status_of(alice.move_repo, "team/new", "bob/mine") == 403
    assert alice.model_info("team/new").sha == sha
    hf_cli(hub, tmp_path, ALICE, "repos", "move", "team/new", "alice/back")  # the `hf` CLI's way
    assert alice.model_info("alice/back").sha == sha and [r.id for r in alice.list_models(author="team")] == []


def test_super_squash_history_leaves_one_commit_and_frees_the_old_blobs(hub, alice):
    alice.create_repo("alice/model")
    put(alice, "alice/model", "w.bin", WEIGHTS)
    put(alice, "alice/model", "w.bin", WEIGHTS[::-1])
    put(alice, "alice/model", "notes.txt", b"notes")
    files = alice.list_repo_files("alice/model")
    assert len(alice.list_repo_commits("alice/model")) == 4 and blob_path(hub, WEIGHTS).is_file()
    alice.super_squash_history("alice/model", commit_message="Squashed")
    commits = alice.list_repo_commits("alice/model")
    assert [c.title for c in commits] == ["Squashed"] and alice.list_repo_files("alice/model") == files
    assert not blob_path(hub, WEIGHTS).exists() and blob_path(hub, WEIGHTS[::-1]).is_file()
    assert (
        Path(alice.hf_hub_download("alice/model", "w.bin", cache_dir=hub.root.parent / "c")).read_bytes()
        == (WEIGHTS[::-1])
    )
    alice.create_tag("alice/model", tag="v1")
    assert status_of(alice.super_squash_history, "alice/model", branch="v1") == 400


# Pull requests and discussions -----------------------------------------------------------------------------------
def test_a_create_pr_commit_is_listed_commented_and_merged(hub, alice, bob):
    alice.create_repo("alice/model")
    put(alice, "alice/model", "config.json", b'{"a": 1}')
    main_before = alice.model_info("alice/model").sha
    info = alice.create_commit(
        "alice/model",
        [CommitOperationAdd("config.json", b'{"a": 2}'), CommitOperationAdd("w.bin", WEIGHTS)],
        commit_message="Better weights",
        create_pr=True,
    )
    assert info.pr_num == 1 and alice.model_info("alice/model").sha == main_before
    refs = alice.list_repo_refs("alice/model", include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", info.oid)]
    [listed] = alice.get_repo_discussions("alice/model")
    assert (listed.num, listed.title, listed.is_pull_request, listed.status) == (1, "Better weights", True, "open")
    bob.comment_discussion("alice/model", 1, "Looks good")
    put(alice, "alice/model", "notes.txt", b"more", revision="refs/pr/1", commit_message="Add notes")
    details = alice.get_discussion_details("alice/model", 1)
    assert details.target_branch == "refs/heads/main" and details.conflicting_files == []
    assert [e.type for e in details.events] == ["comment", "commit", "comment", "commit"]
    assert details.events[2].content == "Looks good" and details.events[2].author == "bob"
    assert '+{"a": 2}' in details.diff and "Binary files a/w.bin and b/w.bin differ" in details.diff
    alice.merge_pull_request("alice/model", 1, comment="Thanks")
    merged = alice.get_discussion_details("alice/model", 1)
    assert merged.status == "merged" and merged.merge_commit_oid == alice.model_info("alice/model").sha
    assert sorted(alice.list_repo_files("alice/model")) == [".gitattributes", "config.json", "notes.txt", "w.bin"]
    config = alice.hf_hub_download("alice/model", "config.json", cache_dir=hub.root.parent / "c")
    assert Path(config).read_bytes() == b'{"a": 2}'
    assert status_of(alice.merge_pull_request, "alice/model", 1) == 400  # merged already


def test_a_reader_opens_a_pr_with_lfs_files_but_only_owners_merge_it(hub, alice, bob):
    alice.create_repo("alice/model")
    info = bob.create_commit(
        "alice/model", [CommitOperationAdd("w.bin", WEIGHTS)], commit_message="From bob", create_pr=True
    )
    assert info.pr_num == 1 and alice.get_discussion_details("alice/model", 1).author == "bob"
    put(bob, "alice/model", "more.bin", WEIGHTS[::-1], revision="refs/pr/1")  # his own PR: he may push to it
    assert status_of(put, bob, "alice/model", "x.txt", b"x") == 403  # but not to main
    assert status_of(bob.merge_pull_request, "alice/model", 1) == 403
    alice.create_commit("alice/model", [CommitOperationAdd("a.txt", b"a")], commit_message="Mine", create_pr=True)
    assert status_of(put, bob, "alice/model", "y.txt", b"y", revision="refs/pr/2") == 403  # not alice's PR
    alice.merge_pull_request("alice/model", 1)
    assert {"w.bin", "more.bin"} <= set(alice.list_repo_files("alice/model"))


def test_a_conflicting_pr_names_its_files_and_is_not_merged(hub, alice):
    alice.create_repo("alice/model")
    put(alice, "alice/model", "a.txt", b"one")
    alice.create_commit("alice/model", [CommitOperationAdd("a.txt", b"pr")], commit_message="PR", create_pr=True)
    put(alice, "alice/model", "a.txt", b"main")
    head = alice.model_info("alice/model").sha
    assert alice.get_discussion_details("alice/model", 1).conflicting_files == ["a.txt"]
    assert status_of(alice.merge_pull_request, "alice/model", 1) == 409
    assert alice.model_info("alice/model").sha == head
    assert alice.get_discussion_details("alice/model", 1).status == "open"


def test_discussions_filters_status_and_who_may_change_them(hub, alice, bob):
    alice.create_repo("alice/model")
    question = bob.create_discussion("alice/model", title="Which data?", description="Asking")
    pr = alice.create_pull_request("alice/model", title="Draft")
    assert (question.num, pr.num) == (1, 2) and pr.git_reference == "refs/pr/2"
    assert "refs/pr/2" in [
        r.ref for r in alice.list_repo_refs("alice/model", include_pull_requests=True).pull_requests
    ]
    bob.change_discussion_status("alice/model", 1, "closed", comment="Found it")
    assert [d.num for d in alice.get_repo_discussions("alice/model", discussion_status="closed")] == [1]
    assert [d.num for d in alice.get_repo_discussions("alice/model", discussion_type="pull_request")] == [2]
    assert [d.num for d in alice.get_repo_discussions("alice/model", author="bob")] == [1]
    assert status_of(bob.change_discussion_status, "alice/model", 2, "closed") == 403  # alice's PR, her repo
    alice.change_discussion_status("alice/model", 1, "open")  # the repo's owner may
    bob.rename_discussion("alice/model", 1, "Which dataset?")
    details = alice.get_discussion_details("alice/model", 1)
    assert details.status == "open" and details.title == "Which dataset?"
    assert [e.type for e in details.events] == ["comment", "comment", "status-change", "status-change", "title-change"]
    assert status_of(HfApi(token=False).comment_discussion, "alice/model", 1, "anon") == 401
    assert status_of(alice.get_discussion_details, "alice/model", 9) == 404


# Blob collection -------------------------------------------------------------------------------------------------
def test_deleting_every_repo_that_used_a_blob_removes_it(hub, alice):
    for repo_id in ("alice/a", "alice/b"):
        alice.create_repo(repo_id)
        put(alice, repo_id, "w.bin", WEIGHTS)
    gitattributes = next(hub.root.glob("blobs/*/*"))
    alice.delete_repo("alice/a")
    assert blob_path(hub, WEIGHTS).is_file()  # alice/b still names it
    alice.delete_repo("alice/b")
    assert not blob_path(hub, WEIGHTS).exists()
    alice.create_repo("alice/c")  # the store still works, shared blobs included
    assert alice.list_repo_files("alice/c") == [".gitattributes"] and gitattributes.parent.exists()


def test_hub_gc_removes_only_blobs_no_repo_names(hub, alice, tmp_path, capsys):
    alice.create_repo("alice/model")
    put(alice, "alice/model", "w.bin", WEIGHTS)
    orphan = b"left by a repo removed by hand"
    path = blob_path(hub, orphan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orphan)
    kept = sorted(p for p in hub.root.glob("blobs/*/*") if p != path)
    assert main(["hub", "gc", "--root", str(hub.root)]) == 0
    assert "Removed 1 blob no repo names" in capsys.readouterr().out
    assert not path.exists() and sorted(hub.root.glob("blobs/*/*")) == kept
    assert Path(alice.hf_hub_download("alice/model", "w.bin", cache_dir=tmp_path / "c")).read_bytes() == WEIGHTS
    assert main(["hub", "gc", "--root", str(tmp_path / "nowhere")]) != 0


def test_collection_never_takes_a_blob_from_a_commit_in_flight(hub, alice):
    alice.create_repo("alice/model")
    # An upload whose commit has not come yet is kept (for the grace period) ...
    data = b"\x00uploaded, commit on its way\x00" * 64
    oid = hashlib.sha256(data).hexdigest()
    batch = get_session().post(
        f"{hub.url}/alice/model.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert get_session().put(batch.json()["objects"][0]["actions"]["upload"]["href"], content=data).status_code == 200
    assert hub.store.collect() == (0, 0) and blob_path(hub, data).is_file()
    # ... and a collection waits for the commits in flight to finish.
    done = []
    with hub.store.writing():
        collector = threading.Thread(target=lambda: done.append(hub.store.collect(grace_seconds=0)))
        collector.start()
        collector.join(0.5)
        assert collector.is_alive() and not done
    collector.join(10)
    assert done == [(1, len(data))] and not blob_path(hub, data).exists()


# hfsoup hub serve and its help -----------------------------------------------------------------------------------
def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str, str, queue.Queue]:
    cmd = [sys.executable, "-m", "hfsoup.cli", "hub", "serve", "--root", str(tmp_path / "served"), "--user", "alice"]
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    url = token = ""
    deadline = time.monotonic() + 60
    while not (url and token and time.monotonic() < deadline):
        line = lines.get(timeout=60)
        if line.startswith("Local Hub serving"):
            url = line.rsplit(" at ", 1)[1].strip()
        if line.startswith("Write token"):
            token = line.rsplit(": ", 1)[1].strip()
    return proc, url, token, lines


def _stop(proc: subprocess.Popen, lines: queue.Queue) -> str:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.2)  # the reader thread drains the last lines
    out = []
    while not lines.empty():
        out.append(lines.get())
    return "".join(out)


@pytest.mark.parametrize("quiet", [False, True])
def test_serve_logs_one_line_per_request_and_stops_on_ctrl_c_with_one_line(tmp_path, hf_home, quiet):
    proc, url, token, lines = _serve(tmp_path, *(["--quiet"] if quiet else []))
    try:
        with use_local_hub(url, hf_home):
            HfApi(token=token).whoami()
            HfApi(token=token).create_repo("alice/model")
            assert HfApi(token=False).model_info("alice/model").id == "alice/model"
    finally:
        out = _stop(proc, lines)
    request_lines = [line for line in out.splitlines() if " /api/" in line]
    if quiet:
        assert request_lines == []
    else:
        assert [line.split()[1:4] for line in request_lines] == [
            ["GET", "/api/whoami-v2", "200"],
            ["POST", "/api/repos/create", "200"],
            ["GET", "/api/models/alice/model", "200"],
        ]
        assert all(line.split()[4].endswith("B") and line.split()[5].endswith("ms") for line in request_lines)
    assert token not in out and "Authorization" not in out
    assert "Local Hub stopped." in out and "nothing was moved" not in out


def test_hub_help_shows_one_example_a_line(capsys):
    with pytest.raises(SystemExit):
        main(["hub", "--help"])
    lines = capsys.readouterr().out.splitlines()
    examples = [line.strip() for line in lines if line.strip().startswith(("hfsoup hub", "HF_ENDPOINT="))]
    assert len(examples) >= 5 and all(e.count("hfsoup hub") <= 1 for e in examples)
    assert any(e.startswith("hfsoup hub gc") for e in examples)


# Bounds ----------------------------------------------------------------------------------------------------------
BAD_REQUESTS = [
    ("GET", "/api/models?limit=abc", b""),
    ("GET", "/api/models?limit=0", b""),
    ("GET", "/api/models?sort=__class__", b""),
    ("GET", "/api/models?direction=2", b""),
    ("GET", "/api/models?author=../alice", b""),
    ("GET", "/api/datasets?cursor=-1", b""),
    ("GET", "/api/organizations/..%2F..%2Fetc/settings/repositories", b""),
    ("POST", "/api/models/alice/repo/duplicate", b'{"repository": "../escape"}'),
    ("POST", "/api/models/alice/repo/duplicate", b'{"repository": 5}'),
    ("POST", "/api/models/alice/repo/duplicate", b'{"repository": "alice/c", "visibility": "secret"}'),
    ("POST", "/api/repos/move", b'{"fromRepo": "alice/repo", "toRepo": "alice/../x"}'),
    ("POST", "/api/repos/move", b'{"fromRepo": "alice/repo", "toRepo": "team/x", "type": "bucket"}'),
    ("POST", "/api/repos/move", b'{"fromRepo": ["alice/repo"], "toRepo": "team/x"}'),
    ("POST", "/api/models/alice/repo/super-squash/main", b'{"message": 5}'),
    ("GET", "/api/models/alice/repo/discussions?type=evil", b""),
    ("GET", "/api/models/alice/repo/discussions?p=-1", b""),
    ("GET", "/api/models/alice/repo/discussions/0", b""),
    ("GET", "/api/models/alice/repo/discussions/abc", b""),
    ("POST", "/api/models/alice/repo/discussions", b'{"title": ""}'),
    ("POST", "/api/models/alice/repo/discussions", b'{"title": 5}'),
    ("POST", "/api/models/alice/repo/discussions", b'{"title": "t", "pullRequest": "yes"}'),
    ("POST", "/api/models/alice/repo/discussions", json.dumps({"title": "t" * 201}).encode()),
    ("POST", "/api/models/alice/repo/discussions/1/comment", json.dumps({"comment": "c" * 70000}).encode()),
    ("POST", "/api/models/alice/repo/discussions/1/comment", b'{"comment": []}'),
    ("POST", "/api/models/alice/repo/discussions/1/status", b'{"status": "merged"}'),
    ("POST", "/api/models/alice/repo/discussions/1/merge", b'{"comment": 5}'),
    ("POST", "/api/models/alice/repo/discussions/1/merge", b"{}"),  # a discussion, not a pull request
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS, ids=[f"{m} {p[:60]}" for m, p, _ in BAD_REQUESTS])
def test_new_endpoints_refuse_bad_input_with_a_400(hub, alice, method, path, body):
    alice.create_repo("alice/repo")
    alice.create_discussion("alice/repo", title="A question")
    before = sorted(p.relative_to(hub.root) for p in hub.root.rglob("*") if ".lock" not in p.name)
    headers = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
    answer = get_session().request(method, hub.url + path, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json() and "Traceback" not in answer.text
    assert sorted(p.relative_to(hub.root) for p in hub.root.rglob("*") if ".lock" not in p.name) == before


def test_a_listing_page_is_capped_whatever_limit_asks(hub, alice):
    for name in ("one", "two", "three"):
        alice.create_repo(f"alice/{name}")
    answer = get_session().get(f"{hub.url}/api/models", params={"limit": "100000"})
    assert answer.status_code == 200 and len(answer.json()) == 2  # this server's page size
    assert "cursor=2" in answer.links["next"]["url"]
    assert len(list(alice.list_models(limit=100000))) == 3  # the client follows the Link header
