"""`hfsoup push`: one commit to a local Hub that demands a token for writes, over real HTTP.

The soup read back from the Hub computes what the local folder computes; a commit that fails after its LFS uploads
leaves the repo as it was; the token appears nowhere; bad input fails with one clear line and exit status 1.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

import hfsoup
from hfsoup.cli import main
from hfsoup.errors import HubError
from hfsoup.localhub.access import HubUser
from hfsoup.localhub.faults import FaultPlan
from hfsoup.localhub.server import LocalHubServer
from hfsoup.testing.env import use_local_hub
from hfsoup.testing.families import publish_family
from hfsoup.testing.output import error_after_stages
from hfsoup.testing.publish import upload
from tests.test_card import add_scores

TOKEN = "hf_PushTestTokenZq7XkVw93LmRt5"  # distinctive, so a grep for it cannot match anything by chance


@pytest.fixture
def hub(tmp_path, hf_home):
    """A local Hub whose one token writes to `push/...` (no token: a 401, as on the Hub); clients point at it."""
    with LocalHubServer(tmp_path / "hub_store", tokens={TOKEN: HubUser("hfsoup-local", ("push",))}) as server:
        with use_local_hub(server.url, hf_home):
            yield server


@pytest.fixture
def soup_dir(hub, families, tmp_path):
    ids = publish_family(families["bert"], org="push", members=["base", "ft0", "ft1"], api=HfApi(token=TOKEN))
    return hfsoup.soup([ids["ft0"], ids["ft1"]], tmp_path / "soup").output_dir


def commits(repo_id: str, **kwargs) -> list[str]:
    return [c.commit_id for c in HfApi().list_repo_commits(repo_id, **kwargs)]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_push_round_trip_model_card_and_one_commit(hub, soup_dir, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    add_scores(soup_dir, evaluation=True, results=True)
    HfApi(token=TOKEN).create_repo("push/soup")  # exists, empty: the push must add exactly one commit
    before = commits("push/soup")

    code, out, _ = run(capsys, "push", str(soup_dir), "push/soup", "--token", TOKEN)
    assert code == 0
    after = commits("push/soup")
    assert len(after) == len(before) + 1 and after[1:] == before
    assert after[0] in out

    info = HfApi().model_info("push/soup")
    assert sorted(s.rfilename for s in info.siblings) == sorted(
        [".gitattributes", "README.md", "config.json", "hfsoup.json", "model.safetensors", "recipe.yaml"]
        + ["results.json", "tokenizer.json", "tokenizer_config.json"]
    )
    assert info.card_data.base_model_relation == "merge"
    card = ModelCard.load("push/soup")
    scores = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert scores[("validation", "accuracy")] == 0.799 and scores[("validation", "accuracy (held-out)")] == 0.8137
    assert (soup_dir / "README.md").read_text() == str(card)  # the folder holds the card that was pushed

    tokenizer = AutoTokenizer.from_pretrained(soup_dir)
    batch = tokenizer(["the soup is good", "weights averaged well"], return_tensors="pt", padding=True)
    local = AutoModelForSequenceClassification.from_pretrained(soup_dir).eval()
    remote = AutoModelForSequenceClassification.from_pretrained("push/soup").eval()  # through HF_ENDPOINT
    with torch.inference_mode():
        assert torch.equal(local(**batch).logits, remote(**batch).logits)


def test_commit_failing_after_the_uploads_leaves_the_repo_unchanged(hub, soup_dir, families, tmp_path):
    hfsoup.push(soup_dir, "push/soup", token=TOKEN)
    head, files = HfApi().model_info("push/soup").sha, HfApi().list_repo_files("push/soup")
    # A different soup (other weights), so the retry has new LFS objects to upload.
    other = hfsoup.soup(
        ["push/tiny-bert-ft0", "push/tiny-bert-ft1"], tmp_path / "soup2", options={"weights": [0.8, 0.2]}
    )
    hub.faults = FaultPlan()
    hub.faults.add("status", method="POST", path=r"^/api/models/push/soup/commit/", status=500)
    start = len(hub.traffic)

    with pytest.raises(HubError, match="HTTP 500.*Nothing was committed"):
        hfsoup.push(other.output_dir, "push/soup", token=TOKEN)
    uploads = [(m, p, s) for m, p, s, _ in hub.traffic[start:] if m == "PUT" and p.startswith("/_lfs/")]
    assert uploads and all(s == 200 for _, _, s in uploads)  # the weights did reach the server
    assert hub.faults.log == [("status", "POST", "/api/models/push/soup/commit/main")]
    assert HfApi().model_info("push/soup").sha == head
    assert HfApi().list_repo_files("push/soup") == files
    assert commits("push/soup")[0] == head

    retry = hfsoup.push(other.output_dir, "push/soup", token=TOKEN)  # the fault fires once
    assert commits("push/soup")[:2] == [retry.commit_sha, head]


def test_the_token_appears_nowhere(hub, soup_dir, hf_home, capsys, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the Hub way: the token from the environment
    with caplog.at_level(logging.DEBUG):
        code, out, err = run(capsys, "-vv", "push", str(soup_dir), "push/soup")
        assert code == 0
        code, out2, err2 = run(capsys, "push", str(soup_dir), "push/soup", "--dry-run", "--token", TOKEN)
        assert code == 0
        # Errors too: a repo the server refuses, pushed with the token given on the command line.
        code, out3, err3 = run(capsys, "push", str(soup_dir), "push/_soup", "--token", TOKEN)
        assert code == 1
    printed = out + err + out2 + err2 + out3 + err3 + caplog.text
    assert "push/soup" in printed and "DEBUG" in caplog.text  # the capture did see the push
    assert TOKEN not in printed
    searched = 0
    for root in (soup_dir, hf_home, hub.root):
        for path in root.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
                searched += 1
    assert searched > 20


def test_dry_run_prints_files_and_card_and_writes_nothing(hub, soup_dir, capsys):
    code, out, _ = run(capsys, "push", str(soup_dir), "push/soup", "--dry-run", "--token", TOKEN)
    assert code == 0
    assert "Dry run: would push 7 files to push/soup" in out
    assert "model.safetensors" in out and "hfsoup.json" in out
    assert "base_model_relation: merge" in out and "## Ingredients" in out
    assert not (soup_dir / "README.md").exists()
    assert not HfApi().repo_exists("push/soup")


def test_pushing_over_a_model_hfsoup_did_not_make_needs_overwrite(hub, soup_dir, families, capsys):
    foreign = families["bert"].troublemakers["pickle_only"]
    upload(foreign, "push/theirs", api=HfApi(token=TOKEN))
    head = HfApi().model_info("push/theirs").sha

    code, _, err = run(capsys, "push", str(soup_dir), "push/theirs", "--token", TOKEN)
    assert code == 1 and "did not make (config.json, pytorch_model.bin" in err and "--overwrite" in err
    assert HfApi().model_info("push/theirs").sha == head

    code, out, _ = run(capsys, "push", str(soup_dir), "push/theirs", "--token", TOKEN, "--overwrite")
    assert code == 0 and "deleted  pytorch_model.bin" in out
    files = HfApi().list_repo_files("push/theirs")
    assert "pytorch_model.bin" not in files and "model.safetensors" in files
    # The same soup again: nothing to commit, and the Hub gets no empty commit.
    main_head = HfApi().model_info("push/theirs").sha
    code, out, _ = run(capsys, "push", str(soup_dir), "push/theirs", "--token", TOKEN)
    assert code == 0 and "already holds this soup" in out and commits("push/theirs")[0] == main_head
    # Once the repo holds an hfsoup soup, a new version needs no --overwrite; pushed to a branch, main stays.
    add_scores(soup_dir, evaluation=True, results=False)
    code, _, _ = run(capsys, "push", str(soup_dir), "push/theirs", "--token", TOKEN, "--branch", "v2")
    assert code == 0
    assert HfApi().model_info("push/theirs").sha == main_head
    assert commits("push/theirs", revision="v2")[1] == main_head


@pytest.mark.parametrize(
    ("repo_id", "token", "expected"),
    [
        ("push/soup", None, "HTTP 401: no token was sent"),  # the server demands a token for writes
        ("push/bad name", TOKEN, "not a valid Hub repo name"),  # the client's own check
        ("push/_soup", TOKEN, "rejected the push to 'push/_soup' (HTTP 400): Invalid repo id"),  # the server's
        ("not-a-soup", TOKEN, "holds no hfsoup.json"),  # the folder argument, replaced below
    ],
)
def test_bad_input_fails_with_one_clear_line(hub, soup_dir, families, capsys, repo_id, token, expected):
    folder = families["bert"].finetunes[0] if repo_id == "not-a-soup" else soup_dir
    args = ["push", str(folder), "push/soup" if repo_id == "not-a-soup" else repo_id]
    code, out, err = run(capsys, *args, *(["--token", token] if token else []))
    assert code == 1
    assert expected in err and "Traceback" not in err
    assert error_after_stages(err).startswith("Error: ") and "HFSOUP_DEBUG=1" in err
    assert not HfApi().repo_exists("push/soup")
    assert not (soup_dir / "README.md").exists() or repo_id == "push/soup"
    json.loads((soup_dir / "hfsoup.json").read_text())  # the folder is intact


def test_the_token_stored_by_hf_auth_login_is_used(hub, soup_dir, hf_home, capsys):
    # 'hf auth login' checks the token with whoami, then stores it at HF_TOKEN_PATH (HF_HOME/token).
    assert HfApi().whoami(TOKEN)["name"] == "hfsoup-local"
    (hf_home / "token").write_text(TOKEN)
    code, out, err = run(capsys, "push", str(soup_dir), "push/soup")
    assert code == 0, err
    assert HfApi().model_info("push/soup").card_data.base_model_relation == "merge"
