"""Chapter 04's static explorer: per-layer means over seeds of the recorded similarities, one panel per choice."""

import re

import numpy as np
import pytest

from lmscope.icl.ablation import Cell
from lmscope.icl.explorer import CONTROL, TRAINED, icl_static_explorer, results_by_k, similarity_panel
from lmscope.icl.metrics import SeedResult, TaskResult


def task_result(name, k, seed_values, with_random=True):
    """A TaskResult whose SimAOU of GD / LCGD per seed is ``seed_values[s][method]`` (n_ex, n_layers)."""
    seeds = []
    for s, values in enumerate(seed_values):
        correct = {"zs": np.array([True, False]), "icl": np.array([True, True])}
        seeds.append(SeedResult(name, s, k, 0.1, correct, sim_aou=dict(values),
                                random_sim_aou=np.zeros((2, 3)) if with_random else None))
    return TaskResult(name, k, seeds, 2)


def test_panel_shows_per_layer_means_over_seeds():
    rng = np.random.default_rng(0)
    draws = [{m: rng.uniform(-1, 1, (2, 3)) for m in ("gd", "lcgd")} for _ in range(2)]
    html = similarity_panel(task_result("t", 4, draws), "SimAOU")
    expected = np.mean([d["gd"].mean(0) for d in draws], axis=0)  # (n_layers,)
    cells = re.findall(r"data-tip='layer (\d), GD: (-?[\d.]+)", html)
    assert {int(l): float(v) for l, v in cells} == pytest.approx({l: round(float(expected[l]), 3) for l in range(3)})
    assert similarity_panel(task_result("t", 4, draws), "SimAM") is None  # not recorded


def test_explorer_controls_and_missing_control_runs():
    draws = [{m: np.ones((2, 3)) * 0.5 for m in ("gd", "lcgd")}]
    explorer = icl_static_explorer({2: {"a": task_result("a", 2, draws)}, 8: {"a": task_result("a", 8, draws)}},
                                   control={"a": task_result("a", 8, draws)})
    assert explorer.controls["k"] == ["2", "8"] and explorer.controls["model"] == [TRAINED, CONTROL]
    assert ("a", "8", CONTROL, "SimAOU") in explorer.panels and ("a", "2", CONTROL, "SimAOU") not in explorer.panels
    with pytest.raises(ValueError, match="by_k is empty"):
        icl_static_explorer({})


def test_results_by_k_adds_the_ablation_k_cell_of_this_model_only():
    draws = [{m: np.ones((2, 3)) * 0.5 for m in ("gd", "lcgd")}]
    main = {"a": task_result("a", 32, draws), "b": task_result("b", 32, draws)}
    k8 = task_result("a", 8, draws)
    cells = [Cell("paper", None, "m", main["a"]), Cell("k", 8, "m", k8),
             Cell("loss_on", "label", "m", task_result("a", 32, draws)), Cell("k", 4, "other", task_result("a", 4, draws))]
    by_k = results_by_k(main, cells, "m")
    assert list(by_k) == [32, 8] and by_k[32] == main and by_k[8] == {"a": k8}
    assert sorted(results_by_k(main, cells)) == [4, 8, 32]  # any model
    explorer = icl_static_explorer(by_k)
    assert explorer.controls["k"] == ["8", "32"]
    assert ("a", "8", TRAINED, "SimAOU") in explorer.panels and ("b", "8", TRAINED, "SimAOU") not in explorer.panels
