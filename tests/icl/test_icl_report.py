"""The chapter's tables and figures, on hand-built results (exact text) and on a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_model
from icl_helpers import tiny_run

from lmscope import ModelView
from lmscope.icl.metrics import SeedResult, TaskResult
from lmscope.icl.report import (
    PAPER_TABLE,
    accuracy_table,
    lcgd_wins,
    plot_accuracies,
    plot_layer_curves,
    sim_am_table,
    similarity_table,
    untrained_control_table,
)


def result(name: str, gd: float, lcgd: float, icl_correct=(True, True), sim_am=(0.5, 0.6, 0.7)) -> TaskResult:
    """One seed, two examples, two layers: SimAOU and SimAM_Δ constant per method."""
    full = lambda v: np.full((2, 2), v)  # noqa: E731
    s = SeedResult(name, 0, 2, 0.1, {"zs": np.array([False, True]), "icl": np.array(icl_correct),
                                     "gd": np.array([True, True]), "lcgd": np.array([False, True])})
    s.sim_aou = {"gd": full(gd), "lcgd": full(lcgd)}
    s.sim_am_delta = {"gd": full(gd / 2), "lcgd": full(lcgd / 2)}
    s.sim_am = {"zs": full(sim_am[0]), "gd": full(sim_am[1]), "lcgd": full(sim_am[2])}
    s.random_sim_aou = full(0.001)
    return TaskResult(name, 2, [s], 2)


def test_accuracy_and_similarity_tables():
    results = {"a": result("a", 0.2, 0.3)}
    acc = accuracy_table(results).splitlines()
    assert acc[0] == "| task | ZS | ICL | GD | LCGD | Rec2FTP GD | Rec2FTP LCGD |"
    assert acc[2] == "| a | 0.500 (0.000) | 1.000 (0.000) | 1.000 (0.000) | 0.500 (0.000) | 1.000 (0.000) | n/a |"
    sim = similarity_table(results).splitlines()
    assert sim[2] == "| a (ours) | 0.200 (0.000) | 0.300 (0.000) | 0.100 (0.000) | 0.150 (0.000) | 0.001 (0.000) |"
    assert len(sim) == 3 + len(PAPER_TABLE) and sim[3].startswith("| SST-2 (paper) | 0.111 (0.002) | 0.223 (0.010)")
    assert len(similarity_table(results, with_paper=False).splitlines()) == 3


def test_lcgd_wins_counts_cells():
    assert lcgd_wins({"a": result("a", 0.2, 0.3), "b": result("b", 0.4, 0.1)}) == (2, 4)
    skipped = result("c", 0.2, 0.3)
    skipped.seeds[0].sim_aou.pop("lcgd")
    assert lcgd_wins({"c": skipped}) == (1, 1)


def notebook_cell_18(results, control):
    """The trained-vs-untrained table as notebook 04 built it before it moved to the library (reference)."""
    rows = ["| task | model | ICL acc | SimAOU GD | SimAOU LCGD | SimAM_Δ GD | SimAM_Δ LCGD | random SimAOU |",
            "|---|---|---|---|---|---|---|---|"]
    fmt = lambda m: "n/a" if np.isnan(m[0]) else f"{m[0]:.3f}"  # noqa: E731
    for name in control:
        for label, res in (("trained", results[name]), ("untrained", control[name])):
            cells = [fmt(res.accuracy("icl"))] + [fmt(res.summary(m, meth)) for m in ("sim_aou", "sim_am_delta")
                                                  for meth in ("gd", "lcgd")] + [fmt(res.summary("random_sim_aou", ""))]
            rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def notebook_cell_21(results, control):
    rows = ["| task | model | cos(ICL, ZS) | cos(ICL, GD) | cos(ICL, LCGD) |", "|---|---|---|---|---|"]
    for name in control:
        for label, res in (("trained", results[name]), ("untrained", control[name])):
            cells = [f"{res.summary('sim_am', m)[0]:.4f}" for m in ("zs", "gd", "lcgd")]
            rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def test_control_tables():
    trained = {"a": result("a", 0.2, 0.3), "b": result("b", 0.4, 0.1)}
    untrained = {"a": result("a", 0.25, 0.35, icl_correct=(False, True), sim_am=(0.61, 0.3, 0.2))}
    untrained["a"].seeds[0].sim_aou.pop("lcgd")  # a skipped method shows as n/a
    table = untrained_control_table(trained, untrained)
    assert table.splitlines()[2:] == [
        "| a | trained | 1.000 | 0.200 | 0.300 | 0.100 | 0.150 | 0.001 |",
        "| a | untrained | 0.500 | 0.250 | n/a | 0.125 | 0.175 | 0.001 |",
    ]
    assert table == notebook_cell_18(trained, untrained)
    cos = sim_am_table(trained, untrained)
    assert cos.splitlines()[2:] == ["| a | trained | 0.5000 | 0.6000 | 0.7000 |",
                                    "| a | untrained | 0.6100 | 0.3000 | 0.2000 |"]
    assert cos == notebook_cell_21(trained, untrained)
    with pytest.raises(ValueError, match="no trained results"):
        untrained_control_table({"b": trained["b"]}, untrained)


def test_tables_and_figures_of_a_tiny_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = ModelView(make_tiny_model("llama"))
    results = {"toy": tiny_run(view)}
    control = {"toy": tiny_run(ModelView(make_tiny_model("llama", seed=1)))}
    assert untrained_control_table(results, control) == notebook_cell_18(results, control)
    assert sim_am_table(results, control) == notebook_cell_21(results, control)
    fig = plot_layer_curves(results)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4  # GD, LCGD, random, zero line
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), results["toy"].layer_curve("sim_aou", "gd")[0])
    fig2 = plot_accuracies(results)
    assert len(fig2.axes[0].patches) == 4  # ZS, ICL, GD, LCGD bars of one task
    plt.close("all")


def test_size_table_and_figure_from_logged_norms():
    from lmscope.icl.report import plot_sizes, size_table

    res = tiny_run(ModelView(make_tiny_model("llama")))
    s = res.seeds[0]
    L = len(s.update_norm["gd"])
    assert s.attn_change["icl"].shape == (4, L) and set(s.attn_change) == {"icl", "gd", "lcgd"}
    gd = float(np.sqrt((s.update_norm["gd"] ** 2).sum()))
    table = size_table({"toy": res})
    assert f"{gd:.3g}" in table and table.count("\n") == 2
    assert len(plot_sizes({"toy": res}).axes) == 2
