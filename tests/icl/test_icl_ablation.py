"""The ablation: one factor changed per cell, LCGD - GD per cell, learning rates chosen on validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_tiny_model
from icl_helpers import CharTokenizer, small_task

from lmscope import ModelView
from lmscope.core.tuned_lens import TunedLens
from lmscope.icl.ablation import ablation, ablation_table, best_lr, cell_rows, choose_lrs, plot_ablation


def _cells(view, **kw):
    return ablation(view, CharTokenizer(), small_task(), lrs=(0.01, 0.05, 0.2), best=0.05, seeds=(0, 1), n_test=3,
                    k=3, k_changed=2, **kw)


def test_one_factor_per_cell_and_the_differences():
    view = ModelView(make_tiny_model("llama"))
    lens = TunedLens(view)  # identity translators: the readout cell must equal the paper cell exactly
    cells = _cells(view, readout_lens=lens)
    assert [(c.factor, c.value) for c in cells] == [("paper", ""), ("loss_on", "label"), ("k", 2),
                                                   ("read_at", "last"), ("lr", 0.01), ("lr", 0.2),
                                                   ("readout", "tuned_lens")]
    paper = cells[0]
    for c in cells[1:]:
        assert len(c.result.seeds) == 2
    assert cells[2].result.k == 2 and paper.result.k == 3
    assert cells[4].result.seeds[0].lr == 0.01
    assert cells[1].result.seeds[0].losses["gd"] != paper.result.seeds[0].losses["gd"]  # label-only loss
    readout = cells[-1]
    for m in ("sim_aou", "sim_am_delta"):
        np.testing.assert_allclose(readout.difference(m), paper.difference(m), atol=1e-9)
        diffs = [s.metric_values(m, "lcgd").mean() - s.metric_values(m, "gd").mean() for s in paper.result.seeds]
        assert paper.difference(m) == pytest.approx((np.mean(diffs), np.std(diffs)))
    rows = cell_rows(cells)
    assert rows[0]["cell"].endswith("paper") and not math.isnan(rows[0]["d_sim_aou"])
    assert ablation_table(cells).count("\n") == len(cells) + 1
    assert plot_ablation(cells).axes


def test_learning_rates_chosen_on_validation():
    view = ModelView(make_tiny_model("llama"))
    lrs, best, rows = choose_lrs(view, CharTokenizer(), small_task(), grid=(0.3, 0.01, 0.1, 0.03), k=3, n_eval=4)
    assert best == best_lr(rows) and best in lrs and len(lrs) == 3 and list(lrs) == sorted(lrs)
    grid = [0.01, 0.03, 0.1, 0.3]
    assert grid.index(lrs[0]) + 1 == grid.index(lrs[1]) and grid.index(lrs[1]) + 1 == grid.index(lrs[2])
    assert abs(grid.index(best) - grid.index(lrs[1])) <= 1


def test_bad_ablation_input():
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="Unknown ablation factors"):
        _cells(view, factors=("dropout",))
    with pytest.raises(ValueError, match="best="):
        ablation(view, CharTokenizer(), small_task(), lrs=(0.1, 0.2, 0.3), best=0.5)
    with pytest.raises(ValueError, match="at least 3"):
        choose_lrs(view, CharTokenizer(), small_task(), grid=(0.1, 0.2), k=3)
