"""Fisher merging and RegMean on real weights (slow, opt-in; issue 17 items 7-8): all-MiniLM-L6-v2 fine-tunes on the
real drug reviews, beside the uniform and greedy soups, selected on half of the test split and reported on the other.

    HFSOUP_SLOW=1 python -m pytest tests/test_data_merges_minilm.py -q -s    # -s prints the table and the timing
"""

from __future__ import annotations

import time

import pytest

from tests.test_minilm import opt_in, slow_opted_in  # noqa: F401 - the skipif condition reads slow_opted_in
from tests.test_soup_select_minilm import MAX_LENGTH, hub, reviews_file, threads  # noqa: F401 - fixtures

FISHER_EXAMPLES = 64  # one backward pass per example and ingredient: the slow part


@pytest.mark.slow
@opt_in
def test_fisher_and_regmean_soups_beside_uniform_and_greedy(minilm_family, reviews_file, tmp_path, threads, hub):  # noqa: F811, E501
    import hfsoup
    from hfsoup.soups import RegMeanSoup

    selection = hfsoup.Selection(
        task="text-classification",
        report="test",
        data_files={"test": [str(reviews_file)]},
        max_length=MAX_LENGTH,
        compare=["uniform", "greedy", RegMeanSoup(regmean_examples=190), "ensemble"],
    )
    started = time.perf_counter()
    result = hfsoup.soup(
        minilm_family.finetunes,
        tmp_path / "fisher",
        method="fisher",
        options={"fisher_examples": FISHER_EXAMPLES},
        selection=selection,
    )
    seconds = time.perf_counter() - started
    print(f"\n{result.results.format_table()}\n(fisher soup with every baseline: {seconds:.0f} s)")
    table = result.results
    names = [r.name for r in table.rows]
    assert names[4:] == ["uniform soup", "greedy soup", "fisher soup", "regmean soup", "ensemble"]
    for row in table.rows:  # every figure on both parts
        assert 0 < row.held_out["accuracy"] <= 1 and 0 < row.report["accuracy"] <= 1, row.name
    assert result.records["fisher"]["examples_used"] == FISHER_EXAMPLES
    assert result.records["regmean"]["layers"] > 30  # every linear layer of the 6-layer encoder, pooler and head
    # Real fine-tunes of one start merge well either way: no worse than chance-level damage.
    best = table.best_individual().held_out["accuracy"]
    for name in ("fisher soup", "regmean soup"):
        assert table.row(name).held_out["accuracy"] >= best - 0.1, name
