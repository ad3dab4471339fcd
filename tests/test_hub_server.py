"""The local Hub server, exercised through real HTTP by the real clients: huggingface_hub, transformers, datasets."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from huggingface_hub import HfApi, RepoCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from hfsoup.errors import HfsoupError
from hfsoup.localhub.server import LocalHubServer
from hfsoup.testing.env import use_local_hub

TOKEN = "hf_local_test_token"
README = """---
license: apache-2.0
tags:
- tiny
---
# A tiny repo
"""


@pytest.fixture
def api(local_hub) -> HfApi:
    return HfApi()


def _upload(api: HfApi, repo_id: str, path: str, data: bytes, **kwargs) -> str:
    return api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo_id, **kwargs).oid


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _safetensors_bytes(seed: int = 0) -> bytes:
    import torch
    from safetensors.torch import save

    generator = torch.Generator().manual_seed(seed)
    return save({"w": torch.randn(4, 3, generator=generator), "b": torch.zeros(3)}, metadata={"format": "pt"})


def test_create_repo_exist_ok_and_conflict(api):
    url = api.create_repo("org/model")
    assert (url.repo_id, url.repo_type, url.endpoint) == ("org/model", "model", api.endpoint)
    assert api.create_repo("org/model", exist_ok=True).repo_id == "org/model"  # the 409 carries the url
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("org/model")
    assert excinfo.value.response.status_code == 409
    # A new repo holds the Hub's initial commit with `.gitattributes`.
    assert api.list_repo_files("org/model") == [".gitattributes"]
    assert len(api.list_repo_commits("org/model")) == 1


def test_upload_regular_and_lfs_files_then_model_info(api, tmp_path):
    api.create_repo("org/model")
    first = _upload(api, "org/model", "config.json", b'{"hidden_size": 32}')
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(_safetensors_bytes())
    (folder / "sub" / "notes.txt").write_text("hello")
    (folder / "empty.bin").write_bytes(b"")  # empty files are always regular, even with an LFS extension
    (folder / "blob.dat").write_bytes(b"\x00\x01binary")  # binary content goes to LFS whatever its name
    second = api.upload_folder(folder_path=folder, repo_id="org/model", commit_message="weights").oid

    info = api.model_info("org/model", files_metadata=True)
    assert info.sha == second
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "sub/notes.txt",
        "empty.bin",
        "blob.dat",
    }
    weights = (folder / "model.safetensors").read_bytes()
    assert siblings["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["model.safetensors"].size == len(weights)
    assert siblings["config.json"].lfs is None and siblings["empty.bin"].lfs is None
    assert siblings["blob.dat"].lfs is not None
    assert siblings["config.json"].blob_id == hashlib.sha1(b"blob 19\0" + b'{"hidden_size": 32}').hexdigest()

    old = api.model_info("org/model", revision=first)
    assert old.sha == first
    assert sorted(s.rfilename for s in old.siblings) == [".gitattributes", "config.json"]

    # Re-uploading identical content is skipped client-side: preupload reports the oids already there.
    assert api.upload_folder(folder_path=folder, repo_id="org/model").oid == second


def test_tree_listing_paths_info_and_paging(api, local_hub):
    api.create_repo("org/model")
    files = {f"dir/file{i}.txt": f"content {i}".encode() for i in range(5)}
    files["top.json"] = b"{}"
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    api.create_commit("org/model", operations=operations, commit_message="many files")
    expected = sorted([".gitattributes", *files])
    assert sorted(api.list_repo_files("org/model")) == expected

    local_hub.page_size = 2  # Forces several pages, followed through `Link: rel="next"`.
    recursive = list(api.list_repo_tree("org/model", recursive=True))
    assert sorted(e.path for e in recursive if hasattr(e, "blob_id")) == expected
    assert [e.path for e in recursive if hasattr(e, "tree_id")] == ["dir"]
    top = [e.path for e in api.list_repo_tree("org/model")]
    assert sorted(top) == [".gitattributes", "dir", "top.json"]
    in_dir = list(api.list_repo_tree("org/model", path_in_repo="dir", expand=True))
    assert len(in_dir) == 5 and all(e.last_commit.title == "many files" for e in in_dir)
    assert len(api.list_repo_commits("org/model")) == 2  # commits page too

    infos = api.get_paths_info("org/model", ["top.json", "dir", "missing.txt"])
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "top.json"), ("RepoFolder", "dir")]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("org/model", path_in_repo="nope"))


def test_downloads_at_branch_and_at_older_commit(api):
    api.create_repo("org/model")
    old = _upload(api, "org/model", "config.json", b'{"v": 1}')
    _upload(api, "org/model", "model.safetensors", _safetensors_bytes(0))
    new = _upload(api, "org/model", "config.json", b'{"v": 2}')

    assert _read(hf_hub_download("org/model", "config.json")) == b'{"v": 2}'
    assert _read(hf_hub_download("org/model", "config.json", revision=old)) == b'{"v": 1}'
    assert _read(hf_hub_download("org/model", "model.safetensors")) == _safetensors_bytes(0)

    snapshot_old = snapshot_download("org/model", revision=old)
    assert snapshot_old.endswith(old)
    assert _read(f"{snapshot_old}/config.json") == b'{"v": 1}'
    snapshot_main = snapshot_download("org/model")
    assert snapshot_main.endswith(new)
    assert _read(f"{snapshot_main}/model.safetensors") == _safetensors_bytes(0)


def test_safetensors_metadata_and_range_requests(api, local_hub):
    api.create_repo("org/model")
    weights = _safetensors_bytes()
    _upload(api, "org/model", "model.safetensors", weights)
    metadata = api.get_safetensors_metadata("org/model")
    tensors = metadata.files_metadata["model.safetensors"].tensors
    assert (tensors["w"].shape, tensors["b"].dtype) == ([4, 3], "F32")

    url = f"{local_hub.url}/org/model/resolve/main/model.safetensors"
    response = get_session().get(url, headers={"Range": "bytes=8-15"})
    assert response.status_code == 206
    assert response.content == weights[8:16]
    assert response.headers["Content-Range"] == f"bytes 8-15/{len(weights)}"
    assert get_session().get(url, headers={"Range": "bytes=-4"}).content == weights[-4:]
    assert get_session().get(url, headers={"Range": f"bytes={len(weights)}-"}).status_code == 416
    head = get_session().head(url)
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(weights).hexdigest()
    assert int(head.headers["X-Linked-Size"]) == len(weights) and head.headers["X-Repo-Commit"]


def test_missing_repo_revision_and_file_raise_the_hub_errors(api):
    api.create_repo("org/model")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/model", ".gitattributes", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/model", "missing.json")
    with pytest.raises(RevisionNotFoundError):
        _upload(api, "org/model", "x.txt", b"x", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/model")  # the same id, but no dataset repo


def test_branches_tags_refs_and_commits(api):
    api.create_repo("org/model")
    first = _upload(api, "org/model", "config.json", b"main v1", commit_message="first")
    api.create_branch("org/model", branch="feature/x")
    on_branch = _upload(api, "org/model", "config.json", b"branch v2", revision="feature/x", commit_message="b")
    api.create_tag("org/model", tag="v1.0", revision=first)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_branch("org/model", branch="feature/x")
    assert excinfo.value.response.status_code == 409
    api.create_branch("org/model", branch="feature/x", exist_ok=True)

    assert _read(hf_hub_download("org/model", "config.json", revision="feature/x")) == b"branch v2"
    assert _read(hf_hub_download("org/model", "config.json")) == b"main v1"
    assert _read(hf_hub_download("org/model", "config.json", revision="v1.0")) == b"main v1"
    assert api.model_info("org/model", revision="feature/x").sha == on_branch
    assert api.model_info("org/model", revision=first[:10]).sha == first  # unambiguous short SHA

    refs = api.list_repo_refs("org/model")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": first, "feature/x": on_branch}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", first)]

    commits = api.list_repo_commits("org/model", revision="feature/x")
    assert [c.title for c in commits] == ["b", "first", "initial commit"]
    assert commits[0].commit_id == on_branch

    api.delete_branch("org/model", branch="feature/x")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="feature/x")


def test_pull_request_commit(api):
    api.create_repo("org/model")
    main = _upload(api, "org/model", "config.json", b"main")
    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="config.json", repo_id="org/model", create_pr=True)
    assert pr.pr_revision == "refs/pr/1"
    assert api.model_info("org/model").sha == main  # main did not move
    assert _read(hf_hub_download("org/model", "config.json", revision="refs/pr/1")) == b"proposal"
    # Some clients send the revision with literal slashes: the shortest prefix naming a revision wins.
    raw = get_session().get(f"{api.endpoint}/org/model/resolve/refs/pr/1/config.json")
    assert (raw.status_code, raw.content, raw.headers["X-Repo-Commit"]) == (200, b"proposal", pr.oid)
    pulls = api.list_repo_refs("org/model", include_pull_requests=True).pull_requests
    assert [(p.ref, p.target_commit) for p in pulls] == [("refs/pr/1", pr.oid)]


def test_delete_file_folder_and_parent_commit_check(api):
    api.create_repo("org/model")
    _upload(api, "org/model", "sub/deep/c.txt", b"c")
    before = _upload(api, "org/model", "a.txt", b"a")
    api.delete_file("a.txt", repo_id="org/model")
    api.delete_folder("sub", repo_id="org/model")
    assert api.list_repo_files("org/model") == [".gitattributes"]
    assert _read(hf_hub_download("org/model", "a.txt", revision=before)) == b"a"
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("a.txt", repo_id="org/model")
    with pytest.raises(HfHubHTTPError) as excinfo:
        _upload(api, "org/model", "b.txt", b"b", parent_commit=before)  # stale parent
    assert excinfo.value.response.status_code == 412
    assert api.list_repo_files("org/model") == [".gitattributes"]


def test_private_repo_needs_a_token(api):
    with_token = HfApi(token=TOKEN)
    with_token.create_repo("org/secret", private=True)
    with_token.upload_file(path_or_fileobj=b"classified", path_in_repo="x.txt", repo_id="org/secret")
    with pytest.raises(RepositoryNotFoundError) as excinfo:
        api.model_info("org/secret")
    assert excinfo.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/secret", "x.txt")
    assert with_token.model_info("org/secret").private is True
    assert _read(hf_hub_download("org/secret", "x.txt", token=TOKEN)) == b"classified"

    assert with_token.whoami()["name"] == "hfsoup-local"
    with_token.update_repo_settings("org/secret", private=False)
    assert api.model_info("org/secret").private is False


def test_lfs_upload_with_wrong_sha256_is_rejected(api, local_hub):
    api.create_repo("org/model")
    data, session = b"real bytes" * 100, get_session()
    claimed = hashlib.sha256(b"other bytes").hexdigest()
    batch = session.post(
        f"{local_hub.url}/org/model.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": claimed, "size": len(data)}]},
    ).json()
    upload = session.put(batch["objects"][0]["actions"]["upload"]["href"], content=data)
    assert upload.status_code == 400 and "does not match" in upload.json()["error"]
    assert session.post(f"{batch['objects'][0]['actions']['verify']['href']}", json={}).status_code == 404

    # A correct upload, sent with chunked transfer encoding this time, is stored and then needs no action.
    oid = hashlib.sha256(data).hexdigest()
    objects = [{"oid": oid, "size": len(data)}]
    batch = session.post(
        f"{local_hub.url}/org/model.git/info/lfs/objects/batch", json={"operation": "upload", "objects": objects}
    )
    href = batch.json()["objects"][0]["actions"]["upload"]["href"]
    assert session.put(href, content=iter([data[:7], data[7:]])).status_code == 200
    again = session.post(
        f"{local_hub.url}/org/model.git/info/lfs/objects/batch", json={"operation": "upload", "objects": objects}
    )
    assert "actions" not in again.json()["objects"][0]

    # A commit naming the never-stored object is refused, and the branch does not move.
    head = api.model_info("org/model").sha
    lines = [
        {"key": "header", "value": {"summary": "bad", "description": ""}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": claimed, "size": len(data)}},
    ]
    commit = session.post(
        f"{local_hub.url}/api/models/org/model/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert commit.status_code == 422 and "never uploaded" in commit.json()["error"]
    assert api.model_info("org/model").sha == head


def test_readme_card_data_and_validate_yaml(api):
    api.create_repo("org/model")
    _upload(api, "org/model", "README.md", README.encode())
    info = api.model_info("org/model")
    assert info.card_data.license == "apache-2.0" and info.tags == [
        "tiny",
        "license:apache-2.0",
    ]  # as the Hub derives them
    RepoCard(README).validate()
    with pytest.raises(ValueError, match="Invalid metadata"):
        _upload(api, "org/model", "README.md", b"---\nkey: [unclosed\n---\n")


def test_dataset_and_space_repos(api):
    api.create_repo("org/data", repo_type="dataset")
    api.create_repo("org/app", repo_type="space", space_sdk="static")
    _upload(api, "org/data", "data.csv", b"a,b\n1,2\n", repo_type="dataset")
    _upload(api, "org/app", "index.html", b"<html></html>", repo_type="space")
    assert _read(hf_hub_download("org/data", "data.csv", repo_type="dataset")) == b"a,b\n1,2\n"
    assert _read(hf_hub_download("org/app", "index.html", repo_type="space")) == b"<html></html>"
    assert api.space_info("org/app").sdk == "static"
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/data")
    api.delete_repo("org/data", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/data")


def test_concurrent_commits_to_one_branch_all_land(api):
    api.create_repo("org/model")
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            _upload(api, "org/model", f"file{i}.txt", f"{i}".encode())
        except BaseException as err:  # Reported by the assertion below.
            errors.append(err)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(api.list_repo_files("org/model")) == 7
    assert len(api.list_repo_commits("org/model")) == 7


def test_transformers_push_to_hub_and_from_pretrained(api):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    # transformers caches one HfApi (endpoint included) at first use; `use_local_hub` resets it for each test, so
    # running this after other transformers tests also checks that reset.
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    model = BertForSequenceClassification(config).eval()
    model.push_to_hub("org/tiny-bert")
    loaded = BertForSequenceClassification.from_pretrained("org/tiny-bert").eval()

    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    inputs = torch.randint(0, 99, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, loaded(inputs).logits)


def test_datasets_load_dataset_with_yaml_configs(api, tmp_path):
    import datasets

    folder = tmp_path / "glue"
    configs = []
    for config in ("sst2", "cola"):
        files = []
        for split in ("train", "validation"):
            rows = {"sentence": [f"{config} {split} {i}" for i in range(4)], "label": [i % 2 for i in range(4)]}
            path = f"{config}/{split}-00000-of-00001.parquet"
            (folder / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(rows).to_parquet(folder / path)
            files.append(f"  - split: {split}\n    path: {path}\n")
        configs.append(f"- config_name: {config}\n  data_files:\n{''.join(files)}")
    (folder / "README.md").write_text(f"---\nconfigs:\n{''.join(configs)}---\n# GLUE subset\n")
    api.create_repo("org/glue", repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id="org/glue", repo_type="dataset")

    loaded = datasets.load_dataset("org/glue", "cola")
    assert set(loaded) == {"train", "validation"}
    assert loaded["validation"]["sentence"] == [f"cola validation {i}" for i in range(4)]
    assert api.dataset_info("org/glue").card_data.configs[0]["config_name"] == "sst2"


def test_store_persists_across_restart(tmp_path, hf_home):
    root = tmp_path / "persistent_hub"
    with LocalHubServer(root, anonymous_writes=True) as hub, use_local_hub(hub.url, hf_home):
        HfApi().create_repo("org/model")
        sha = _upload(HfApi(), "org/model", "model.safetensors", _safetensors_bytes(3))
    with LocalHubServer(root) as hub, use_local_hub(hub.url, tmp_path / "fresh_home"):
        assert HfApi().model_info("org/model").sha == sha
        assert _read(hf_hub_download("org/model", "model.safetensors")) == _safetensors_bytes(3)


def test_refuses_non_loopback_host(tmp_path):
    with pytest.raises(HfsoupError, match="not a loopback address"):
        LocalHubServer(tmp_path, host="0.0.0.0")
    LocalHubServer(tmp_path, host="0.0.0.0", allow_remote=True)  # allowed when asked for; not started
    with pytest.raises(RuntimeError, match="start"):
        _ = LocalHubServer(tmp_path).url
