"""Hostile input: paths an ingredient names, symbolic links, and safetensors headers that lie.

Each test plays the attack for real: a repo on the local Hub (or a folder) names a file outside itself, links to a
secret, or ships a header `safetensors` refuses. An audit hook on the `open` event (we may run as root, so file modes
stop nothing) proves the outside file is never opened; the filesystem and the server prove nothing was written,
copied or published; and the error is one clear paragraph naming the file and the field.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download
from safetensors import safe_open

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import CorruptCheckpointError, HfsoupError
from hfsoup.io.checkpoint import CheckpointReader, WeightsLayout, read_safetensors_header
from hfsoup.testing.publish import upload

from .test_safety import clean_failure
from .test_soup_local import make_checkpoint

ORG = "attack"
SECRET_TEXT = "root:x:0:0:root:/root:/bin/bash\nSECRET-d41c7e-never-leave\n"

# --- watching `open` ----------------------------------------------------------------------------------------------
# An audit hook cannot be removed, so one is installed for the process and watches only while a test asks it to.
_WATCHED: set[str] = set()
_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _WATCHED:
        return
    try:
        target = args[0]
        if isinstance(target, str | bytes | os.PathLike) and os.path.realpath(os.fsdecode(target)) in _WATCHED:
            _OPENED.append(os.fsdecode(target))
    except Exception:  # noqa: BLE001 - a hook that raises would break the open it watches
        pass


sys.addaudithook(_audit)


@contextmanager
def never_opened(*paths: Path):
    """Fail if any of `paths` is opened (through a link or not) inside the block."""
    _OPENED.clear()
    _WATCHED.update(os.path.realpath(p) for p in paths)
    try:
        yield
    finally:
        _WATCHED.clear()
    assert not _OPENED, f"opened: {_OPENED}"


def test_the_watch_sees_an_open_through_a_link(tmp_path):
    """The audit hook works: opening a link to the watched file is seen (else every 'never opened' proves nothing)."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    (tmp_path / "link").symlink_to(secret)
    with pytest.raises(AssertionError, match="opened"), never_opened(secret):
        (tmp_path / "link").read_text()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("HFSOUP_HUB_RETRIES", "1")
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0.01")


def private_weights(tmp_path: Path) -> Path:
    """The victim's own model, outside every ingredient: the same structure, distinct values."""
    return make_checkpoint(tmp_path / "victim" / "private", seed=77) / "model.safetensors"


def with_index(folder: Path, shard: str) -> None:
    """Replace the folder's weights by an index mapping every tensor to `shard`."""
    names = list(read_safetensors_header(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    index = {"metadata": {"total_size": 0}, "weight_map": dict.fromkeys(names, shard)}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


# --- index shard names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("absolute", "it is an absolute path"), ("dotdot", "climbs out of the folder"), ("unlisted", "does not list")],
)
def test_hub_index_naming_a_file_outside_the_repo_is_never_opened(local_hub, tmp_path, capsys, kind, fragment):
    """A Hub repo whose index names the victim's own weights (by absolute path, or `../` out of the snapshot), or a
    shard the repo does not hold: refused before any shard is read, the outside file never opened, no output."""
    secret = private_weights(tmp_path)
    shard = {
        "absolute": str(secret),
        "dotdot": "../../../../../victim/private/model.safetensors",  # from the snapshot to tmp_path
        "unlisted": "model-00001-of-00001.safetensors",
    }[kind]
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    if kind == "absolute":
        # A decoy at the same path inside the repo: the Hub answers the header read of `resolve/<sha>//victim/...`
        # with it, so a client that trusted the index would go on to open the victim's file of that name.
        decoy = folders[1] / shard.lstrip("/")
        decoy.parent.mkdir(parents=True)
        decoy.write_bytes((folders[1] / "model.safetensors").read_bytes())
    with_index(folders[1], shard)
    for i, folder in enumerate(folders):
        upload(folder, f"{ORG}/idx{i}")
    out = tmp_path / "out"
    with never_opened(secret):
        code = main(["soup", f"{ORG}/idx0", f"{ORG}/idx1", "-o", str(out), "--force"])
    text = clean_failure(code, capsys.readouterr().err, "model.safetensors.index.json", fragment)
    assert "probably a bug" not in text
    assert not out.exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_local_index_climbing_out_of_its_folder_is_never_opened(tmp_path, capsys, kind):
    """The same from a local folder: `../victim/...` (or an absolute path) in the index is refused unopened."""
    secret = private_weights(tmp_path)
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    with_index(folders[1], "../victim/private/model.safetensors" if kind == "dotdot" else str(secret))
    out = tmp_path / "out"
    with never_opened(secret):
        code = main(["soup", *map(str, folders), "-o", str(out), "--force"])
    clean_failure(code, capsys.readouterr().err, str(folders[1] / "model.safetensors.index.json"), "refuses")
    assert not out.exists()
    with pytest.raises(HfsoupError), never_opened(secret):  # the reader alone refuses it too
        CheckpointReader(folders[1])


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ("[1, 2]", "expected an object with a non-empty 'weight_map'"),
        ('{"weight_map": ["model.safetensors"]}', "expected an object with a non-empty 'weight_map'"),
        ('{"weight_map": {"w": 3}}', "the shard of tensor 'w' is not a file name string"),
        ('{"weight_map": {"w": "a\\u0000b"}}', "it holds a control character"),
        ('{"weight_map": {"w": "sub\\\\model.safetensors"}}', "it holds a backslash"),
        ('{"weight_map": ', "is not a valid weights index: JSONDecodeError"),
        ("[" * 100_000 + "]" * 100_000, "is not a valid weights index: ValueError"),  # json's decoder recurses
    ],
    ids=["list", "map-as-list", "shard-as-int", "nul", "backslash", "not-json", "nested-too-deep"],
)
def test_malformed_index_is_a_clear_error_naming_the_file(tmp_path, capsys, index, fragment):
    """An index that is JSON of the wrong shape (or not JSON) is one paragraph naming the index file, not a crash."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    with_index(folders[1], "model.safetensors")
    (folders[1] / "model.safetensors.index.json").write_text(index)
    code = main(["soup", *map(str, folders), "-o", str(tmp_path / "out"), "--force"])
    text = clean_failure(code, capsys.readouterr().err, str(folders[1] / "model.safetensors.index.json"), fragment)
    assert "probably a bug" not in text and not (tmp_path / "out").exists()


# --- symbolic links in an ingredient ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vocab.txt", "tokenizer.json", "chat_template.jinja", "model.safetensors"])
def test_local_file_linking_out_of_the_folder_is_refused_and_never_copied(tmp_path, capsys, name):
    """A side file (or the weights) of the first ingredient is a link to a secret: the soup is refused before the
    folder is read, nothing is copied, the secret is never opened and its content appears nowhere."""
    secret = tmp_path / "home" / ".netrc"
    secret.parent.mkdir()
    secret.write_text(SECRET_TEXT)
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    (folders[0] / name).unlink(missing_ok=True)
    (folders[0] / name).symlink_to(secret)
    out = tmp_path / "out"
    with never_opened(secret):
        code = main(["soup", *map(str, folders), "-o", str(out)])
    err = capsys.readouterr().err
    clean_failure(code, err, repr(name), "symbolic link", "outside the model's folder")
    assert "SECRET-d41c7e" not in err and "root:x" not in err
    assert not out.exists()
    copies = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p != secret]
    assert not any("SECRET-d41c7e" in p.read_text(errors="replace") for p in copies)


@pytest.mark.parametrize("repo", ["models--attack--fake", "plain"])
def test_a_folder_dressed_as_a_snapshot_whose_blobs_links_out_is_refused(tmp_path, capsys, repo):
    """`x/snapshots/main` with `x/blobs` a link to the home folder: only the Hub cache's own layout, with a real
    `blobs` folder, may hold a snapshot's files, so `vocab.txt -> ../../blobs/.netrc` is a link out, refused and never
    opened."""
    home = tmp_path / "home"
    home.mkdir()
    secret = home / ".netrc"
    secret.write_text(SECRET_TEXT)
    snapshot = tmp_path / repo / "snapshots" / "main"
    make_checkpoint(snapshot, seed=0)
    (tmp_path / repo / "blobs").symlink_to(home)
    (snapshot / "vocab.txt").symlink_to(Path("..", "..", "blobs", ".netrc"))
    other = make_checkpoint(tmp_path / "ft1", seed=1)
    out = tmp_path / "out"
    with never_opened(secret):
        code = main(["soup", str(snapshot), str(other), "-o", str(out)])
    err = capsys.readouterr().err
    clean_failure(code, err, "'vocab.txt'", "symbolic link", "outside the model's folder")
    assert "SECRET-d41c7e" not in err and not out.exists()


@pytest.mark.parametrize("special", ["fifo", "device-link"])
def test_special_files_in_an_ingredient_are_refused_without_hanging(tmp_path, capsys, special):
    """`vocab.txt` as a FIFO (a read would wait forever) or as a link to `/dev/zero` (a read would never end):
    refused from `stat` alone, before anything is read."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    if special == "fifo":
        os.mkfifo(folders[0] / "vocab.txt")
    else:
        (folders[0] / "vocab.txt").symlink_to("/dev/zero")
    code = main(["soup", *map(str, folders), "-o", str(tmp_path / "out")])
    fragment = "FIFO" if special == "fifo" else "a device or system file"
    clean_failure(code, capsys.readouterr().err, "'vocab.txt'", fragment)
    assert not (tmp_path / "out").exists()


def test_links_inside_the_folder_and_hub_snapshots_are_accepted(local_hub, tmp_path):
    """What stays allowed: a link to a file inside the ingredient's own folder, and a Hub snapshot named as a local
    folder (its files are links into its repo's blob store). The copied side file is a regular file."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    (folders[0] / "vocab-real.txt").write_text("[PAD]\nhello\n")
    (folders[0] / "vocab.txt").symlink_to("vocab-real.txt")
    upload(folders[1], f"{ORG}/snap")
    snapshot = Path(snapshot_download(f"{ORG}/snap"))
    assert (snapshot / "model.safetensors").is_symlink()
    result = hfsoup.soup([folders[0], snapshot], tmp_path / "out", force=True)  # the vocab differs, not the point
    copied = result.output_dir / "vocab.txt"
    assert copied.is_file() and not copied.is_symlink() and copied.read_text() == "[PAD]\nhello\n"


def test_cached_snapshot_linking_into_another_repo_is_never_trusted(local_hub, tmp_path):
    """A Hub cache whose snapshot of one repo links a file into another repo's blobs: that blob is neither used nor
    deleted (the link alone is replaced by a fresh, verified download)."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    for i, folder in enumerate(folders):
        upload(folder, f"{ORG}/cache{i}")
    snaps = [Path(snapshot_download(f"{ORG}/cache{i}")) for i in range(2)]
    foreign = Path(os.path.realpath(snaps[1] / "tokenizer.json"))
    (snaps[0] / "tokenizer.json").unlink()
    (snaps[0] / "tokenizer.json").symlink_to(foreign)
    identity = (foreign.stat().st_ino, foreign.stat().st_mtime_ns)
    result = hfsoup.soup([f"{ORG}/cache0", f"{ORG}/cache1"], tmp_path / "out")
    # The other repo's blob is the very same file (not deleted and downloaded again), with its own content.
    assert (foreign.stat().st_ino, foreign.stat().st_mtime_ns) == identity
    assert json.loads(foreign.read_text()) == {"seed": 1}
    assert json.loads((result.output_dir / "tokenizer.json").read_text()) == {"seed": 0}


# --- push ---------------------------------------------------------------------------------------------------------
def repo_state(api: HfApi, repo_id: str) -> tuple[list[str], list[str]]:
    """What the server holds for a repo: its commits and its files."""
    return [c.commit_id for c in api.list_repo_commits(repo_id)], sorted(api.list_repo_files(repo_id))


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_push_refuses_a_soup_folder_holding_a_link(local_hub, tmp_path, capsys, target):
    """A link in the soup folder would upload its target. Refused before anything is read or sent: the repo on the
    server keeps its commits and files, the secret never opened."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    soup = hfsoup.soup(folders, tmp_path / "soup").output_dir
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    (soup / "notes.txt").symlink_to(secret if target == "outside" else soup / "config.json")
    api = HfApi()
    upload(folders[0], f"{ORG}/pushed")
    before = repo_state(api, f"{ORG}/pushed")
    with never_opened(secret):
        code = main(["push", str(soup), f"{ORG}/pushed", "--overwrite"])
    err = capsys.readouterr().err
    clean_failure(code, err, "'notes.txt'", "symbolic link", "nothing was pushed")
    assert "SECRET-d41c7e" not in err
    assert repo_state(api, f"{ORG}/pushed") == before
    assert not (soup / "README.md").exists()  # not even the card was written


# --- a weights file that is not safetensors -----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "hub"])
def test_a_text_file_as_weights_is_not_quoted(local_hub, tmp_path, capsys, where):
    """`/etc/passwd` as `model.safetensors`: the error says it is not safetensors, and prints none of its bytes (its
    first 8 bytes once came out as the "header length")."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i) for i in range(2)]
    (folders[1] / "model.safetensors").write_text(SECRET_TEXT * 40)
    specs = [str(f) for f in folders]
    if where == "hub":
        for i, folder in enumerate(folders):
            upload(folder, f"{ORG}/text{i}")
        specs = [f"{ORG}/text0", f"{ORG}/text1"]
    code = main(["soup", *specs, "-o", str(tmp_path / "out"), "--force"])
    err = capsys.readouterr().err
    clean_failure(code, err, "model.safetensors", "is not a safetensors file")
    leaked = str(struct.unpack("<Q", SECRET_TEXT.encode()[:8])[0])
    assert "root:x" not in err and "SECRET" not in err and leaked not in err
    assert not (tmp_path / "out").exists()


# --- header rules -------------------------------------------------------------------------------------------------
def entry(dtype="F32", shape=(2,), offsets=(0, 8)) -> str:
    return json.dumps({"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)})


# (rule, header JSON text, data bytes, what the error names)
HEADER_CASES = [
    ("overlap", f'{{"a":{entry()},"b":{entry()}}}', 8, "'b' overlaps the bytes of tensor 'a'"),
    ("duplicate-name", f'{{"a":{entry(offsets=(0, 8))},"a":{entry(offsets=(8, 16))}}}', 16, "names 'a' twice"),
    ("duplicate-field", '{"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}}', 8, "'dtype' twice"),
    ("bool-dim", '{"a":{"dtype":"F32","shape":[true,2],"data_offsets":[0,8]}}', 8, "'a' has shape [True, 2]"),
    ("float-dim", '{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 8, "'a' has shape [2.0]"),
    ("negative-dim", '{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8, "'a' has shape [-2]"),
    ("string-offsets", '{"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}}', 8, "data_offsets ['0', '8']"),
    ("three-offsets", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}', 8, "data_offsets [0, 8, 8]"),
    ("list-header", f"[{entry()}]", 8, "is a JSON list, where an object of tensors belongs"),
    ("list-entry", '{"a":[0,8]}', 8, "tensor 'a' is a JSON list, where an object belongs"),
    ("missing-field", '{"a":{"dtype":"F32","shape":[2]}}', 8, "'a' has no data_offsets"),
    ("gap", f'{{"a":{entry(offsets=(4, 12))}}}', 12, "'a' leaves a gap"),
    ("short-file", f'{{"a":{entry()}}}', 4, "'a' claims bytes 0..8 of a 4-byte data section"),
    ("trailing-bytes", f'{{"a":{entry()}}}', 12, "cover 8 bytes of a 12-byte data section"),
    ("size-mismatch", f'{{"a":{entry(shape=(3,))}}}', 8, "does not match its shape [3] and dtype F32 (12 bytes)"),
    ("metadata-value", f'{{"__metadata__":{{"k":1}},"a":{entry()}}}', 8, "__metadata__['k'] is a JSON number"),
    ("metadata-list", f'{{"__metadata__":[],"a":{entry()}}}', 8, "__metadata__ is a JSON list"),
    ("unknown-dtype", f'{{"a":{entry(dtype="F33")}}}', 8, "dtype 'F33', which is not a safetensors dtype"),
    ("not-json", '{"a":', 8, "its header is not JSON"),
]


def craft(path: Path, header: bytes | str, data: int | bytes, *, length: int | None = None) -> Path:
    raw = header.encode() if isinstance(header, str) else header
    data = bytes(data) if isinstance(data, int) else data
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def safetensors_refuses(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="np") as f:
            [f.get_slice(k) for k in f.keys()]  # noqa: B018 - reading the slices is the check
    except Exception:  # noqa: BLE001 - safetensors raises SafetensorError (and others) for what it refuses
        return True
    return False


@pytest.mark.parametrize(("rule", "header", "data", "fragment"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_header_rule_is_enforced_like_safetensors(tmp_path, rule, header, data, fragment):
    path = craft(tmp_path / f"{rule}.safetensors", header, data)
    with pytest.raises(CorruptCheckpointError) as caught:
        read_safetensors_header(path)
    message = " ".join(str(caught.value).split())
    assert str(path) in message and fragment in message, message
    assert safetensors_refuses(path)  # safetensors itself refuses the same file


def test_header_bytes_that_are_not_utf8_are_not_quoted(tmp_path):
    path = craft(tmp_path / "bytes.safetensors", b'{"\xfe\xff":1}', 8)
    with pytest.raises(CorruptCheckpointError, match=r"not UTF-8 text \(byte 2\)") as caught:
        read_safetensors_header(path)
    assert "\\xfe" not in str(caught.value) and "0xfe" not in str(caught.value)
    assert safetensors_refuses(path)


@pytest.mark.parametrize("announced", ["over-the-bound", "past-the-file"])
def test_header_length_beyond_the_bound_or_the_file(tmp_path, announced):
    """A header over safetensors' 100 MB bound (a sparse file that really is that long) or longer than the file:
    refused from the first 8 bytes, before the header is read."""
    from hfsoup.constants import SAFETENSORS_MAX_HEADER_BYTES

    path = tmp_path / "big.safetensors"
    length = SAFETENSORS_MAX_HEADER_BYTES + 1 if announced == "over-the-bound" else 4096
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length) + b"{}")
        if announced == "over-the-bound":
            f.truncate(length + 64)  # sparse: the file is long enough, the bound alone refuses it
    fragment = "bound" if announced == "over-the-bound" else "do not give a header length that fits"
    with pytest.raises(CorruptCheckpointError, match=fragment):
        read_safetensors_header(path)
    assert safetensors_refuses(path)


def test_valid_files_safetensors_writes_are_accepted(tmp_path):
    """No false refusals: what `safetensors` writes (metadata, empty tensors, every dtype hfsoup reads, offsets out of
    JSON order) parses, with the structure `safe_open` reports."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        "z.empty": torch.zeros(0, 3),
        "a.bf16": torch.ones(3, 2, dtype=torch.bfloat16),
        "b.i64": torch.arange(5),
        "c.bool": torch.tensor([True, False, True]),
        "d.f16": torch.ones(1, dtype=torch.float16),
        "e.scalar": torch.tensor(2.0),
    }
    path = tmp_path / "ok.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    structure = read_safetensors_header(path)
    with safe_open(str(path), framework="pt") as f:
        assert {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} == {k: m.shape for k, m in structure.items()}
    # Offsets need not follow JSON order (safetensors sorts them): reversed entries still tile the data.
    swapped = f'{{"b":{entry(offsets=(8, 16))},"a":{entry(offsets=(0, 8))}}}'
    assert set(read_safetensors_header(craft(tmp_path / "swapped.safetensors", swapped, 16))) == {"a", "b"}
    assert not safetensors_refuses(tmp_path / "swapped.safetensors")


@pytest.mark.parametrize("where", ["local", "hub"])
@pytest.mark.parametrize("rule", ["overlap", "duplicate-name"])
def test_aliasing_header_writes_no_soup(local_hub, tmp_path, capsys, where, rule):
    """An ingredient whose header makes two names share bytes (overlapping offsets), or names one tensor twice,
    otherwise matches the other ingredient exactly: refused, naming the file and the tensor, and no soup written,
    read locally or through the Hub's Range reads."""
    folders = [make_checkpoint(tmp_path / f"ft{i}", seed=i, shapes={"w": (2,)}, extra={}) for i in range(2)]
    for folder in folders:  # two float tensors "a" and "b" of 2 values each
        craft(folder / "model.safetensors", f'{{"a":{entry(offsets=(0, 8))},"b":{entry(offsets=(8, 16))}}}', 16)
    lie = {
        "overlap": (f'{{"a":{entry(offsets=(0, 8))},"b":{entry(offsets=(0, 8))}}}', 8, "overlaps"),
        "duplicate-name": (
            f'{{"a":{entry()},"b":{entry(offsets=(8, 16))},"a":{entry(offsets=(8, 16))}}}',
            16,
            "twice",
        ),
    }[rule]
    craft(folders[1] / "model.safetensors", lie[0], lie[1])
    specs = [str(f) for f in folders]
    if where == "hub":
        for i, folder in enumerate(folders):
            upload(folder, f"{ORG}/alias{i}")
        specs = [f"{ORG}/alias0", f"{ORG}/alias1"]
    out = tmp_path / "out"
    code = main(["soup", *specs, "-o", str(out), "--force"])
    clean_failure(code, capsys.readouterr().err, "model.safetensors", lie[2])
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_a_server_that_ignores_the_range_of_a_header_read_is_not_read_to_the_end(monkeypatch, hf_home):
    """A Hub that answers the header's Range read with 200 and an endless body: hfsoup reads only the bytes it asked
    for and hangs up, instead of holding the body in memory (it would be a whole weights file, or never end)."""
    import http.server
    import threading

    from hfsoup import constants, hub
    from hfsoup.hub.remote import _remote_header

    sent = {"bytes": 0}
    chunk = struct.pack("<Q", 64) + b"\0" * (64 * 1024 - 8)

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while sent["bytes"] < 256 * 2**20:  # bounded, so an unfixed reader ends (and fails the assertion)
                    self.wfile.write(chunk)
                    sent["bytes"] += len(chunk)
            except OSError:  # the client hung up: what we want
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "hub_endpoint", lambda: f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0")
    ingredient = hub.PinnedIngredient(
        ref=hub.IngredientRef("org/endless", repo_id="org/endless"),
        sha="0" * 40,
        layout=WeightsLayout("safetensors", ("model.safetensors",)),
        files=["model.safetensors"],
    )
    try:
        with pytest.raises(CorruptCheckpointError, match="org/endless/model.safetensors"):
            _remote_header(ingredient, "model.safetensors", token=False)
    finally:
        server.shutdown()
        server.server_close()
    assert sent["bytes"] < 32 * 2**20, f"the server got to send {sent['bytes']:,} bytes for a header read"
