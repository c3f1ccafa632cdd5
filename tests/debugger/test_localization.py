"""Case study 4 (localize_answer) on a tiny model, its head knock-out and control, and its figures."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from conftest import make_tiny_model
from debugger_helpers import WordTokenizer

from lmscope import ModelView
from lmscope.core.hooks import hook_name
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.figures import plot_dla, plot_lens_probability, plot_patching
from lmscope.debugger.localization import knock_out_heads, localize_answer, random_heads

matplotlib.use("Agg")


@pytest.fixture
def dbg():
    view = ModelView(make_tiny_model("gpt2"))
    tok = WordTokenizer(["<pad>", "<s>", "</s>"] + [f" w{i}" for i in range(view.cfg.d_vocab - 3)])
    return LMDebugger(view, tok)


def test_localize_answer_readings(dbg):
    case = localize_answer(dbg, " w1 w2 w3 w4", " w1 w9 w3 w4", " w5", " w6", n_top=3, seed=1)
    view = dbg.view
    assert case.subject_positions == [1]
    assert case.numbers()["dla_sum_error"] < 1e-9
    # top heads are the largest direct effects at the last position; the control shares their layers
    flat = case.attribution.heads[..., -1]
    assert [float(flat[l, h]) for l, h in case.top_heads] == sorted(flat.flatten().tolist(), reverse=True)[:3]
    assert [l for l, _ in case.random_heads] == [l for l, _ in case.top_heads]
    assert not set(case.random_heads) & set(case.top_heads)
    assert case.grids["resid_pre"].recovered()[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert set(case.approx_error) == {"resid_pre", "attn_out", "mlp_out"}
    h = case.handover_layer(threshold=0.0)
    assert h is None or 0 <= h < view.cfg.n_layers
    with pytest.raises(ValueError, match="same length"):
        localize_answer(dbg, " w1 w2 w3", " w1 w2", " w5", " w6")
    with pytest.raises(ValueError, match="are the same"):
        localize_answer(dbg, " w1 w2", " w1 w2", " w5", " w6")


def test_knock_out_heads_matches_a_zeroed_head(dbg):
    view = dbg.view
    ids = dbg.encode(" w1 w2 w3")[0]
    probs = knock_out_heads(view, ids, [(1, 2)])

    def zero(t):
        t = t.clone()
        t[:, :, 2] = 0
        return t

    with torch.no_grad(), view.overwrite({hook_name(1, "attn_heads"): zero}):
        want = view.model(input_ids=ids[None]).logits[0, -1].softmax(-1)
    torch.testing.assert_close(probs, want.float())
    assert random_heads(view, [0, 0], seed=3) == random_heads(view, [0, 0], seed=3)
    with pytest.raises(ValueError, match="no head left"):
        random_heads(view, [0], seed=0, exclude=[(0, h) for h in range(view.cfg.n_heads)])


def test_figures(dbg):
    case = localize_answer(dbg, " w1 w2 w3 w4", " w1 w9 w3 w4", " w5", " w6", n_top=2)
    assert len(plot_dla(case.attribution).axes) == 2
    assert len(plot_patching(case.grids).axes) == 4  # three heatmaps and the colour bar
    assert len(plot_lens_probability(dbg.lens_probability(" w1 w2", 5), " w5").axes) == 1
