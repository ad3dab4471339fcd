"""A finished soup output folder, read back and checked: what `--overwrite` may replace, what `push` publishes and
what the model card is built from. It belongs to the files stage, so that `io.guard` needs nothing from `publish`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import PROVENANCE_FILE, RESULTS_FILE
from ..errors import NotASoupError


@dataclass
class SoupFolder:
    """A finished soup output folder, read back: its provenance and, when it was scored, its results table."""

    path: Path
    provenance: dict[str, Any]
    results: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluation(self) -> dict[str, Any] | None:
        return self.provenance.get("evaluation") or None


def read_soup_folder(output_dir: str | os.PathLike) -> SoupFolder:
    """Read and check a soup output folder; every problem is listed in one `NotASoupError`.

    A soup folder holds `hfsoup.json` (with `hfsoup_version`, `method` and `ingredients`) and every file that it
    lists under `files`, weights included.
    """
    path = Path(output_dir).expanduser().absolute()
    fix = "Name the folder 'hfsoup soup ... -o DIR' wrote (it holds hfsoup.json next to the weights)."
    if not path.is_dir():
        raise NotASoupError(f"{path} is not a folder; expected the output folder of 'hfsoup soup'.", fix=fix)
    try:
        provenance = json.loads((path / PROVENANCE_FILE).read_text())
    except FileNotFoundError:
        raise NotASoupError(f"{path} holds no {PROVENANCE_FILE}: it is not a soup output.", fix=fix) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise NotASoupError(f"{path / PROVENANCE_FILE} is not valid JSON ({e}).", fix=fix) from None
    problems = []
    if not isinstance(provenance, dict):
        provenance, problems = {}, [f"{PROVENANCE_FILE} is not a JSON object"]
    for key, kind in (("hfsoup_version", str), ("method", str), ("ingredients", list), ("files", list)):
        if not isinstance(provenance.get(key), kind):
            problems.append(f"{PROVENANCE_FILE} lacks '{key}' ({kind.__name__})")
    missing = [f for f in provenance.get("files") or [] if not (path / str(f)).is_file()]
    if missing:
        problems.append(f"files it lists are missing: {', '.join(map(str, missing))}")
    if not any(str(f).endswith((".safetensors", ".bin")) for f in provenance.get("files") or []):
        problems.append("it lists no weights file")
    if problems:
        raise NotASoupError(
            f"{path} is not a complete hfsoup output: {'; '.join(problems)}.", fix=fix, problems=problems
        )
    results = None
    if (path / RESULTS_FILE).is_file():
        try:
            results = json.loads((path / RESULTS_FILE).read_text())
        except ValueError as e:
            raise NotASoupError(f"{path / RESULTS_FILE} is not valid JSON ({e}).", fix=fix) from None
    from ..compat.files import config as read_config
    from ..errors import IngredientConfigError

    try:
        config = read_config(path / "config.json")
    except IngredientConfigError as e:
        raise NotASoupError(e.message, fix=fix) from None
    return SoupFolder(path, provenance, results, config)
