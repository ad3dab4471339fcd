"""`hfsoup find` and `soup --from-hub`: a base's fine-tunes and adapters found through the local Hub's model tree.

The Hub holds the tiny BERT base and twelve repos that name it (or do not): three fine-tunes with the base's labels,
one with its labels permuted, one with another label set, an independently initialized impostor, one of another
architecture (a layer more), three LoRA adapters (written here as PEFT saves them), a merge of two models and an
unrelated model. The verdicts are checked one by one, and the server's log shows that no weight file was read beyond
its safetensors header and the sampled slices.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard
from safetensors.numpy import save_file

from hfsoup.cli import main
from hfsoup.find import NoCandidatesError, find_ingredients
from hfsoup.find.sampled import SLICE_BYTES, cosine, plan_samples
from hfsoup.hub.remote import _FIRST_READ
from hfsoup.io.checkpoint import TensorMeta
from hfsoup.io.soupfolder import read_soup_folder
from hfsoup.publish.card import build_card
from hfsoup.testing.families import build_family, publish_folder

ORG = "hfsoup-testing"
BASE = f"{ORG}/tiny-bert-base"


def _card(folder: Path, **data: object) -> None:
    card = ModelCard.load(folder / "README.md") if (folder / "README.md").is_file() else ModelCard("---\n---\n")
    for key, value in data.items():
        setattr(card.data, key, value)
    card.save(folder / "README.md")


def _adapter(out: Path, base: Path, *, seed: int, rank: int = 4, config_rank: int | None = None, names: str = BASE):
    """A PEFT LoRA adapter of the tiny BERT (query and value of each layer) as `save_pretrained` writes it."""
    from safetensors import safe_open

    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    with safe_open(base / "model.safetensors", "np") as f:
        for name in f.keys():
            if name.endswith(("query.weight", "value.weight")):
                rows, cols = f.get_slice(name).get_shape()
                module = f"base_model.model.{name.removesuffix('.weight')}"
                tensors[f"{module}.lora_A.weight"] = rng.normal(0, 0.05, (rank, cols)).astype(np.float32)
                tensors[f"{module}.lora_B.weight"] = rng.normal(0, 0.05, (rows, rank)).astype(np.float32)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "r": config_rank or rank,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["query", "value"],
        "base_model_name_or_path": names,
        "bias": "none",
    }
    (out / "adapter_config.json").write_text(json.dumps(config))
    (out / "README.md").write_text(f"---\nbase_model: {BASE}\nlicense: apache-2.0\nlibrary_name: peft\n---\n# LoRA\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The local Hub with the base and its twelve neighbours (and two bad adapters), for the whole module."""
    import os

    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    root = tmp_path_factory.mktemp("find-hub")
    family = build_family("bert", root / "family", n_finetunes=3, seed=0)
    folders = family.folders()
    saved_token = os.environ.pop("HF_TOKEN", None)
    from hfsoup.localhub.faults import FaultPlan

    hub = LocalHubServer(root / "store", anonymous_writes=True, faults=FaultPlan())
    with hub as server, use_local_hub(server.url, root / "hf_home"):
        api = HfApi()
        staged = root / "staged"

        def publish(member: str, name: str, **card: object) -> str:
            folder = staged / name
            shutil.copytree(folders[member], folder)
            _card(folder, **card)
            return publish_folder(folder, f"{ORG}/{name}", api=api)

        from hfsoup.testing.glue import build_glue, publish_glue

        publish_glue(build_glue(root / "glue", tasks=["sst2"]))
        publish("base", "tiny-bert-base")
        expect = {}
        for i in range(3):
            expect[publish(f"ft{i}", f"ft{i}", base_model=BASE, datasets=["nyu-mll/glue"])] = "pass"
        expect[publish("permuted_labels", "permuted", base_model=BASE)] = "pass"
        expect[publish("num_labels", "three-labels", base_model=BASE)] = "labels"
        expect[publish("impostor", "impostor", base_model=BASE)] = "shared-init"
        expect[publish("arch_mismatch", "deeper", base_model=BASE)] = "tensors"
        for i in range(3):
            _adapter(staged / f"lora{i}", family.base, seed=i)
            expect[publish_folder(staged / f"lora{i}", f"{ORG}/lora{i}", api=api)] = "pass"
        # Not children: a merge (two bases) and a model that names no base at all.
        publish("ft0", "merge", base_model=[BASE, f"{ORG}/ft1"])
        publish("impostor", "unrelated", base_model=None)
        yield {"server": server, "expect": expect, "family": family, "root": root, "api": api, "staged": staged}
    if saved_token is not None:
        os.environ["HF_TOKEN"] = saved_token


def _weights_reads(server, since: int) -> list[tuple[str, int, int]]:
    return [
        (path, status, n)
        for method, path, status, n in list(server.traffic)[since:]
        if method == "GET" and path.endswith(".safetensors")
    ]


def test_find_lists_exactly_the_children_with_their_verdicts(tree):
    server = tree["server"]
    since = len(server.traffic)
    found = find_ingredients(BASE, task="sst2", jobs=4)
    verdicts = {c.repo_id: c for c in found.candidates}
    assert set(verdicts) == set(tree["expect"])  # no merge, no unrelated model, not the base
    for repo_id, expected in tree["expect"].items():
        candidate = verdicts[repo_id]
        if expected == "pass":
            assert candidate.passed, (repo_id, candidate.reasons)
            assert len(candidate.sha) == 40
        else:
            assert not candidate.passed, repo_id
            assert any(r.startswith(expected) for r in candidate.reasons), (repo_id, candidate.reasons)
    assert any("reordered" in n for n in verdicts[f"{ORG}/permuted"].notes)
    assert {verdicts[f"{ORG}/lora{i}"].relation for i in range(3)} == {"adapter"}
    assert verdicts[f"{ORG}/ft0"].cosine > 0.9 and abs(verdicts[f"{ORG}/impostor"].cosine) < 0.3
    # Only headers and the sampled slices were read: every weights read is a Range answer (206), the header's
    # first read or one slice, and no file was read whole.
    reads = _weights_reads(server, since)
    assert reads and all(status == 206 for _, status, _ in reads)
    assert all(n <= _FIRST_READ for _, _, n in reads)
    sizes: dict[str, int] = {}
    for path, _, n in reads:
        sizes[path] = sizes.get(path, 0) + n
    for path in sizes:
        slices = [n for p, _, n in reads if p == path][1:]
        assert all(n <= SLICE_BYTES for n in slices), path
    repo_files = {
        f"/{ORG}/{name}": info.size
        for name in ("ft0", "impostor", "tiny-bert-base")
        for info in tree["api"].list_repo_tree(f"{ORG}/{name}")
        if info.path == "model.safetensors"
    }
    for path, total in sizes.items():
        prefix = path.split("/resolve/")[0]
        if prefix in repo_files:
            assert total < repo_files[prefix], path
    # Nothing else large was downloaded either: no GET answered a whole weights file.
    assert not [p for m, p, s, n in list(server.traffic)[since:] if m == "GET" and s == 200 and n > 50_000]


def test_find_limit_stops_at_enough_passing(tree):
    found = find_ingredients(BASE, task="sst2", limit=2, jobs=1)
    assert len(found.passed) == 2
    assert len(found.candidates) < len(tree["expect"])


def test_find_cli_table_and_json(tree, tmp_path, capsys):
    out = tmp_path / "found.json"
    assert main(["find", BASE, "--task", "sst2", "--json", str(out), "--jobs", "2"]) == 0
    table = capsys.readouterr().out
    assert f"{ORG}/impostor" in table and "shared-init" in table
    data = json.loads(out.read_text())
    assert data["query"]["base"] == BASE and data["query"]["task"] == "sst2"
    passed = sorted(c["repo_id"] for c in data["candidates"] if c["verdict"] == "pass")
    assert passed == sorted(r for r, v in tree["expect"].items() if v == "pass")


def test_find_bad_input(tree, capsys):
    staged, api = tree["staged"], tree["api"]
    # An adapter whose config names another base than its card, and one whose config names a rank its tensors lack.
    _adapter(staged / "other-base", tree["family"].base, seed=7, names=f"{ORG}/impostor")
    publish_folder(staged / "other-base", f"{ORG}/lora-other-base", api=api)
    _adapter(staged / "bad-rank", tree["family"].base, seed=8, config_rank=8)
    publish_folder(staged / "bad-rank", f"{ORG}/lora-bad-rank", api=api)
    since = len(tree["server"].traffic)
    try:
        found = {c.repo_id: c for c in find_ingredients(BASE, search="lora-").candidates}
        reads = _weights_reads(tree["server"], since)  # headers only: refused before any weights download
        assert all(status == 206 and n <= _FIRST_READ for _, status, n in reads)
        assert not found[f"{ORG}/lora-other-base"].passed
        assert "impostor" in " ".join(found[f"{ORG}/lora-other-base"].reasons)
        assert not found[f"{ORG}/lora-bad-rank"].passed
        assert "rank" in " ".join(found[f"{ORG}/lora-bad-rank"].reasons).lower()
    finally:
        api.delete_repo(f"{ORG}/lora-other-base")
        api.delete_repo(f"{ORG}/lora-bad-rank")
    # A base with no children: a clear error, exit 1.
    with pytest.raises(NoCandidatesError, match="no fine-tune or adapter"):
        find_ingredients(f"{ORG}/ft1")
    assert main(["find", f"{ORG}/ft1"]) == 1
    assert "no model card names it as base_model" in capsys.readouterr().err


@pytest.mark.parametrize("base", ["/etc", "../../etc", "~/models/bert", f"{ORG}/tiny-bert-base@main"])
def test_a_base_that_is_a_path_or_a_revision_is_refused_before_anything_is_read(tree, base, capsys):
    since = len(tree["server"].traffic)
    assert main(["find", base]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("not a Hub model ID" in err or "names a revision" in err), err
    assert list(tree["server"].traffic)[since:] == []  # refused before a single request


def test_the_base_is_the_hub_repo_even_beside_a_folder_of_its_name(tree, tmp_path, monkeypatch):
    # A folder spelled like the base, holding a link out of it: were it read, hfsoup would refuse the link.
    folder = tmp_path / BASE
    folder.mkdir(parents=True)
    (folder / "config.json").symlink_to("/etc/hostname")
    monkeypatch.chdir(tmp_path)
    found = find_ingredients(BASE, search="ft")
    assert len(found.base_sha) == 40 and found.passed  # pinned on the Hub; the Hub's children checked against it


def test_sampled_cosine_separates_siblings_from_impostors():
    """The estimate on synthetic matrices: a base plus 5% noise is near 1, an independent draw near 0."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=4096)
    sibling = base + 0.05 * rng.normal(size=4096)
    other = rng.normal(size=4096)
    assert cosine(base, sibling) > 0.99 and abs(cosine(base, other)) < 0.1
    plan = plan_samples({"w": TensorMeta("F32", (64, 64)), "b": TensorMeta("F32", (64,))}, slices=4, slice_bytes=64)
    assert [s.first for s in plan] == [0, (4096 - 16) // 3, 2 * (4096 - 16) // 3, 4096 - 16]


def test_soup_from_hub_soups_the_passing_ones(tree, tmp_path):
    out = tmp_path / "soup"
    code = main(["soup", "--from-hub", BASE, "--task", "sst2", "--method", "greedy", "--limit", "5", "-o", str(out)])
    assert code == 0
    provenance = json.loads((out / "hfsoup.json").read_text())
    passing = [r for r, v in tree["expect"].items() if v == "pass"]
    found = provenance["found"]
    assert found["query"] == {"base": BASE, "task": "sst2", "sort": "downloads", "limit": 5}
    passed = [c for c in found["candidates"] if c["verdict"] == "pass"]
    assert len(passed) == 5 and {c["repo_id"] for c in passed} <= set(passing)
    assert [i["sha"] for i in provenance["ingredients"]] == [c["sha"] for c in passed]
    card = str(build_card(read_soup_folder(out)))  # the card `hfsoup push` writes
    assert "## Found on the Hub" in card and all(f"{c['repo_id']}@{c['sha']}" in card for c in passed)


def test_soup_from_hub_refuses_too_few(tree, tmp_path, capsys):
    code = main(["soup", "--from-hub", BASE, "--search", "impostor", "-o", str(tmp_path / "soup")])
    assert code == 1
    err = capsys.readouterr().err
    assert "0 passed the checks" in err and "shared-init" in err
    assert not (tmp_path / "soup").exists()


def test_check_skip_weights_uses_the_sampled_estimate(tree):
    import hfsoup

    server = tree["server"]
    since = len(server.traffic)
    report = hfsoup.check([f"{ORG}/ft0", f"{ORG}/impostor", f"{ORG}/ft1"], base=BASE, weights=False)
    blamed = {f.ingredient: f for f in report.findings if f.check == "shared-init"}
    assert blamed[f"{ORG}/impostor"].level == "error" and "sampled body cosine" in blamed[f"{ORG}/impostor"].message
    assert blamed[f"{ORG}/ft0"].level == "info" and blamed[f"{ORG}/ft1"].level == "info"
    assert not report.ok
    reads = _weights_reads(server, since)
    assert reads and all(status == 206 and n <= _FIRST_READ for _, status, n in reads)
    # Without a base, the first remote ingredient is the reference: the two siblings pass.
    assert hfsoup.check([f"{ORG}/ft0", f"{ORG}/ft1"], weights=False).ok


def test_recipe_ingredients_from_a_search(tree, tmp_path):
    from hfsoup.errors import RecipeError
    from hfsoup.recipe import parse_recipe

    server = tree["server"]
    recipe = tmp_path / "found.yaml"
    recipe.write_text(
        "# hfsoup cook found.yaml\n"
        f"ingredients:\n  search: {{base: {BASE}, task: sst2, limit: 3, search: ft}}\n"
        "method: greedy\nevaluation: {task: sst2}\noutput: {dir: soup}\n"
    )
    assert main(["cook", str(recipe)]) == 0
    provenance = json.loads((tmp_path / "soup" / "hfsoup.json").read_text())
    assert provenance["found"]["query"]["search"] == "ft"
    assert [i["repo_id"] for i in provenance["ingredients"]] == [f"{ORG}/ft{i}" for i in range(3)]

    def listings() -> int:
        return sum(1 for method, path, _, _ in server.traffic if method == "GET" and path == "/api/models")

    before = listings()
    assert main(["cook", str(recipe)]) == 0  # reused: the pinned list recorded in the output, no search
    assert listings() == before
    assert main(["cook", str(recipe), "--refresh"]) == 0  # searched again: the same list, so reused
    assert listings() > before
    assert json.loads((tmp_path / "soup" / "hfsoup.json").read_text())["created_at"] == provenance["created_at"]
    with pytest.raises(RecipeError) as refused:
        parse_recipe({"ingredients": {"search": {"task": "sst2", "sort": "stars"}}, "output": {"dir": "x"}})
    assert "ingredients.search.base" in str(refused.value) and "ingredients.search.sort" in str(refused.value)


def test_local_hub_model_tree_relations_and_pages(tmp_path, hf_home):
    """The listing `find` relies on, from the local Hub: stated relations win over inferred ones, and the children
    come through several pages (`Link: rel="next"`)."""
    from hfsoup.find.query import Query, list_children
    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    with LocalHubServer(tmp_path / "store", anonymous_writes=True, page_size=2) as server:
        with use_local_hub(server.url, hf_home):
            api = HfApi()

            def repo(name: str, card: str, *extra: str) -> None:
                api.create_repo(f"me/{name}")
                api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=f"me/{name}")
                for path in extra:
                    api.upload_file(path_or_fileobj=b"{}", path_in_repo=path, repo_id=f"me/{name}")

            repo("base", "---\nlicense: mit\n---\n")
            for i in range(3):
                repo(f"ft{i}", "---\nbase_model: me/base\n---\n")
            repo("quant", "---\nbase_model: me/base\nbase_model_relation: quantized\n---\n")
            repo("lora", "---\nbase_model: me/base\n---\n", "adapter_config.json")
            repo("stated", "---\nbase_model: me/base\nbase_model_relation: adapter\n---\n")
            repo("merged", "---\nbase_model:\n- me/base\n- me/ft0\n---\n")
            since = len(server.traffic)
            children = list_children(Query("me/base", sort="modified"))
            pages = sum(1 for method, path, _, _ in server.traffic[since:] if (method, path) == ("GET", "/api/models"))
    relations = {c.repo_id: c.relation for c in children}
    assert relations == {
        "me/ft0": "finetune",
        "me/ft1": "finetune",
        "me/ft2": "finetune",
        "me/lora": "adapter",
        "me/stated": "adapter",
    }
    assert pages >= 3  # three fine-tunes at two a page, then the adapters' listing
    assert [c.repo_id for c in children][:1] == ["me/stated"]  # newest first
    assert all(len(c.sha) == 40 for c in children)  # full=True: each entry carries its commit


def test_find_retries_transient_failures(tree, monkeypatch):
    """A 503 on the listing and on a sampled slice is retried (`HFSOUP_HUB_RETRIES`, `with_retries`): the verdicts
    are those of a quiet Hub."""
    server = tree["server"]
    monkeypatch.setenv("HFSOUP_HUB_RETRY_WAIT", "0")
    server.faults.add("status", method="GET", path=r"^/api/models$", status=503)
    server.faults.add("status", method="GET", path=r"/impostor/resolve/.*safetensors", status=503, skip=1)
    found = {c.repo_id: c for c in find_ingredients(BASE, task="sst2", jobs=2).candidates}
    assert found[f"{ORG}/ft0"].passed and any("shared-init" in r for r in found[f"{ORG}/impostor"].reasons)
    assert all(rule.fired == rule.times for rule in server.faults.rules)  # both faults fired
    server.faults.clear()
