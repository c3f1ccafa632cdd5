"""Case study 1: which values write an answer, and switching them off against random values."""

import pytest
import torch
from debugger_helpers import n_hooks, random_ids

from lmscope import ModelView
from lmscope.core.hooks import hook_name
from lmscope.debugger.attribution import attribute_answer, plot_attribution
from lmscope.debugger.engine import LMDebugger


def _answer_probs(view, ids, switched_off):
    """Brute force: next-token probabilities with the coefficients of ``(layer, unit)`` pairs set to 0."""
    def zero(units):
        def edit(m):
            m = m.clone()
            m[..., units] = 0
            return m
        return edit

    by_layer = {}
    for layer, unit in switched_off:
        by_layer.setdefault(layer, []).append(unit)
    with torch.no_grad(), view.overwrite({hook_name(l, "ff_coeffs"): zero(u) for l, u in by_layer.items()}):
        return view.model(input_ids=ids[None]).logits[0, -1].softmax(-1)


def test_attribution_matches_brute_force(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids, answer = random_ids(view), 11
    case = attribute_answer(dbg, ids, answer, n_top=4, seed=0)
    assert case.answer_id == answer and case.answer == "<11>"
    assert [(u.layer, u.unit, u.score) for u in case.contributors] == [
        (u.layer, u.unit, u.score) for u in dbg.value_contributions(ids, answer, top=4)]
    assert [(iv.layer, iv.unit, iv.mode) for iv in case.top_off] == [(u.layer, u.unit, "off") for u in case.contributors]
    # the control: as many values, in the same layers, none of them a contributor, all switched off
    assert [iv.layer for iv in case.random_off] == [u.layer for u in case.contributors]
    assert all(iv.mode == "off" for iv in case.random_off)
    assert not {(iv.layer, iv.unit) for iv in case.random_off} & {(u.layer, u.unit) for u in case.contributors}
    clean = _answer_probs(view, ids, [])
    top = _answer_probs(view, ids, [(u.layer, u.unit) for u in case.contributors])
    rand = _answer_probs(view, ids, [(iv.layer, iv.unit) for iv in case.random_off])
    assert case.p_clean == pytest.approx(float(clean[answer]), rel=1e-9)
    assert case.p_top_off == pytest.approx(float(top[answer]), rel=1e-9)
    assert case.p_random_off == pytest.approx(float(rand[answer]), rel=1e-9)
    assert case.p_top_off != pytest.approx(case.p_clean, rel=1e-6)  # switching values off changed something
    assert case.top_after_off == (f"<{int(top.argmax())}>", pytest.approx(float(top.max()), rel=1e-9))
    torch.testing.assert_close(torch.as_tensor(case.lens_probability), dbg.lens_probability(ids, answer))
    assert n_hooks(model) == 0


def test_first_layer_and_bad_answers(tiny):
    _, _, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view)
    case = attribute_answer(dbg, ids, 5, n_top=2)
    after_ff = case.lens_probability[2]
    assert case.first_layer(threshold=-1.0) == 0 and case.first_layer(threshold=2.0) is None
    middle = float(sorted(after_ff)[1])
    assert case.first_layer(threshold=middle) == int(next(l for l, p in enumerate(after_ff) if p > middle))
    assert attribute_answer(dbg, ids, 5, n_top=2, seed=1).random_off != case.random_off  # the seed draws the control
    with pytest.raises(ValueError, match="outside the vocabulary"):
        attribute_answer(dbg, ids, view.cfg.d_vocab)
    with pytest.raises(ValueError, match="no tokenizer"):
        attribute_answer(dbg, ids, " Paris")


def test_plot_attribution(tiny):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, view = tiny
    case = attribute_answer(LMDebugger(view), random_ids(view), 7, n_top=3)
    fig = plot_attribution(case)
    ax, bx = fig.axes
    assert len(ax.lines) == 3
    for line, row in zip(ax.lines, case.lens_probability):
        assert list(line.get_ydata()) == pytest.approx(row.tolist())
    widths = [bar.get_width() for bar in bx.patches]
    assert widths == pytest.approx([u.score for u in case.contributors][::-1])
    plt.close(fig)


@pytest.mark.slow
def test_embedded_paris_needs_its_top_contributors(smollm):
    model, tok = smollm
    dbg = LMDebugger(ModelView(model), tok)
    case = attribute_answer(dbg, "The capital of France is", " Paris", n_top=10, seed=0)
    assert case.answer == " Paris" and case.p_clean > 0.5
    # switching the ten top contributors off hurts the answer much more than ten random values of the same layers
    assert case.p_top_off < 0.5 * case.p_clean
    assert case.p_random_off > 0.9 * case.p_clean
    assert case.first_layer() is not None and case.first_layer() >= 20
