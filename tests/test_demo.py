"""`hfsoup demo`, the README's main command, run as a user would run it (in-process, for speed)."""

from __future__ import annotations

import json

from hfsoup.cli import main


def test_demo_soups_by_hub_id_and_keeps_files_in_workdir(tmp_path, capsys, hf_home):
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "[5/5] Loaded the soup with transformers" in out
    provenance = json.loads((tmp_path / "demo" / "soup" / "hfsoup.json").read_text())
    specs = [i["spec"] for i in provenance["ingredients"]]
    # The third ingredient is pinned by commit SHA, and every ingredient resolved to a 40-hex SHA.
    assert specs[2].endswith("@" + provenance["ingredients"][2]["sha"])
    assert all(len(i["sha"]) == 40 for i in provenance["ingredients"])
    deviation = float(out.split("max relative deviation ")[1].split(")")[0])
    assert deviation < 1e-6
