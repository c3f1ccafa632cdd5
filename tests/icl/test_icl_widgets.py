"""The chapter 04 explorer: per-layer similarities, and the widget builds on a tiny model."""

from __future__ import annotations

import pytest
from conftest import make_tiny_model
from icl_helpers import CharTokenizer, small_task, tiny_run

from lmscope import ModelView


def test_widget_layer_similarities_and_explorer():
    import matplotlib

    matplotlib.use("Agg")
    from lmscope.icl.widgets import icl_vs_gd_explorer, layer_similarities

    view = ModelView(make_tiny_model("llama"))
    res = tiny_run(view)
    sims = layer_similarities(res, 1)
    assert sims["sim_aou"]["gd"] == pytest.approx(res.seeds[0].sim_aou["gd"][:, 1].mean())
    assert sims["sim_am_delta"]["lcgd"] == pytest.approx(res.seeds[0].sim_am_delta["lcgd"][:, 1].mean())
    box = icl_vs_gd_explorer(view, CharTokenizer(), {"toy": res}, tasks=[small_task()], ks=(3,))
    assert len(box.children) == 2


def test_explorer_opens_on_a_computed_result(monkeypatch):
    """With results at k=3 and k=5 offered too, the widget opens on k=3 and runs nothing at display."""
    import matplotlib

    matplotlib.use("Agg")
    import lmscope.icl.widgets as icl_widgets

    view = ModelView(make_tiny_model("llama"))
    res = tiny_run(view)
    monkeypatch.setattr(icl_widgets, "run_task", lambda *a, **kw: pytest.fail("ran a study at display"))
    box = icl_widgets.icl_vs_gd_explorer(view, CharTokenizer(), {"toy": res}, tasks=[small_task()], ks=(3, 5))
    k_picker = box.children[0].children[1]
    assert k_picker.value == 3 and list(k_picker.options) == [3, 5]
