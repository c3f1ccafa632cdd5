"""Layer-causal finetuning: causality, one-layer equivalence, exact losses, exact restore."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_FAMILIES, make_tiny_model

from lmscope import ModelView
from lmscope.core.families import TRAINABLE_WEIGHTS
from lmscope.core.hooks import hook_names
from lmscope.icl.layer_causal import (
    NonFiniteLossError,
    finetune_,
    finetuned,
    layer_losses,
    trainable_parameters,
)

CAUSAL = [f for f in TINY_FAMILIES if f != "bert"]


def _ids(n=12, seed=0):
    return torch.randint(3, 97, (n,), generator=torch.Generator().manual_seed(seed))


def _grads(view, method, ids=None, positions=None):
    params = trainable_parameters(view)
    _, grads = layer_losses(view, _ids() if ids is None else ids, positions, method, params)
    return params, grads


@pytest.mark.parametrize("family", CAUSAL)
def test_perturbing_layers_above_leaves_lcgd_gradient_unchanged(family):
    view = ModelView(make_tiny_model(family))
    params, lc_before = _grads(view, "lcgd")
    _, gd_before = _grads(view, "gd")
    with torch.no_grad():  # perturb every weight of layers 1 and 2
        for block in view.blocks[1:]:
            for p in block.parameters():
                p.add_(0.1 * torch.randn_like(p))
    _, lc_after = _grads(view, "lcgd")
    _, gd_after = _grads(view, "gd")
    layer0 = [i for i, t in enumerate(params) if t.layer == 0]
    assert layer0
    for i in layer0:
        assert torch.equal(lc_before[i], lc_after[i]), params[i].name
        assert lc_before[i].abs().max() > 0
    assert any(not torch.allclose(gd_before[i], gd_after[i]) for i in layer0)


@pytest.mark.parametrize("family", CAUSAL)
def test_one_layer_lcgd_equals_gd(family):
    model = make_tiny_model(family)
    del ModelView(model).blocks[1:]  # keep the first block only
    model.config.num_hidden_layers = 1
    view = ModelView(model)
    assert view.cfg.n_layers == 1
    params, lc = _grads(view, "lcgd")
    _, gd = _grads(view, "gd")
    for a, b in zip(lc, gd):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    seqs = [(_ids(seed=s).tolist(), None) for s in range(3)]
    with finetuned(view, seqs, "gd", 0.1):
        after_gd = [t.param.detach().clone() for t in params]
    with finetuned(view, seqs, "lcgd", 0.1):
        after_lc = [t.param.detach().clone() for t in params]
    for a, b in zip(after_gd, after_lc):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("family", CAUSAL)
def test_losses_match_brute_force(family):
    """GD loss = the model's own next-token loss; LCGD loss of layer l = logit-lens CE of resid_post l."""
    view = ModelView(make_tiny_model(family))
    ids = _ids()
    gd, _ = layer_losses(view, ids, None, "gd")
    with torch.no_grad():
        logits = view.model(input_ids=ids[None]).logits[0]
    torch.testing.assert_close(gd[0], F.cross_entropy(logits[:-1], ids[1:]))
    lc, _ = layer_losses(view, ids, [4, 7, 11], "lcgd")
    names = hook_names("resid_post", range(view.cfg.n_layers))
    _, cache = view.run_with_cache(ids[None], names)
    for l, name in enumerate(names):
        logits = view.unembed(cache[name][0])  # (T, V)
        ref = F.cross_entropy(logits[[3, 6, 10]], ids[[4, 7, 11]])
        torch.testing.assert_close(lc[l], ref)


def test_lcgd_gradient_matches_per_layer_brute_force():
    """Layer l's LCGD gradient = the gradient of layer l's own lens loss with its input frozen."""
    view = ModelView(make_tiny_model("llama"))
    ids = _ids()
    params, grads = _grads(view, "lcgd", ids)
    names = hook_names("resid_pre", range(view.cfg.n_layers))
    _, pre = view.run_with_cache(ids[None], names)
    for l, block in enumerate(view.blocks):
        mine = [i for i, t in enumerate(params) if t.layer == l]
        ws = [params[i].param for i in mine]
        for w in ws:
            w.requires_grad_(True)
        with torch.enable_grad():
            h = pre[names[l]]
            pos = torch.arange(h.shape[1])[None]
            emb = view.model.model.rotary_emb(h, pos)
            out = block(h, position_embeddings=emb, attention_mask=None, position_ids=pos)
            out = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(view.unembed(out[0, :-1]), ids[1:])
            ref = torch.autograd.grad(loss, ws)
        for i, r in zip(mine, ref):
            torch.testing.assert_close(grads[i], r)


@pytest.mark.parametrize("family", CAUSAL + ["bert"])
def test_trainable_names_are_the_model_parameter_names(family):
    view = ModelView(make_tiny_model(family))
    named = dict(view.model.named_parameters())
    for w in TRAINABLE_WEIGHTS:
        params = trainable_parameters(view, (w,))
        assert sorted({t.layer for t in params}) == list(range(view.cfg.n_layers))
        for t in params:
            assert named[t.name] is t.param, t.name
            assert t.name.startswith(f"{view.family.layers}.{t.layer}.")
            assert t.mask is None or t.mask.shape == t.param.shape
    # K and V of one layer: the projections (or the rows of the fused one) of that layer, nothing else
    kv = trainable_parameters(view, ("W_K", "W_V"))
    own = {id(t.param) for t in kv if t.layer == 1}
    block1 = {id(p) for p in view.blocks[1].parameters()}
    assert own <= block1 and own


def test_llama_trainables_in_order():
    view = ModelView(make_tiny_model("llama"))
    names = [t.name for t in trainable_parameters(view, ("W_V", "mlp")) if t.layer == 2]
    assert names == ["model.layers.2.self_attn.v_proj.weight", "model.layers.2.mlp.gate_proj.weight",
                     "model.layers.2.mlp.up_proj.weight", "model.layers.2.mlp.down_proj.weight"]
    assert all(t.mask is None for t in trainable_parameters(view, ("W_Q", "W_O")))


def test_fused_neox_masks_pick_the_rows_of_each_head():
    view = ModelView(make_tiny_model("gpt_neox"))
    (w, b) = [t for t in trainable_parameters(view, ("W_V",)) if t.layer == 0]
    h, dh, d = view.cfg.n_heads, view.cfg.d_head, view.cfg.d_model
    rows = w.mask.reshape(h, 3, dh, d)  # rows interleaved per head: [q, k, v]
    assert rows[:, 2].eq(1).all() and rows[:, :2].eq(0).all()
    assert b.mask.reshape(h, 3, dh)[:, 2].eq(1).all() and b.mask.sum() == h * dh


def test_fused_weights_train_only_k_and_v():
    view = ModelView(make_tiny_model("gpt2"))
    params = trainable_parameters(view, ("W_K", "W_V"))
    before = view.blocks[0].attn.c_attn.weight.detach().clone()
    with finetuned(view, [(_ids().tolist(), None)], "lcgd", 1.0):
        after = view.blocks[0].attn.c_attn.weight.detach().clone()
    d = view.cfg.d_model
    assert torch.equal(before[:, :d], after[:, :d])  # queries untouched
    assert not torch.equal(before[:, d:], after[:, d:])
    assert torch.equal(view.blocks[0].attn.c_attn.weight, before)  # restored
    assert len(params) == 2 * view.cfg.n_layers  # weight and bias per layer, K and V merged


@pytest.mark.parametrize("method", ["gd", "lcgd"])
def test_weights_restored_exactly_also_after_failure(method):
    view = ModelView(make_tiny_model("llama"))
    state = {k: v.clone() for k, v in view.model.state_dict().items()}
    flags = [p.requires_grad for p in view.model.parameters()]
    seqs = [(_ids(seed=s).tolist(), None) for s in range(3)]
    with finetuned(view, seqs, method, 0.5) as losses:
        assert len(losses) == 3
        assert not torch.equal(view.blocks[0].self_attn.k_proj.weight, state["model.layers.0.self_attn.k_proj.weight"])
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        with finetuned(view, seqs, method, 1e200):
            pass
    for k, v in view.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert flags == [p.requires_grad for p in view.model.parameters()]


def test_bad_input():
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="Unknown trainable"):
        trainable_parameters(view, ("W_X",))
    with pytest.raises(ValueError, match="Unknown finetuning method"):
        layer_losses(view, _ids(), None, "adam")
    with pytest.raises(ValueError, match="loss_positions"):
        layer_losses(view, _ids(), [0], "gd")
    with pytest.raises(ValueError, match="positive"):
        finetune_(view, [(_ids().tolist(), None)], "gd", 0.0, trainable_parameters(view))


@pytest.mark.slow
def test_embedded_model_steps_are_finite_and_restored(smollm):
    model, tok = smollm
    view = ModelView(model)
    k0 = view.blocks[5].self_attn.k_proj.weight.detach().clone()
    ids = tok("Word: hot\nAntonym: cold", add_special_tokens=False).input_ids
    for method in ("gd", "lcgd"):
        with finetuned(view, [(ids, None), (ids, [len(ids) - 1])], method, 1e-3) as losses:
            assert all(torch.isfinite(torch.tensor(losses)))
        assert torch.equal(view.blocks[5].self_attn.k_proj.weight, k0)
