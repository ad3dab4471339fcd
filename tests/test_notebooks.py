"""The notebooks in notebooks/ run top to bottom in a fresh kernel of this interpreter, offline against the local Hub
each starts in its own process, and do what they say: checked from their outputs and from the Hub they leave behind
(its store outlives the kernel, so a server started on it here serves what the notebook pushed)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
KERNEL = "hfsoup-tests"
#: Seconds any one cell may take; the whole notebook takes well under 30 s on 2 cores.
CELL_TIMEOUT = 120


def test_the_notebooks_folder_holds_the_promised_notebooks_without_outputs():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["glue_reproduction.ipynb", "quickstart.ipynb"]
    for name in names:
        book = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(book)
        assert book.cells[0].cell_type == "markdown"
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} is stored with outputs"
        assert "hub.close()" in code[-1].source


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory):
    """A kernelspec that runs this interpreter, under a name no installed kernel has: the kernel sees the hfsoup
    under test (and its PYTHONPATH) whatever `python3` kernel the machine has, and exists in a fresh venv."""
    root = tmp_path_factory.mktemp("kernels")
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hfsoup tests",
        "language": "python",
    }
    (root / KERNEL).mkdir()
    (root / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return [str(root)]


def execute(name: str, workdir: Path, kernel_dirs: list[str]):
    """Run notebook `name` in `workdir`; return it with its outputs and the seconds it took.

    The kernel gets the suite's network guard first (nothing may leave loopback there either) and ends by asserting
    that nothing tried to.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    guard = "from hfsoup.testing import netguard\nnetguard.install()"
    book.cells.insert(0, nbformat.v4.new_code_cell(guard))
    book.cells.append(nbformat.v4.new_code_cell("assert not netguard.BLOCKED, netguard.BLOCKED"))
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs))
    client = nbclient.NotebookClient(
        book, km=manager, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(workdir)}}
    )
    started = time.perf_counter()
    try:
        client.execute()
    finally:  # the client leaves a kernel it did not start running
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return book, time.perf_counter() - started


def text_of(cell) -> str:
    """A cell's printed output and its value's text, together."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def cell_with(book, source: str):
    """The one code cell whose source contains `source`."""
    found = [c for c in book.cells if c.cell_type == "code" and source in c.source]
    assert len(found) == 1, source
    return found[0]


def hub_files(store: Path, repo_id: str, filenames: list[str], tmp_path: Path) -> list[Path]:
    """Download files of `repo_id` from a local Hub started on `store`, the one a notebook left behind."""
    from huggingface_hub import hf_hub_download

    from hfsoup.localhub.server import LocalHubServer
    from hfsoup.testing.env import use_local_hub

    with LocalHubServer(store) as server, use_local_hub(server.url, tmp_path / "hf_home_check"):
        return [Path(hf_hub_download(repo_id, name)) for name in filenames]


def test_quickstart_notebook(tmp_path, kernel_dirs):
    from hfsoup.testing.reference import max_relative_deviation, reference_average

    book, seconds = execute("quickstart.ipynb", tmp_path, kernel_dirs)
    print(f"quickstart.ipynb ran in {seconds:.1f}s")
    work = tmp_path / "quickstart"

    checked = text_of(cell_with(book, "hfsoup.check("))
    assert "body vs base demo/tiny-bert-base" in checked and "May soup: True" in checked

    # Evaluated: each ingredient and the soup; then the soup reloaded from the Hub scores what the folder scored.
    evaluated = text_of(cell_with(book, "Evaluator("))
    scores = dict(re.findall(r"^(\S+(?: soup)?)\s+accuracy (\d\.\d{3})$", evaluated, flags=re.M))
    assert set(scores) == {"demo/tiny-bert-sst2-ft0", "demo/tiny-bert-sst2-ft1", "demo/tiny-bert-sst2-ft2", "the soup"}
    reloaded = text_of(cell_with(book, "from_pretrained("))
    assert f"demo/tiny-bert-sst2-soup from the Hub: accuracy {scores['the soup']}" in reloaded

    # The soup is the average of the three fine-tunes, and the Hub holds exactly the folder's weights and its card.
    soup = work / "soup"
    assert max_relative_deviation(soup, reference_average(sorted((work / "sst2").glob("ft*")))) < 1e-6
    provenance = json.loads((soup / "hfsoup.json").read_text())
    assert [i["spec"] for i in provenance["ingredients"]] == [f"demo/tiny-bert-sst2-ft{i}" for i in range(3)]
    weights, card = hub_files(work / "hub", "demo/tiny-bert-sst2-soup", ["model.safetensors", "README.md"], tmp_path)
    assert weights.read_bytes() == (soup / "model.safetensors").read_bytes()
    assert "demo/tiny-bert-base" in card.read_text() and "model-soup" in card.read_text()


def test_glue_reproduction_notebook(tmp_path, kernel_dirs):
    book, seconds = execute("glue_reproduction.ipynb", tmp_path, kernel_dirs)
    print(f"glue_reproduction.ipynb ran in {seconds:.1f}s")
    soup = tmp_path / "glue" / "soup"
    results = json.loads((soup / "results.json").read_text())
    provenance = json.loads((soup / "hfsoup.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    ingredients = [r for r in results["rows"] if r["kind"] == "ingredient"]
    assert [r["name"] for r in ingredients] == [f"demo/tiny-bert-mrpc-ft{i}" for i in range(5)]
    assert set(rows) >= {"uniform soup", "greedy soup", "ensemble"} and results["metric"] == "f1"
    assert provenance["recipe"]["name"] == "tiny-bert-mrpc-greedy" and provenance["method"] == "greedy"

    # The printed table is the saved one; the greedy soup is at least the best ingredient on the held-out part.
    table = text_of(cell_with(book, "hfsoup.cook_recipe("))
    assert "held-out: seeded 50% of validation (seed 0, 16 rows)" in table
    best = max(r["held_out"]["f1"] for r in ingredients)
    assert rows["greedy soup"]["held_out"]["f1"] >= best
    greedy_line = next(line for line in table.splitlines() if line.startswith("greedy soup"))
    greedy = rows["greedy soup"]
    expected = [greedy[part][metric] for part in ("held_out", "report") for metric in ("f1", "accuracy")]
    assert greedy_line.split()[-4:] == [f"{v:.4f}" for v in expected]
    kept = [r["name"] for r in ingredients if r["kept"]]
    assert f"start from {provenance['greedy']['kept'][0]}" in text_of(cell_with(book, "decisions"))
    assert sorted(kept) == sorted(provenance["greedy"]["kept"])

    # The plot is shown in the notebook, and it is the saved file.
    shown = [o for o in cell_with(book, "results.png").outputs if "image/png" in o.get("data", {})]
    assert shown and (soup / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The card on the Hub carries the soup's scores on both parts, as the notebook printed them.
    card_cell = text_of(cell_with(book, "ModelCard.load("))
    for part, suffix in (("report", ""), ("held_out", " (held-out)")):
        for metric, value in greedy[part].items():
            assert f"nyu-mll/glue (mrpc), validation: {metric}{suffix} = {value:.4f}" in card_cell
    files = ["model.safetensors", "README.md"]
    weights, card = hub_files(tmp_path / "glue" / "hub", "demo/tiny-bert-mrpc-soup", files, tmp_path)
    assert weights.read_bytes() == (soup / "model.safetensors").read_bytes()
    assert f"value: {greedy['report']['f1']}" in card.read_text()

    # Reloaded from the Hub, the soup scores what the cooked folder scores.
    lines = text_of(cell_with(book, 'print("from the Hub:')).splitlines()
    assert lines[0].startswith("from the Hub:") and lines[1].startswith("the cooked soup:")
    assert lines[0].split(":", 1)[1].strip() == lines[1].split(":", 1)[1].strip()


def test_start_local_hub_serves_then_puts_everything_back(tmp_path, hf_home):
    import os

    import datasets
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import are_progress_bars_disabled

    from hfsoup.testing.sandbox import start_local_hub

    endpoint, bars, dataset_bars = constants.ENDPOINT, are_progress_bars_disabled(), datasets.is_progress_bar_enabled()
    hub = start_local_hub(tmp_path / "work", progress_bars=False)
    try:
        assert constants.ENDPOINT == hub.url == os.environ["HF_ENDPOINT"] and hub.token not in repr(hub)
        assert are_progress_bars_disabled() and not datasets.is_progress_bar_enabled()
        hub.api().create_repo("me/repo")  # writes with the hub's token ...
        with pytest.raises(Exception, match="401"):  # ... and without one, as the Hub does
            HfApi(endpoint=hub.url, token=False).create_repo("me/other")
    finally:
        hub.close()
    hub.close()  # twice is fine
    assert constants.ENDPOINT == endpoint and are_progress_bars_disabled() == bars
    assert datasets.is_progress_bar_enabled() == dataset_bars and os.environ.get("HF_ENDPOINT") != hub.url
    assert (tmp_path / "work" / "hub").is_dir()
