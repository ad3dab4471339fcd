"""Fisher estimates cached per ingredient (issue 17 item 7): a second Fisher soup reuses each ingredient's estimate
(no gradient pass) and writes the same bytes; what the estimate depends on (the examples, the weights) changes the
key; a damaged or tampered entry is ignored with a warning and recomputed."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from hfsoup.cli import main
from hfsoup.soups import fisher
from hfsoup.soups.fisher_cache import cache_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bert(sst2_finetunes) -> list[str]:
    return sst2_finetunes


@pytest.fixture
def dev_csv(sst2_dev_csv) -> Path:
    return sst2_dev_csv


@pytest.fixture
def passes(monkeypatch) -> list[int]:
    """The gradient passes made: one entry per ingredient whose Fisher was computed (not read from the cache)."""
    made: list[int] = []
    compute = fisher.fisher_diagonal

    def counting(*args, **kwargs):
        made.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(fisher, "fisher_diagonal", counting)
    return made


def fisher_soup(bert, dev_csv, out: Path, *extra: str) -> bytes:
    task = ["--task", "sst2", "--data-files", f"validation={dev_csv}", "--compare", "none", "--no-plot"]
    assert main(["-v", "soup", *bert, "-o", str(out), "--method", "fisher", *task, *extra]) == 0
    return (out / "model.safetensors").read_bytes()


def test_a_second_run_reuses_the_estimates_and_writes_the_same_bytes(bert, dev_csv, tmp_path, passes, caplog):
    first = fisher_soup(bert, dev_csv, tmp_path / "a")
    assert len(passes) == 2
    assert len(list(cache_dir().glob("*.safetensors"))) == 2 and len(list(cache_dir().glob("*.json"))) == 2
    with caplog.at_level(logging.INFO, logger="hfsoup"):
        second = fisher_soup(bert, dev_csv, tmp_path / "b")
    assert len(passes) == 2  # no gradient pass
    assert second == first
    for folder in bert:
        assert f"reusing Fisher estimate of {Path(folder).name} from the cache" in caplog.text
    # Turned off, every estimate is computed again, and the soup is the same.
    assert fisher_soup(bert, dev_csv, tmp_path / "c", "--no-fisher-cache") == first
    assert len(passes) == 4


def test_what_the_estimate_depends_on_changes_the_key(bert, dev_csv, tmp_path, passes):
    fisher_soup(bert, dev_csv, tmp_path / "a", "--fisher-examples", "4")
    assert len(passes) == 2
    fisher_soup(bert, dev_csv, tmp_path / "b", "--fisher-examples", "3")  # other examples: recomputed
    assert len(passes) == 4
    # Copies of the folders elsewhere are the same weights and the same model (keyed by the weight files' sha256 and
    # the config, not the paths): reused.
    first, copy = tmp_path / "first", tmp_path / "copy"
    shutil.copytree(bert[0], first)
    shutil.copytree(bert[1], copy)
    fisher_soup([str(first), str(copy)], dev_csv, tmp_path / "c", "--fisher-examples", "4")
    assert len(passes) == 4
    # Other weights at that path are another key: recomputed.
    from safetensors.torch import load_file, save_file

    state = load_file(copy / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    save_file(state, copy / "model.safetensors", metadata={"format": "pt"})
    fisher_soup([bert[0], str(copy)], dev_csv, tmp_path / "d", "--fisher-examples", "4")
    assert len(passes) == 5


def test_a_damaged_or_tampered_entry_is_recomputed(bert, dev_csv, tmp_path, passes, caplog):
    first = fisher_soup(bert, dev_csv, tmp_path / "a")
    entries = sorted(cache_dir().glob("*.safetensors"))
    # One entry's bytes flipped (its sha256 no longer matches its record) ...
    damaged = bytearray(entries[0].read_bytes())
    damaged[-1] ^= 0xFF
    entries[0].write_bytes(bytes(damaged))
    # ... and one rewritten with another tensor set and a matching record (validated against the ingredient).
    forged = save({"x": torch.ones(3, dtype=torch.float64)})
    entries[1].write_bytes(forged)
    record = entries[1].with_suffix(".json")
    import hashlib

    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "sha256": hashlib.sha256(forged).hexdigest()}))
    with caplog.at_level(logging.WARNING, logger="hfsoup"):
        again = fisher_soup(bert, dev_csv, tmp_path / "b")
    assert len(passes) == 4  # both recomputed
    assert again == first
    assert caplog.text.count("ignoring the cached Fisher estimate") == 2
    assert "sha256 does not match" in caplog.text and "other tensors" in caplog.text
    # The recomputed estimates replaced the damaged entries: a third run reuses them.
    fisher_soup(bert, dev_csv, tmp_path / "c")
    assert len(passes) == 4


def test_a_hub_ingredient_is_keyed_by_its_commit_sha():
    from types import SimpleNamespace

    from hfsoup.selection.stage import WeightsIdentities

    pinned = [SimpleNamespace(name="org/a", sha="1" * 40, adapter_base=None)]
    reader = SimpleNamespace(weight_files=[])  # never read: the SHA pins the weights
    identity = WeightsIdentities(pinned, [reader], ["w"], {}, [])[0]
    assert identity[0] == ["org/a", "1" * 40]
    moved = SimpleNamespace(name="org/a", sha="2" * 40, adapter_base=None)
    assert WeightsIdentities([moved], [reader], ["w"], {}, [])[0] != identity
    # A local adapter has no SHA to key by: not cached.
    local_adapter = SimpleNamespace(name="./lora", sha=None, adapter_base=SimpleNamespace(name="b", sha=None))
    assert WeightsIdentities([local_adapter], [reader], ["w"], {}, [])[0] is None
