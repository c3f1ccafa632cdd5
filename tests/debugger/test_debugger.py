"""The LM-Debugger library: traces, value details, interventions and generation.

Tiny random models of every family check the identities against brute force; the
embedded model checks a real prediction and the same identities in float32.
"""

import math

import pytest
import torch

from lmscope import ModelView
from lmscope.debugger.engine import (
    Intervention,
    LMDebugger,
    parse_coefficient,
    parse_value_name,
    value_name,
)

TOL = dict(rtol=1e-9, atol=1e-9)


def _ids(view, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, view.cfg.d_vocab, (length,), generator=g)


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _clean(view, ids, names):
    return view.run_with_cache(ids.reshape(1, -1), names)


# -- names and coefficients --------------------------------------------------------------
def test_value_names_round_trip_and_errors():
    assert parse_value_name("L12D34") == (12, 34)
    assert parse_value_name(" l3d0 ") == (3, 0)
    assert value_name(12, 34) == "L12D34"
    for bad in ("", "L12", "D34", "L-1D3", "12D34", "L1.5D2", "layer12unit34"):
        with pytest.raises(ValueError, match="L<layer>D<unit>"):
            parse_value_name(bad)
    with pytest.raises(IndexError, match="layer 99 does not exist"):
        parse_value_name("L99D1", n_layers=30, d_ff=1536)
    with pytest.raises(IndexError, match="unit 1536 does not exist"):
        parse_value_name("L1D1536", n_layers=30, d_ff=1536)


def test_coefficients_parse_and_reject_non_finite():
    assert parse_coefficient("off") == ("off", None)
    assert parse_coefficient(" ON ") == ("on", None)
    assert parse_coefficient(2) == ("set", 2.0)
    assert parse_coefficient("-1.5e1") == ("set", -15.0)
    for bad in (float("nan"), float("inf"), "inf", "nan", "abc", True, None, [1.0]):
        with pytest.raises(ValueError, match="(finite|number)"):
            parse_coefficient(bad)


# -- tiny models of every family ------------------------------------------------------------
def test_trace_ranks_sub_updates_by_score(tiny):
    family, model, view = tiny
    dbg = LMDebugger(view, n_updates=5, n_heads=2, k=4)
    ids = _ids(view)
    trace = dbg.trace(ids, position=3)
    L = view.cfg.n_layers
    assert len(trace.layers) == L and trace.position == 3
    _, cache = _clean(view, ids, [f"blocks.{l}.ff_coeffs" for l in range(L)] + [f"blocks.{l}.attn_heads" for l in range(L)])
    for l, lt in enumerate(trace.layers):
        m = cache[f"blocks.{l}.ff_coeffs"][0, 3]
        score = m.abs() * view.layers[l].ff_values.detach().norm(dim=-1)  # brute force |m_i| * ||v_i||
        expect = score.topk(5).indices.tolist()
        assert [u.unit for u in lt.ff_updates] == expect
        for u in lt.ff_updates:
            assert math.isclose(u.coeff, float(m[u.unit]), rel_tol=1e-6)
            assert math.isclose(u.score, float(score[u.unit]), rel_tol=1e-6)
        head_norm = cache[f"blocks.{l}.attn_heads"][0, 3].norm(dim=-1)
        assert [h.head for h in lt.heads] == head_norm.topk(2).indices.tolist()
        assert len(lt.before_attn) == len(lt.after_ff) == 4
    # after the last FF block the lens is the model's own prediction
    assert trace.layers[-1].after_ff[0][0] == trace.prediction[0][0]


def test_trace_lens_matches_brute_force(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view, k=3)
    ids = _ids(view)
    trace = dbg.trace(ids)
    names = [f"blocks.{l}.{p}" for l in range(view.cfg.n_layers) for p in ("resid_pre", "resid_mid", "resid_post")]
    _, cache = _clean(view, ids, names)
    for l, lt in enumerate(trace.layers):
        for point, row in (("resid_pre", lt.before_attn), ("resid_mid", lt.after_attn), ("resid_post", lt.after_ff)):
            probs = view.unembed(cache[f"blocks.{l}.{point}"][0, -1]).softmax(-1)
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
    ids = _ids(view)
    l, u, c = 1, 7, 2.5
    names = [f"blocks.{l}.ff_coeffs", f"blocks.{l}.mlp_out", f"blocks.{l}.resid_mid"]
    _, clean = _clean(view, ids, names)
    with dbg.intervene([Intervention(l, u, "set", c)]):
        _, hit = _clean(view, ids, names)
    v = view.layers[l].ff_values[u]
    delta = (c - clean[names[0]][0, :, u])[:, None] * v  # (T, d_model)
    torch.testing.assert_close(hit[names[0]][0, :, u], torch.full_like(hit[names[0]][0, :, u], c))
    torch.testing.assert_close(hit[names[1]][0], clean[names[1]][0] + delta, **TOL)
    if family != "bert":  # pre-norm: the final logits move exactly by unembedding the change
        L = view.cfg.n_layers - 1
        name = f"blocks.{L}.resid_post"
        logits0, cache0 = _clean(view, ids, [name, f"blocks.{L}.ff_coeffs"])
        with dbg.intervene([Intervention(L, u, "set", c)]):
            logits1 = model(input_ids=ids[None]).logits
        m = cache0[f"blocks.{L}.ff_coeffs"][0, :, u]
        predicted = view.unembed(cache0[name][0] + (c - m)[:, None] * view.layers[L].ff_values[u])
        torch.testing.assert_close(logits1[0], predicted, **TOL)


def test_on_and_off_coefficients(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = _ids(view)
    L = view.cfg.n_layers
    _, clean = _clean(view, ids, [f"blocks.{l}.ff_coeffs" for l in range(L)])
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


def test_nothing_leaks_after_interventions(tiny):
    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = _ids(view)[None]
    before_hooks = _n_hooks(model)
    clean = model(input_ids=ids).logits
    ivs = [Intervention(0, 1, "on"), Intervention(2, 3, "set", -4.0)]
    with dbg.intervene(ivs, ids):
        changed = model(input_ids=ids).logits
        assert _n_hooks(model) > before_hooks
    assert not torch.allclose(changed, clean)
    assert _n_hooks(model) == before_hooks
    with pytest.raises(RuntimeError):
        with dbg.intervene(ivs, ids):
            raise RuntimeError("boom")
    assert _n_hooks(model) == before_hooks
    dbg.trace(ids, interventions=ivs)
    assert _n_hooks(model) == before_hooks
    torch.testing.assert_close(model(input_ids=ids).logits, clean, rtol=0, atol=0)


def test_generation_is_greedy_with_interventions(tiny):
    family, model, view = tiny
    dbg = LMDebugger(view)
    ids = _ids(view, length=5)
    if family == "bert":
        with pytest.raises(ValueError, match="causal"):
            dbg.generate(ids, 3)
        return
    ivs = [Intervention(1, 2, "set", 5.0)]
    steps = []
    new = dbg.generate(ids, 6, ivs, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (6, 6)
    seq = ids[None]
    with dbg.intervene(ivs, seq):  # brute force: full re-run per token, no cache
        for _ in range(6):
            nxt = model(input_ids=seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    assert new == seq[0, 5:].tolist()
    assert _n_hooks(model) == 0


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
    assert _n_hooks(model) == 0


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
    logits0, cache0 = view.run_with_cache(ids, [f"blocks.{L}.resid_post", f"blocks.{L}.ff_coeffs"])
    with dbg.intervene([Intervention(L, unit, "off")]):
        logits1 = model(input_ids=ids).logits
    m = cache0[f"blocks.{L}.ff_coeffs"][0, :, unit]
    predicted = view.unembed(cache0[f"blocks.{L}.resid_post"][0] - m[:, None] * view.layers[L].ff_values[unit])
    torch.testing.assert_close(logits1[0], predicted, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model(input_ids=ids).logits, logits0, rtol=0, atol=0)
    assert _n_hooks(model) == 0


@pytest.mark.slow
def test_embedded_generation_and_bad_prompts(smol_dbg):
    dbg = smol_dbg
    text = dbg.generate_text("The capital of France is", 3)
    assert text.startswith(" Paris")
    with pytest.raises(ValueError, match="empty"):
        dbg.trace("   ")
    with pytest.raises(ValueError, match="context of 8192"):
        dbg.trace("word " * 9000)


def test_on_scale_and_steering_helpers(tiny):
    from lmscope.debugger.steering import lexicon_score, neutral_prompts, paired_effect

    _, model, view = tiny
    dbg = LMDebugger(view)
    ids = _ids(view)[None]
    full = dbg.coefficients([Intervention(1, 3, "on")], ids)[1][1][0]
    quarter = dbg.coefficients([Intervention(1, 3, "on", 0.25)], ids)[1][1][0]
    assert float(quarter) == pytest.approx(0.25 * float(full))
    assert Intervention(1, 3, "on", 0.25).describe() == "L1D3=on\u00d70.25"
    assert len(neutral_prompts()) >= 50 and len(set(neutral_prompts())) == len(neutral_prompts())
    assert lexicon_score("Great, a GREAT day; sadly the food was awful.") == 1
    eff = paired_effect([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])
    assert eff["mean_diff"] == pytest.approx(2.0) and eff["ci_low"] <= 2.0 <= eff["ci_high"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_runs_match_single_prompts(family):
    from conftest import make_tiny_model

    model = make_tiny_model(family)
    view = ModelView(model)
    dbg = LMDebugger(view)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    ivs = [Intervention(1, 3, "on"), Intervention(2, 5, "set", 3.0)]
    batch = dbg.last_logits_batch(prompts, ivs)
    for i, p in enumerate(prompts):
        torch.testing.assert_close(batch[i], dbg.logits(p, ivs)[-1], rtol=1e-7, atol=1e-7)
    gen = dbg.generate_batch(prompts, 5, ivs)
    assert gen == [dbg.generate(p, 5, ivs) for p in prompts]
    assert _n_hooks(model) == 0
