"""The LM-Debugger engine: traces, value details, interventions and the case-study readings.

Tiny random models of every family check the identities against brute force; the
embedded model checks a real prediction and the same identities in float32.
"""

import math

import pytest
import torch
from debugger_helpers import n_hooks, random_ids

from lmscope import ModelView
from lmscope.core.hooks import hook_name, hook_names
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention
from lmscope.embedding.index import ProjectionIndex

TOL = dict(rtol=1e-9, atol=1e-9)


def _clean(view, ids, names):
    return view.run_with_cache(ids.reshape(1, -1), names)


# -- tiny models of every family ------------------------------------------------------------
def test_trace_ranks_sub_updates_by_score(tiny):
    family, model, view = tiny
    dbg = LMDebugger(view, n_updates=5, n_heads=2, k=4)
    ids = random_ids(view)
    trace = dbg.trace(ids, position=3)
    L = view.cfg.n_layers
    assert len(trace.layers) == L and trace.position == 3
    _, cache = _clean(view, ids, hook_names(["ff_coeffs", "attn_heads"], range(L)))
    for l, lt in enumerate(trace.layers):
        m = cache[hook_name(l, "ff_coeffs")][0, 3]
        score = m.abs() * view.layers[l].ff_values.detach().norm(dim=-1)  # brute force |m_i| * ||v_i||
        expect = score.topk(5).indices.tolist()
        assert [u.unit for u in lt.ff_updates] == expect
        for u in lt.ff_updates:
            assert math.isclose(u.coeff, float(m[u.unit]), rel_tol=1e-6)
            assert math.isclose(u.score, float(score[u.unit]), rel_tol=1e-6)
        head_norm = cache[hook_name(l, "attn_heads")][0, 3].norm(dim=-1)
        assert [h.head for h in lt.heads] == head_norm.topk(2).indices.tolist()
        assert len(lt.before_attn) == len(lt.after_ff) == 4
    # the trace's prediction is the model's own (its logits at that position, not the last one's)
    logits = model(input_ids=ids.reshape(1, -1)).logits[0, 3]
    top = logits.softmax(-1).topk(4)
    assert [t for t, _ in trace.prediction] == [f"<{i}>" for i in top.indices.tolist()]
    assert [p for _, p in trace.prediction] == pytest.approx(top.values.tolist(), rel=1e-6)
    assert trace.layers[-1].after_ff == trace.prediction


def test_trace_lens_matches_brute_force(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view, k=3)
    ids = random_ids(view)
    trace = dbg.trace(ids)
    _, cache = _clean(view, ids, hook_names(("resid_pre", "resid_mid", "resid_post"), range(view.cfg.n_layers)))
    for l, lt in enumerate(trace.layers):
        for point, row in (("resid_pre", lt.before_attn), ("resid_mid", lt.after_attn), ("resid_post", lt.after_ff)):
            probs = view.unembed(cache[hook_name(l, point)][0, -1]).softmax(-1)
            top = probs.topk(3)
            assert [t for t, _ in row] == [f"<{i}>" for i in top.indices.tolist()]
            assert [p for _, p in row] == pytest.approx(top.values.tolist(), rel=1e-5)


def test_value_details_match_brute_force(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    details = dbg.value_details("L2D5", k=7)
    top = (view.layers[2].ff_values[5] @ view.W_U).topk(7)
    assert details.ids == top.indices.tolist()
    assert details.scores == pytest.approx(top.values.tolist(), rel=1e-6)
    assert details.name == "L2D5" and dbg.value_details((2, 5), k=7).ids == details.ids
    with pytest.raises(IndexError, match="layer 3 does not exist"):
        dbg.value_details("L3D0")
    with pytest.raises(ValueError, match="L<layer>D<unit>"):
        dbg.value_details("L2 D")


def test_intervention_changes_ff_output_exactly_as_decomposed(tiny):
    """Setting m_u of layer l to c adds (c - m_u) v_u to that layer's FF output at every position."""
    family, model, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view)
    l, u, c = 1, 7, 2.5
    names = hook_names(["ff_coeffs", "mlp_out", "resid_mid"], [l])
    _, clean = _clean(view, ids, names)
    with dbg.intervene([Intervention(l, u, "set", c)]):
        _, hit = _clean(view, ids, names)
    v = view.layers[l].ff_values[u]
    delta = (c - clean[names[0]][0, :, u])[:, None] * v  # (T, d_model)
    torch.testing.assert_close(hit[names[0]][0, :, u], torch.full_like(hit[names[0]][0, :, u], c))
    torch.testing.assert_close(hit[names[1]][0], clean[names[1]][0] + delta, **TOL)
    if view.cfg.causal:  # pre-norm: the final logits move exactly by unembedding the change
        L = view.cfg.n_layers - 1
        name = hook_name(L, "resid_post")
        logits0, cache0 = _clean(view, ids, hook_names(["resid_post", "ff_coeffs", "resid_mid", "mlp_out"], [L]))
        with dbg.intervene([Intervention(L, u, "set", c)]):
            logits1 = model(input_ids=ids[None]).logits
        m = cache0[hook_name(L, "ff_coeffs")][0, :, u]
        change = (c - m)[:, None] * view.layers[L].ff_values[u]
        post = view.layers[L].post_ff_norm
        if post is None:
            predicted = view.unembed(cache0[name][0] + change)
            torch.testing.assert_close(logits1[0], predicted, **TOL)
        else:  # Gemma 2/3, OLMo 2: the post-FF norm sees the new raw sum (its RMS changes); float32 norms
            new = cache0[hook_name(L, "resid_mid")][0] + post(cache0[hook_name(L, "mlp_out")][0] + change)
            torch.testing.assert_close(logits1[0], view.unembed(new), rtol=2e-6, atol=2e-6)


def test_on_and_off_coefficients(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view)
    L = view.cfg.n_layers
    _, clean = _clean(view, ids, hook_names("ff_coeffs", range(L)))
    coeffs = dbg.coefficients([Intervention(0, 3, "on"), Intervention(2, 4, "off"), Intervention(1, 1, "on", enabled=False)],
                              ids[None])
    assert set(coeffs) == {0, 2}
    expect_on = (clean["blocks.0.ff_coeffs"][0, -1].abs() * view.layers[0].ff_values.detach().norm(dim=-1)).max()
    assert float(coeffs[0][1][0]) == pytest.approx(float(expect_on), rel=1e-6)
    assert float(coeffs[2][1][0]) == 0.0
    with dbg.intervene([Intervention(2, 4, "off")]):
        _, hit = _clean(view, ids, ["blocks.2.ff_coeffs"])
    assert torch.all(hit["blocks.2.ff_coeffs"][0, :, 4] == 0)
    with pytest.raises(ValueError, match="needs the prompt"):
        dbg.coefficients([Intervention(0, 3, "on")])


def test_on_scale_multiplies_the_on_coefficient(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view)[None]
    full = dbg.coefficients([Intervention(1, 3, "on")], ids)[1][1][0]
    quarter = dbg.coefficients([Intervention(1, 3, "on", 0.25)], ids)[1][1][0]
    assert float(quarter) == pytest.approx(0.25 * float(full))
    assert Intervention(1, 3, "on", 0.25).describe() == "L1D3=on\u00d70.25"


def test_nothing_leaks_after_interventions(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view)[None]
    before_hooks = n_hooks(model)
    clean = model(input_ids=ids).logits
    ivs = [Intervention(0, 1, "on"), Intervention(2, 3, "set", -4.0)]
    with dbg.intervene(ivs, ids):
        changed = model(input_ids=ids).logits
        assert n_hooks(model) > before_hooks
    assert not torch.allclose(changed, clean)
    assert n_hooks(model) == before_hooks
    with pytest.raises(RuntimeError):
        with dbg.intervene(ivs, ids):
            raise RuntimeError("boom")
    assert n_hooks(model) == before_hooks
    dbg.trace(ids, interventions=ivs)
    assert n_hooks(model) == before_hooks
    torch.testing.assert_close(model(input_ids=ids).logits, clean, rtol=0, atol=0)


def test_bad_input_is_named(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    with pytest.raises(ValueError, match="empty"):
        dbg.trace([])
    with pytest.raises(ValueError, match="context of 64"):
        dbg.trace(list(range(3, 70)))
    with pytest.raises(ValueError, match="no tokenizer"):
        dbg.trace("text without a tokenizer")
    with pytest.raises(IndexError, match="outside the prompt"):
        dbg.trace([3, 4, 5], position=3)
    with pytest.raises(IndexError, match="layer 99"):
        dbg.trace([3, 4], interventions=[Intervention(99, 1, "off")])
    with pytest.raises(IndexError, match="layer 99"):
        Intervention.parse("L99D1", "off", view=view)
    with pytest.raises(ValueError, match="finite"):
        Intervention.parse("L1D1", float("nan"))
    with pytest.raises(ValueError, match="no tokenizer"):
        dbg.token_id(" Paris")
    assert n_hooks(model) == 0


def test_an_index_of_another_model_is_refused(tiny):
    _, _, view = tiny
    wrong = ProjectionIndex(torch.zeros(view.cfg.n_layers, view.cfg.d_ff + 1, 4, dtype=torch.long), torch.zeros(1))
    with pytest.raises(ValueError, match="build the index of this model"):
        LMDebugger(view, index=wrong)


def test_value_contributions_and_lens_probability_match_brute_force(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view)
    token, L = 11, view.cfg.n_layers
    _, cache = _clean(view, ids, hook_names(["ff_coeffs", "resid_pre", "resid_mid", "resid_post", "mlp_out"],
                                            range(L)))
    with torch.no_grad():
        read = view.W_U[:, token]  # masked LM: the raw reading; causal: through the frozen final norm
        if view.cfg.causal:
            apply, _ = view.frozen_norm(view.final_norm, cache[hook_name(L - 1, "resid_post")][0, -1])
        else:
            apply = lambda v: v  # noqa: E731
        # each m_i v_i as it enters the residual (through a post-FF norm frozen at mlp_out where there is one)
        parts = [view.layers[l].residual_parts("ff", cache[hook_name(l, "ff_coeffs")][0, -1, :, None]
                                               * view.layers[l].ff_values, cache[hook_name(l, "mlp_out")][0, -1])[0]
                 for l in range(L)]
        direct = {(l, u): float(apply(parts[l][u]) @ read) for l in range(L) for u in range(view.cfg.d_ff)}
    best = sorted(direct, key=direct.get, reverse=True)[:6]
    contrib = dbg.value_contributions(ids, token, top=6)
    assert [(u.layer, u.unit) for u in contrib] == best
    assert [u.score for u in contrib] == pytest.approx([direct[b] for b in best], rel=1e-6)
    assert all(u.coeff == pytest.approx(float(cache[hook_name(u.layer, "ff_coeffs")][0, -1, u.unit])) for u in contrib)
    p = dbg.lens_probability(ids, token)
    assert p.shape == (3, L)
    for row, point in enumerate(("resid_pre", "resid_mid", "resid_post")):
        expect = [float(view.unembed(cache[hook_name(l, point)][0, -1]).softmax(-1)[token]) for l in range(L)]
        assert p[row].tolist() == pytest.approx(expect, rel=1e-6)


def test_contrast_of_a_prompt_with_itself_and_with_another(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    a, b = random_ids(view, seed=1), random_ids(view, seed=2)
    same = dbg.contrast(a, a, top=3)
    assert same["resid_cosine"].tolist() == pytest.approx([1.0] * view.cfg.n_layers)
    assert same["coeff_cosine"].tolist() == pytest.approx([1.0] * view.cfg.n_layers)
    c = dbg.contrast(a, b, top=3)
    L = view.cfg.n_layers
    _, ca = _clean(view, a, hook_names(["ff_coeffs", "resid_post"], range(L)))
    _, cb = _clean(view, b, hook_names(["ff_coeffs", "resid_post"], range(L)))
    for l in range(L):
        ma, mb = ca[hook_name(l, "ff_coeffs")][0, -1], cb[hook_name(l, "ff_coeffs")][0, -1]
        cos = torch.nn.functional.cosine_similarity(ma, mb, dim=0)
        assert float(c["coeff_cosine"][l]) == pytest.approx(float(cos), rel=1e-6, abs=1e-6)  # float32 cosines
        diff = (ma.abs() - mb.abs()) * view.layers[l].ff_values.norm(dim=-1)
        assert [u.unit for u in c["only_a"][l]] == diff.topk(3).indices.tolist()
        assert [u.unit for u in c["only_b"][l]] == (-diff).topk(3).indices.tolist()
        assert all(u.score > 0 for u in c["only_a"][l] + c["only_b"][l])


# -- the embedded model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_dbg(smollm):
    model, tok = smollm
    return LMDebugger(ModelView(model), tok)


@pytest.mark.slow
def test_embedded_trace_predicts_paris(smol_dbg):
    trace = smol_dbg.trace("The capital of France is")
    assert trace.prediction[0][0] == "\u2423Paris"
    assert trace.layers[-1].after_ff[0][0] == "\u2423Paris"
    assert len(trace.layers) == 30 and all(len(lt.ff_updates) == 10 for lt in trace.layers)
    assert all(len(u.tokens) == 10 for lt in trace.layers for u in lt.ff_updates)
    rows = trace.table()
    assert rows[-1]["after FF"].startswith("\u2423Paris")


@pytest.mark.slow
def test_embedded_intervention_exact_and_clean_afterwards(smol_dbg):
    dbg = smol_dbg
    view, model = dbg.view, dbg.model
    ids = dbg.encode("The capital of France is")
    L = view.cfg.n_layers - 1
    unit = dbg.trace(ids).layers[L].ff_updates[0].unit
    logits0, cache0 = view.run_with_cache(ids, hook_names(["resid_post", "ff_coeffs"], [L]))
    with dbg.intervene([Intervention(L, unit, "off")]):
        logits1 = model(input_ids=ids).logits
    m = cache0[hook_name(L, "ff_coeffs")][0, :, unit]
    predicted = view.unembed(cache0[hook_name(L, "resid_post")][0] - m[:, None] * view.layers[L].ff_values[unit])
    torch.testing.assert_close(logits1[0], predicted, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model(input_ids=ids).logits, logits0, rtol=0, atol=0)
    assert n_hooks(model) == 0


@pytest.mark.slow
def test_embedded_generation_and_bad_prompts(smol_dbg):
    dbg = smol_dbg
    text = dbg.generate_text("The capital of France is", 3)
    assert text.startswith(" Paris")
    with pytest.raises(ValueError, match="empty"):
        dbg.trace("   ")
    with pytest.raises(ValueError, match="context of 8192"):
        dbg.trace("word " * 9000)
    assert dbg.token_id(" Paris") == dbg.encode(" Paris")[0, -1]
    with pytest.raises(ValueError, match="not one"):
        dbg.token_id(" Parisian capitals")
