"""Direct logit attribution: the parts sum to the model's own logit, for every family, at every position."""

from __future__ import annotations

import pytest
import torch
from debugger_helpers import random_ids

from lmscope import ModelView
from lmscope.debugger.dla import check_positions, direct_logit_attribution


def _tolerance(view) -> float:
    # HF's RMSNorm computes in float32 even for a float64 model; LayerNorm stays in float64.
    return 1e-12 if view.family.norm == "layer" else 1e-6


def test_parts_sum_to_the_logit_at_every_position(tiny):
    family, model, view = tiny
    ids = random_ids(view, 9, seed=1)
    if not view.cfg.causal:
        with pytest.raises(ValueError, match="masked-LM head"):
            direct_logit_attribution(view, ids)
        return
    logits = model(input_ids=ids[None]).logits[0].detach()
    if view.cfg.final_softcap is not None:  # Gemma 2: the parts sum to the logit before c * tanh(. / c)
        logits = torch.atanh(logits / view.cfg.final_softcap) * view.cfg.final_softcap
    for target, foil in ((11, None), (11, 40), (None, None)):
        attr = direct_logit_attribution(view, ids, target=target, foil=foil)
        want = logits[torch.arange(9), attr.targets]
        if foil is not None:
            want = want - logits[torch.arange(9), attr.foils]
        tol = _tolerance(view) * max(1.0, float(want.abs().max()))
        torch.testing.assert_close(attr.total(), want, rtol=0, atol=tol)
        torch.testing.assert_close(attr.logit, want, rtol=0, atol=tol)
    assert attr.targets == logits.argmax(-1).tolist()  # default target: the model's own prediction
    L, H, d_ff = view.cfg.n_layers, view.cfg.n_heads, view.cfg.d_ff
    assert attr.heads.shape == (L, H, 9) and attr.values.shape == (L, d_ff, 9)
    assert attr.layer_table().shape == (L, 2, 9)
    torch.testing.assert_close(attr.layer_table().sum((0, 1)) + attr.embed + attr.final_bias, attr.total())


def test_a_subset_of_positions_matches_the_full_table(tiny):
    _, _, view = tiny
    if not view.cfg.causal:
        pytest.skip("masked LM: refused above")
    ids = random_ids(view, 8, seed=2)
    full = direct_logit_attribution(view, ids, target=5)
    some = direct_logit_attribution(view, ids, target=5, positions=[6, 2])
    assert some.positions == [6, 2]
    torch.testing.assert_close(some.heads, full.heads[..., [6, 2]])
    torch.testing.assert_close(some.values, full.values[..., [6, 2]])


def test_head_part_is_the_head_output_read_through_the_frozen_norm():
    """Brute force for one head on a pre-norm model: head vector -> frozen final norm -> U column."""
    from conftest import make_tiny_model

    view = ModelView(make_tiny_model("gpt2"))
    ids = random_ids(view, 6, seed=3)
    attr = direct_logit_attribution(view, ids, target=9, positions=[4])
    from lmscope.core.hooks import hook_name

    _, cache = view.run_with_cache(ids[None], [hook_name(1, "attn_heads"), hook_name(2, "resid_post")])
    apply, _ = view.frozen_norm(view.final_norm, cache[hook_name(2, "resid_post")][0, 4])
    head = cache[hook_name(1, "attn_heads")][0, 4, 2]
    torch.testing.assert_close(attr.heads[1, 2, 0], apply(head) @ view.W_U[:, 9].detach())


def test_top_and_rows_name_the_parts(tiny):
    _, _, view = tiny
    if not view.cfg.causal:
        pytest.skip("masked LM")
    attr = direct_logit_attribution(view, random_ids(view, 5), target=7, positions=[-1])
    top = attr.top(-1, n=4)
    assert len(top) == 4 and abs(top[0][1]) >= abs(top[-1][1])
    heads = attr.top(4, n=3, kind="heads")
    assert all(name.startswith("L") and "H" in name for name, _ in heads)
    rows = attr.rows(n_values=None)
    assert sum(r["value"] for r in rows) == pytest.approx(float(attr.total()[0]), abs=1e-9)
    with pytest.raises(IndexError, match="not attributed"):
        attr.top(0)
    with pytest.raises(ValueError, match="kind"):
        attr.top(-1, kind="neurons")


def test_bad_input_names_the_argument():
    from conftest import make_tiny_model

    view = ModelView(make_tiny_model("llama"))
    ids = random_ids(view, 5)
    with pytest.raises(IndexError, match="positions: position 5"):
        direct_logit_attribution(view, ids, positions=[5])
    with pytest.raises(ValueError, match="empty"):
        direct_logit_attribution(view, torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="target has 2 ids for 5 positions"):
        direct_logit_attribution(view, ids, target=[1, 2])
    with pytest.raises(IndexError, match="foil id 500"):
        direct_logit_attribution(view, ids, target=3, foil=500)
    with pytest.raises(ValueError, match="positions is empty"):
        check_positions([], 5)


@pytest.mark.slow
def test_smollm_paris_parts_sum_in_float32(smollm):
    model, tok = smollm
    view = ModelView(model)
    ids = tok("The capital of France is", return_tensors="pt").input_ids[0]
    paris, london = tok(" Paris").input_ids[0], tok(" London").input_ids[0]
    attr = direct_logit_attribution(view, ids, target=paris, foil=london)
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0]
    want = logits[:, paris] - logits[:, london]
    torch.testing.assert_close(attr.total(), want, rtol=0, atol=2e-3)
    assert float(want[-1]) > 0  # Paris beats London at the last position


@pytest.mark.slow
def test_gemma3_parts_sum_through_the_post_norms(gemma):
    model, tok = gemma
    view = ModelView(model)
    assert view.family.post_attn_norm is not None and view.family.post_ff_norm is not None
    ids = tok("The capital of France is", return_tensors="pt").input_ids[0]
    attr = direct_logit_attribution(view, ids)
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0]
    want = logits[torch.arange(len(ids)), attr.targets]
    torch.testing.assert_close(attr.total(), want, rtol=0, atol=2e-3)
