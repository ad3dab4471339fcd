"""The local Hub on a shared machine: who may write and read, and what a hostile or broken client cannot do.

Every test attacks a real server over real HTTP (huggingface_hub, the `hf` CLI, transformers, or raw sockets where a
client would refuse to send the bad request) and checks on disk or on the server what did or did not happen.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from urllib.parse import quote

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import get_session

from hfsoup.cli import main
from hfsoup.localhub.access import HubUser, TokenFileError, load_token_file
from hfsoup.localhub.server import LocalHubServer
from hfsoup.testing.env import use_local_hub

ALICE = "hf_AliceTokenAliceTokenAliceToken01"
BOB = "hf_BobTokenBobTokenBobTokenBobToken"
NO_TOKEN = "Invalid username or password."
SECRET = b"\x00private weights of alice\x00" * 64  # binary: goes through LFS


@pytest.fixture
def hub(tmp_path, hf_home):
    """A shared local Hub: alice (also of org 'team') and bob, short timeouts so stalls show quickly."""
    tokens = {ALICE: HubUser("alice", ("team",)), BOB: HubUser("bob")}
    with LocalHubServer(tmp_path / "store", tokens=tokens, timeout=2) as server, use_local_hub(server.url, hf_home):
        yield server


def repo_dir(hub: LocalHubServer, repo_id: str) -> Path:
    return hub.root / "repos" / "models" / repo_id


def head_of(hub: LocalHubServer, repo_id: str) -> dict:
    return json.loads((repo_dir(hub, repo_id) / "refs.json").read_text())


def status_of(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(HfHubHTTPError) as excinfo:
        call(*args, **kwargs)
    return excinfo.value.response.status_code, str(excinfo.value)


def raw(hub: LocalHubServer, data: bytes, *, wait: float = 10.0) -> bytes:
    """Send `data` on a fresh connection and return everything the server answers until it closes or `wait`."""
    host, port = hub.url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server answered and closed before taking it all
            pass
        chunks, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                break  # a keep-alive answer: the headers (and a short body) are enough for these tests
        return b"".join(chunks)


def request_bytes(method: str, path: str, headers: dict, body: bytes = b"", *, host: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def lfs_upload(hub: LocalHubServer, token: str, repo_id: str, data: bytes) -> dict:
    """Ask the batch API to upload `data` to `repo_id`; its answer for the object."""
    batch = get_session().post(
        f"{hub.url}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert batch.status_code == 200, batch.text
    return batch.json()["objects"][0]


# Writes ----------------------------------------------------------------------------------------------------------
def test_writes_without_a_token_get_the_hubs_401(hub):
    api = HfApi(token=False)
    assert status_of(api.create_repo, "alice/x")[0] == 401
    assert NO_TOKEN in status_of(api.create_repo, "alice/x")[1]
    HfApi(token=ALICE).create_repo("alice/public")
    before = head_of(hub, "alice/public")
    assert status_of(api.upload_file, path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/public")[0] == 401
    assert status_of(api.create_branch, "alice/public", branch="b")[0] == 401
    assert status_of(api.update_repo_settings, "alice/public", private=True)[0] == 401
    assert status_of(api.delete_repo, "alice/public")[0] == 401
    assert not repo_dir(hub, "alice/x").exists()
    assert head_of(hub, "alice/public") == before and api.model_info("alice/public").private is False


def test_another_users_token_cannot_write_to_a_namespace(hub):
    alice, bob = HfApi(token=ALICE), HfApi(token=BOB)
    code, message = status_of(bob.create_repo, "alice/x")
    assert code == 403 and 'You don\'t have the rights to create a model under the namespace "alice"' in message
    assert status_of(bob.create_repo, "team/x")[0] == 403  # bob is not in org 'team'; alice is
    alice.create_repo("alice/public")
    alice.create_repo("team/shared")
    alice.upload_file(path_or_fileobj=b"ok", path_in_repo="ok.txt", repo_id="team/shared")
    alice.create_tag("alice/public", tag="v1")
    before = head_of(hub, "alice/public")
    attacks = [
        (bob.upload_file, {"path_or_fileobj": b"evil", "path_in_repo": "x.txt", "repo_id": "alice/public"}),
        (bob.upload_file, {"path_or_fileobj": SECRET, "path_in_repo": "w.bin", "repo_id": "alice/public"}),
        (bob.delete_file, {"path_in_repo": ".gitattributes", "repo_id": "alice/public"}),
        (bob.create_branch, {"repo_id": "alice/public", "branch": "evil"}),
        (bob.delete_tag, {"repo_id": "alice/public", "tag": "v1"}),
        (bob.update_repo_settings, {"repo_id": "alice/public", "private": True}),
        (bob.delete_repo, {"repo_id": "alice/public"}),
        (bob.upload_file, {"path_or_fileobj": b"evil", "path_in_repo": "x.txt", "repo_id": "team/shared"}),
    ]
    for call, kwargs in attacks:
        assert status_of(call, **kwargs)[0] == 403, (call.__name__, kwargs)
    assert head_of(hub, "alice/public") == before and "refs/heads/evil" not in before
    assert json.loads((repo_dir(hub, "alice/public") / "repo.json").read_text())["private"] is False
    assert sorted(HfApi().list_repo_files("team/shared")) == [".gitattributes", "ok.txt"]


def test_unknown_tokens_are_refused_and_whoami_names_the_user(hub):
    assert HfApi().whoami(ALICE)["name"] == "alice"
    assert [org["name"] for org in HfApi().whoami(ALICE)["orgs"]] == ["team"]
    assert HfApi().whoami(BOB)["orgs"] == []
    HfApi(token=ALICE).create_repo("alice/public")
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi().whoami("hf_UnknownUnknownUnknownUnknown00")
    assert excinfo.value.response.status_code == 401
    assert get_session().get(f"{hub.url}/api/whoami-v2").status_code == 401  # no token at all
    # An unknown token is a 401 even on a public read, as on the Hub (not a "repo not found").
    code, message = status_of(HfApi(token="hf_UnknownUnknownUnknownUnknown00").model_info, "alice/public")
    assert code == 401 and "Invalid credentials in Authorization header" in message


# Reads -----------------------------------------------------------------------------------------------------------
def test_a_stranger_reading_a_private_repo_sees_a_missing_repo(hub):
    alice = HfApi(token=ALICE)
    alice.create_repo("alice/secret", private=True)
    alice.upload_file(path_or_fileobj=SECRET, path_in_repo="model.bin", repo_id="alice/secret")
    alice.create_repo("team/secret", private=True)
    for token, expected in ((BOB, 404), (False, 401)):
        for repo_id in ("alice/secret", "team/secret", "alice/missing"):
            with pytest.raises(RepositoryNotFoundError) as excinfo:
                HfApi(token=token).model_info(repo_id)
            response = excinfo.value.response
            assert (response.status_code, response.headers["X-Error-Code"]) == (expected, "RepoNotFound")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("alice/secret", "model.bin", token=token)
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).update_repo_settings("alice/secret", private=False)
    assert json.loads((repo_dir(hub, "alice/secret") / "repo.json").read_text())["private"] is True
    assert Path(hf_hub_download("alice/secret", "model.bin", token=ALICE)).read_bytes() == SECRET
    assert alice.model_info("team/secret").private is True  # alice is a member of 'team'


def test_a_private_lfs_blob_is_not_served_by_its_sha(hub):
    alice, bob = HfApi(token=ALICE), HfApi(token=BOB)
    alice.create_repo("alice/secret", private=True)
    alice.upload_file(path_or_fileobj=SECRET, path_in_repo="model.bin", repo_id="alice/secret")
    oid, size = hashlib.sha256(SECRET).hexdigest(), len(SECRET)
    assert hub.store.blobs.has(oid, size)
    session = get_session()
    answers = [session.get(f"{hub.url}/_lfs/{oid}/{size}", headers={"Authorization": f"Bearer {BOB}"})]
    answers.append(session.get(f"{hub.url}/_lfs/{oid}/{size}?repo=model/alice/secret&op=download&exp=9999999999"))
    bob.create_repo("bob/mine")
    batch = f"{hub.url}/bob/mine.git/info/lfs/objects/batch"
    download = {"operation": "download", "objects": [{"oid": oid, "size": size}]}
    answers.append(session.post(batch, json=download, headers={"Authorization": f"Bearer {BOB}"}))
    assert "actions" not in answers[-1].json()["objects"][0]  # bob's repo does not hold it
    # The stored blob is not "already there" for bob: he must upload the bytes, which he does not have.
    assert "upload" in lfs_upload(hub, BOB, "bob/mine", SECRET)["actions"]
    header = {"key": "header", "value": {"summary": "steal"}}
    steal = {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": size}}
    answers.append(
        session.post(
            f"{hub.url}/api/models/bob/mine/commit/main",
            content=(json.dumps(header) + "\n" + json.dumps(steal)).encode(),
            headers={"Authorization": f"Bearer {BOB}", "Content-Type": "application/x-ndjson"},
        )
    )
    assert [a.status_code for a in answers] == [403, 403, 200, 422]
    assert all(SECRET[:40] not in a.content for a in answers)
    assert bob.list_repo_files("bob/mine") == [".gitattributes"]
    # Alice's own signed URL works, and only for her object.
    alice_batch = {"operation": "download", "objects": [{"oid": oid, "size": size}]}
    href = session.post(
        f"{hub.url}/alice/secret.git/info/lfs/objects/batch",
        json=alice_batch,
        headers={"Authorization": f"Bearer {ALICE}"},
    ).json()["objects"][0]["actions"]["download"]["href"]
    assert session.get(href).content == SECRET
    other = hashlib.sha256(b"other").hexdigest()
    assert session.get(href.replace(oid, other).replace(f"/{size}?", "/5?")).status_code == 403
    assert session.get(href.rsplit("&sig=", 1)[0] + "&sig=%C3%A9").status_code == 403  # not even a 500


def test_an_upload_url_needs_its_signature(hub):
    HfApi(token=BOB).create_repo("bob/mine")
    data = b"\x00bob's own bytes\x00" * 100
    oid = hashlib.sha256(data).hexdigest()
    session = get_session()
    unsigned = session.put(
        f"{hub.url}/_lfs/{oid}/{len(data)}", content=data, headers={"Authorization": f"Bearer {BOB}"}
    )
    assert unsigned.status_code == 403 and not hub.store.blobs.has(oid)
    href = lfs_upload(hub, BOB, "bob/mine", data)["actions"]["upload"]["href"]
    other = b"\x00something else\x00" * 100
    forged = href.replace(oid, hashlib.sha256(other).hexdigest()).replace(f"/{len(data)}?", f"/{len(other)}?")
    assert session.put(forged, content=other).status_code == 403
    assert not hub.store.blobs.has(hashlib.sha256(other).hexdigest())
    assert session.put(href, content=data).status_code == 200 and hub.store.blobs.has(oid, len(data))


def test_a_request_naming_another_host_is_refused(hub):
    host = hub.url.split("://")[1]
    port = host.rsplit(":", 1)[1]

    def create(name: str, host: str) -> bytes:
        body = json.dumps({"name": name, "organization": "alice"}).encode()
        headers = {"Authorization": f"Bearer {ALICE}", "Content-Length": str(len(body))}
        return raw(hub, request_bytes("POST", "/api/repos/create", headers, body, host=host))

    # A page on attacker.example whose DNS name now resolves to 127.0.0.1 sends its own name as the Host.
    for bad in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{int(port) + 1}", f"10.1.2.3:{port}", ""):
        assert create("rebound", bad).startswith(b"HTTP/1.1 421"), bad
    assert not repo_dir(hub, "alice/rebound").exists()
    assert create("by-name", f"localhost:{port}").startswith(b"HTTP/1.1 200")
    assert create("by-address", host).startswith(b"HTTP/1.1 200")
    assert create("by-other-loopback", f"127.0.0.2:{port}").startswith(b"HTTP/1.1 200")
    assert all(repo_dir(hub, f"alice/{name}").exists() for name in ("by-name", "by-address", "by-other-loopback"))


# Limits ----------------------------------------------------------------------------------------------------------
def test_a_100mb_json_body_is_refused_without_being_held_in_memory(tmp_path):
    tokens = {ALICE: HubUser("alice")}
    with LocalHubServer(tmp_path / "store", tokens=tokens, max_json_bytes=1 << 20, timeout=5) as hub:
        host = hub.url.split("://")[1]
        auth = {"Authorization": f"Bearer {ALICE}"}
        # Announced: refused from the headers alone, before a byte of the body is sent.
        answer = raw(hub, request_bytes("POST", "/api/repos/create", {**auth, "Content-Length": 100 << 20}, host=host))
        assert answer.startswith(b"HTTP/1.1 413")
        # Sent for real: chunked (no length to refuse it by), and as one 100 MB line of a commit (a streamed body,
        # under the upload cap): the server reads up to its JSON cap, answers 413 and hangs up.
        HfApi(endpoint=hub.url, token=ALICE).create_repo("alice/model")
        chunk = b"[" * (1 << 20)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(100)) + b"0\r\n\r\n"
        line = b'{"key": "header", "value": {"summary": "' + b"x" * (100 << 20) + b'"}}'
        requests = [
            request_bytes("POST", "/api/repos/create", {**auth, "Transfer-Encoding": "chunked"}, chunked, host=host),
            request_bytes(
                "POST", "/api/models/alice/model/commit/main", {**auth, "Content-Length": len(line)}, line, host=host
            ),
        ]
        del chunked, line
        before = head_of(hub, "alice/model")
        for request in requests:
            tracemalloc.start()
            try:
                answer = _send_while_reading(hub, request)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
            assert peak < 12 << 20, peak  # the cap (1 MiB) and a chunk or two, not 100 MB
        assert [p.parent.name for p in hub.root.rglob("repo.json")] == ["model"] and head_of(
            hub, "alice/model"
        ) == before


def _send_while_reading(hub: LocalHubServer, data: bytes) -> bytes:
    """Send `data` from a thread while reading the answer: the server may answer (and hang up) mid-body."""
    host, port = hub.url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:

        def send() -> None:
            try:
                sock.sendall(data)
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = sock.recv(65536)
        sender.join(10)
        return answer


def test_a_negative_or_malformed_content_length_is_400(hub):
    host = hub.url.split("://")[1]
    framings = (
        ["Content-Length: -1"],
        ["Content-Length: 1e3"],
        ["Content-Length: 5", "Content-Length: 6"],
        ["Content-Length: \xb2"],  # "²": str.isdigit() says yes, int() says no
        ["Content-Length: " + "9" * 5000],  # past int()'s limit on digits
    )
    for framing in framings:
        request = f"POST /api/repos/create HTTP/1.1\r\nHost: {host}\r\n" + "\r\n".join(framing) + "\r\n\r\n{}"
        answer = raw(hub, request.encode("latin-1"), wait=5)
        assert answer.startswith(b"HTTP/1.1 400") and b"Connection: close" in answer, (framing, answer[:100])
        assert b'"error"' in answer and b"Traceback" not in answer
    _wait_for(lambda: hub.connections.value == 0)


def test_a_short_body_frees_its_thread_after_the_timeout(tmp_path):
    with LocalHubServer(tmp_path / "store", tokens={ALICE: HubUser("alice")}, timeout=0.5) as hub:
        host, port = hub.url.split("://")[1].rsplit(":", 1)
        headers = {"Authorization": f"Bearer {ALICE}", "Content-Length": "100"}
        start = time.monotonic()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(request_bytes("POST", "/api/repos/create", headers, b'{"name": "x"', host=f"{host}:{port}"))
            sock.settimeout(10)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # until the server closes the connection
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5
        with socket.create_connection((host, int(port))) as idle:  # connected, sends nothing
            idle.settimeout(10)
            assert idle.recv(65536) == b""
        _wait_for(lambda: hub.connections.value == 0)
        assert not (hub.root / "repos" / "models" / "alice").exists()


def _wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_many_slow_clients_hold_a_bounded_number_of_threads(tmp_path, hf_home):
    with (
        LocalHubServer(tmp_path / "store", anonymous_writes=True, timeout=0.5, max_connections=4) as hub,
        use_local_hub(hub.url, hf_home),
    ):
        host, port = hub.url.split("://")[1].rsplit(":", 1)
        threads_before = threading.active_count()
        slow = [socket.create_connection((host, int(port))) for _ in range(24)]
        for sock in slow:
            sock.sendall(b"GET /api/whoami-v2 HTTP/1.1\r\n")  # a request line, then nothing more
        time.sleep(0.3)
        assert threading.active_count() - threads_before <= 4
        # Each slow client is answered (408 after the timeout, or 503 when it waited for a worker) and let go.
        for sock in slow:
            sock.settimeout(15)
            readable, _, _ = select.select([sock], [], [], 15)
            assert readable and sock.recv(65536)[:12] in (b"", b"HTTP/1.1 408", b"HTTP/1.1 503")
            sock.close()
        assert hub.connections.peak <= 4
        _wait_for(lambda: hub.connections.value == 0)
        HfApi().create_repo("org/after-the-storm")  # and the server still works
        assert HfApi().repo_exists("org/after-the-storm")


TYPE_CONFUSED = [
    ("POST", "/api/repos/create", b"[]"),
    ("POST", "/api/repos/create", b'"alice/x"'),
    ("POST", "/api/repos/create", b'{"name": 5}'),
    ("POST", "/api/repos/create", b'{"name": "x", "organization": ["alice"]}'),
    ("POST", "/api/repos/create", b'{"name": "x", "private": "yes"}'),
    ("POST", "/api/repos/create", b'{"name": "x", "type": {}}'),
    ("POST", "/api/repos/create", b'{"name": "x", "visibility": 1}'),
    ("POST", "/api/repos/create", b'{"name": "x", "type": "bogus"}'),
    ("POST", "/api/repos/create", b'{"name": "x", "sdk": 5}'),
    ("PUT", "/api/models/alice/repo/settings", b'{"visibility": 5}'),
    ("POST", "/api/repos/create", b"[" * 100_000),
    ("POST", "/api/repos/create", b"\xff\xfe{}"),
    ("DELETE", "/api/repos/delete", b'{"name": ["x"]}'),
    ("PUT", "/api/models/alice/repo/settings", b'{"private": "no"}'),
    ("PUT", "/api/models/alice/repo/settings", b'{"gated": []}'),
    ("POST", "/api/models/alice/repo/branch/b", b'{"startingPoint": 5}'),
    ("POST", "/api/models/alice/repo/tag/main", b'{"tag": {}}'),
    ("POST", "/api/models/alice/repo/preupload/main", b'{"files": {}}'),
    ("POST", "/api/models/alice/repo/preupload/main", b'{"files": [1]}'),
    ("POST", "/api/models/alice/repo/preupload/main", b'{"files": [{"path": 5}]}'),
    ("POST", "/api/models/alice/repo/preupload/main", b'{"files": [{"path": "a", "size": "big"}]}'),
    ("POST", "/api/models/alice/repo/preupload/main", b'{"files": [{"path": "a", "sample": "!!"}]}'),
    ("POST", "/alice/repo.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": {}}'),
    ("POST", "/alice/repo.git/info/lfs/objects/batch", b'{"operation": []}'),
    ("POST", "/api/models/alice/repo/paths-info/main", b'{"paths": "x"}'),
    ("POST", "/api/models/alice/repo/paths-info/main", b'{"paths": [1]}'),
    ("POST", "/api/models/alice/repo/commit/main", b'{"key": "header", "value": []}'),
    ("POST", "/api/models/alice/repo/commit/main", b'{"key": "header", "value": {"summary": 5}}'),
    ("POST", "/api/models/alice/repo/commit/main", b'[1]\n{"key": "file", "value": {"path": 5}}'),
    ("POST", "/api/models/alice/repo/commit/main", b'{"key": ["file"], "value": {}}'),
    ("POST", "/api/models/alice/repo/commit/main", b'{"key": "header", "value": {"summary": "s", "parentCommit": 5}}'),
    ("POST", "/api/models/alice/repo/commit/main", b'{"key": "file", "value": {"path": "a", "content": 5}}'),
    (
        "POST",
        "/api/models/alice/repo/commit/main",
        b'{"key": "lfsFile", "value": {"path": "a", "oid": "ab", "size": "1"}}',
    ),
    ("POST", "/api/validate-yaml", b'{"content": "---\\nlicense: [apache-2.0]\\n---\\n"}'),
    ("GET", "/api/models/alice/repo/tree/main?cursor=abc", b""),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), TYPE_CONFUSED, ids=[f"{m} {p} {b[:30]!r}" for m, p, b in TYPE_CONFUSED]
)
def test_type_confused_json_is_a_400_never_a_500(hub, method, path, body, caplog):
    HfApi(token=ALICE).create_repo("alice/repo")
    before = head_of(hub, "alice/repo")
    headers = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
    with caplog.at_level(logging.ERROR, logger="hfsoup.localhub.server"):
        answer = get_session().request(method, hub.url + path, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json() and "Traceback" not in answer.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert head_of(hub, "alice/repo") == before


@pytest.mark.parametrize("path", ["a\x00b.txt", "a\nb.txt", "dir\\file.txt", "../escape.txt", "a/../b.txt", "a\rb"])
def test_paths_with_control_characters_backslashes_or_dotdot_are_400(hub, path):
    HfApi(token=ALICE).create_repo("alice/repo")
    before = head_of(hub, "alice/repo")
    headers = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/x-ndjson"}
    lines = [
        {"key": "header", "value": {"summary": "odd path"}},
        {"key": "file", "value": {"path": path, "content": base64.b64encode(b"x").decode(), "encoding": "base64"}},
    ]
    session = get_session()
    body = "\n".join(json.dumps(line) for line in lines).encode()
    assert (
        session.post(f"{hub.url}/api/models/alice/repo/commit/main", content=body, headers=headers).status_code == 400
    )
    preupload = {"files": [{"path": path, "size": 1, "sample": ""}]}
    assert (
        session.post(f"{hub.url}/api/models/alice/repo/preupload/main", json=preupload, headers=headers).status_code
        == 400
    )
    assert head_of(hub, "alice/repo") == before
    # huggingface_hub refuses such repo names itself; the server must too, for clients that do not.
    create = session.post(f"{hub.url}/api/repos/create", json={"name": path.replace("/", "-")}, headers=headers)
    assert create.status_code == 400 and not list((hub.root / "repos" / "models" / "alice").glob("a*"))
    branch = session.post(f"{hub.url}/api/models/alice/repo/branch/{quote(path, safe='')}", headers=headers, json={})
    assert branch.status_code in (400, 404) and head_of(hub, "alice/repo") == before


def test_orphan_uploads_are_removed_at_start_but_not_under_a_running_server(tmp_path, hf_home):
    root = tmp_path / "store"
    with LocalHubServer(root, anonymous_writes=True) as hub, use_local_hub(hub.url, hf_home):
        HfApi().create_repo("org/model")
        HfApi().upload_file(path_or_fileobj=SECRET, path_in_repo="model.bin", repo_id="org/model")
    blob = root / "blobs" / hashlib.sha256(SECRET).hexdigest()[:2] / hashlib.sha256(SECRET).hexdigest()
    orphans = [root / "blobs" / ".upload-crashed1", blob.parent / ".tmp-crashed2"]
    for orphan in orphans:  # what a server killed in the middle of uploads leaves
        orphan.write_bytes(b"half an upload")
    with LocalHubServer(root, anonymous_writes=True) as hub:
        assert not any(orphan.exists() for orphan in orphans)
        assert blob.read_bytes() == SECRET
        in_flight = root / "blobs" / ".upload-in-flight"
        in_flight.write_bytes(b"being uploaded to the running server")
        with LocalHubServer(root, anonymous_writes=True):  # a second server on the same folder cleans nothing
            assert in_flight.exists()
    with LocalHubServer(root, anonymous_writes=True):
        assert not in_flight.exists()


def test_the_traffic_log_is_bounded(tmp_path, hf_home):
    with LocalHubServer(tmp_path / "store", anonymous_writes=True, traffic_limit=5) as hub:
        with use_local_hub(hub.url, hf_home):
            HfApi().create_repo("org/model")
            for _ in range(20):
                HfApi().model_info("org/model")
        assert len(hub.traffic) == 5
        assert hub.traffic[-2:] == list(hub.traffic)[3:] and hub.traffic[-1][:3] == (
            "GET",
            "/api/models/org/model",
            200,
        )


# Token files and the server's own access mode ------------------------------------------------------------------
def test_token_files_are_checked(tmp_path, capsys):
    good = tmp_path / "tokens.json"
    good.write_text(
        json.dumps({"tokens": [{"token": ALICE, "user": "alice", "orgs": ["team"]}, {"token": BOB, "user": "bob"}]})
    )
    good.chmod(0o600)
    assert load_token_file(good) == {ALICE: HubUser("alice", ("team",)), BOB: HubUser("bob")}
    good.chmod(0o644)
    with pytest.raises(TokenFileError, match="readable or writable by other users"):
        load_token_file(good)
    for content in (
        "[]",
        '{"tokens": []}',
        '{"tokens": [{"token": "short", "user": "a"}]}',
        '{"tokens": [{"token": "hf_12345678", "user": "a b"}]}',
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        bad.chmod(0o600)
        with pytest.raises(TokenFileError, match="malformed"):
            load_token_file(bad)
    good.chmod(0o644)
    assert main(["hub", "serve", "--root", str(tmp_path / "store"), "--token-file", str(good)]) == 1
    err = capsys.readouterr().err
    assert "chmod 600" in err and "Traceback" not in err and ALICE not in err


def test_a_server_without_tokens_is_read_only_and_permissive_mode_is_explicit(tmp_path, hf_home):
    with LocalHubServer(tmp_path / "store") as hub, use_local_hub(hub.url, hf_home):
        assert status_of(HfApi().create_repo, "org/model")[0] == 401
        assert status_of(HfApi(token="hf_AnyTokenAnyTokenAnyTokenAnyToken").create_repo, "org/model")[0] == 401
    with LocalHubServer(tmp_path / "store", anonymous_writes=True) as hub, use_local_hub(hub.url, hf_home):
        HfApi().create_repo("org/model", private=True)
        with pytest.raises(RepositoryNotFoundError):  # even here, private repos need a token to be read
            HfApi(token=False).model_info("org/model")


# `hfsoup hub serve` and the real clients -----------------------------------------------------------------------
def _start_serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str, str, queue.Queue, list[str]]:
    """`hfsoup hub serve` in a subprocess; its URL and the token it printed, read from its output."""
    cmd = [sys.executable, "-m", "hfsoup.cli", "hub", "serve", "--root", str(tmp_path / "served"), "--user", "alice"]
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen, url, token = [], "", ""
    while not (url and token):
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            proc.kill()
            raise AssertionError("hfsoup hub serve printed no token: " + "".join(seen)) from None
        seen.append(line)
        if line.startswith("Local Hub serving"):
            url = line.rsplit(" at ", 1)[1].strip()
        if line.startswith("Write token"):
            token = line.rsplit(": ", 1)[1].strip()
    return proc, url, token, lines, seen


def test_hub_serve_needs_its_token_and_the_real_clients_work_with_it(tmp_path, hf_home):
    from transformers import BertConfig, BertModel

    proc, url, token, later, lines = _start_serve(tmp_path)
    try:
        with use_local_hub(url, hf_home):
            code, message = status_of(HfApi(token=False).create_repo, "alice/model")
            assert code == 401 and NO_TOKEN in message
            assert not (tmp_path / "served" / "repos" / "models" / "alice").exists()
            HfApi(token=token).create_repo("alice/model")
            code, message = status_of(
                HfApi(token=False).upload_file, path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/model"
            )
            assert code == 401 and NO_TOKEN in message
            assert HfApi().list_repo_files("alice/model") == [".gitattributes"]

            folder = tmp_path / "folder"
            folder.mkdir()
            (folder / "config.json").write_text('{"hidden_size": 8}')
            (folder / "weights.bin").write_bytes(SECRET)
            env = {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_IMPLICIT_TOKEN"}
            env.update(HF_ENDPOINT=url, HF_TOKEN=token, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "cli_home"))
            upload = subprocess.run(
                [str(Path(sys.executable).parent / "hf"), "upload", "alice/from-cli", str(folder), "."],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert upload.returncode == 0, upload.stderr[-2000:]
            assert sorted(HfApi().list_repo_files("alice/from-cli")) == [
                ".gitattributes",
                "config.json",
                "weights.bin",
            ]

            model = BertModel(
                BertConfig(
                    vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
                )
            )
            model.push_to_hub("alice/tiny-bert", token=token, private=True)
            local = snapshot_download("alice/tiny-bert", token=token, cache_dir=tmp_path / "snap")
            assert {"config.json", "model.safetensors"} <= {p.name for p in Path(local).iterdir()}
            with pytest.raises(RepositoryNotFoundError):
                snapshot_download("alice/tiny-bert", token=False, cache_dir=tmp_path / "snap2")
            assert (
                Path(snapshot_download("alice/from-cli", cache_dir=tmp_path / "snap3"), "weights.bin").read_bytes()
                == SECRET
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    time.sleep(0.2)  # the reader thread takes the last lines
    output = "".join(lines) + "".join(later.get() for _ in range(later.qsize()))
    assert output.count(token) == 1  # printed once at start, never again (nor logged)


def test_the_readme_names_a_real_test_for_each_access_rule():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## A local Hub for air-gapped teams") :].split("\n## ", 1)[0]
    named = re.findall(r"`tests/test_localhub_access\.py::(test_\w+)`", section)
    assert len(named) >= 8 and all(callable(globals().get(name)) for name in named), named
