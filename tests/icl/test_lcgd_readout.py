"""LCGD through a tuned lens: still layer-causal, the identity lens is the logit lens exactly, and the
model's weights and the lens are the same after every run."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from icl_helpers import tiny_run

from lmscope import ModelView
from lmscope.core.tuned_lens import TunedLens
from lmscope.icl.layer_causal import finetuned, layer_losses, trainable_parameters, update_norms


def _ids(n=12, seed=0):
    return torch.randint(3, 97, (n,), generator=torch.Generator().manual_seed(seed))


def _random_lens(view, seed=0) -> TunedLens:
    lens = TunedLens(view)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return lens


def _grads(view, readout, method="lcgd"):
    params = trainable_parameters(view)
    return params, layer_losses(view, _ids(), None, method, params, readout=readout)[1]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lcgd_through_a_tuned_lens_keeps_layer_causality(family):
    view = ModelView(make_tiny_model(family))
    lens = _random_lens(view)
    params, before = _grads(view, lens)
    _, logit = _grads(view, None)
    with torch.no_grad():  # perturb every weight of the layers above layer 0
        for block in view.blocks[1:]:
            for p in block.parameters():
                p.add_(0.1 * torch.randn_like(p))
    _, after = _grads(view, lens)
    layer0 = [i for i, t in enumerate(params) if t.layer == 0]
    assert layer0
    for i in layer0:
        assert torch.equal(before[i], after[i]), params[i].name
        assert before[i].abs().max() > 0
    assert any(not torch.allclose(before[i], logit[i]) for i in layer0)  # the read-out does matter


def test_identity_tuned_lens_is_the_logit_lens():
    view = ModelView(make_tiny_model("llama"))
    lens = TunedLens(view)  # translators start at zero: h + 0 h + 0 = h
    for method in ("gd", "lcgd"):
        params = trainable_parameters(view)
        a_loss, a = layer_losses(view, _ids(), None, method, params)
        b_loss, b = layer_losses(view, _ids(), None, method, params, readout=lens)
        torch.testing.assert_close(a_loss, b_loss)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_weights_and_lens_restored_after_every_run():
    view = ModelView(make_tiny_model("llama"))
    lens = _random_lens(view, seed=1)
    model_state = {k: v.clone() for k, v in view.model.state_dict().items()}
    lens_state = {k: v.clone() for k, v in lens.state_dict().items()}
    seqs = [(_ids(10, s).tolist(), None) for s in range(3)]
    params = trainable_parameters(view)
    saved = [t.param.detach().clone() for t in params]
    with finetuned(view, seqs, "lcgd", 0.05, readout=lens):
        norms = update_norms(params, saved, view.cfg.n_layers)
        assert norms.shape == (view.cfg.n_layers,) and (norms > 0).all()
    res = tiny_run(view, readout=lens)
    assert set(res.seeds[0].update_norm) == {"gd", "lcgd"}
    for k, v in view.model.state_dict().items():
        assert torch.equal(v, model_state[k]), k
    for k, v in lens.state_dict().items():
        assert torch.equal(v, lens_state[k]), k
    assert not any(p.requires_grad for p in lens.parameters())


def test_bad_readout_names_the_choices():
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="readout must be"):
        tiny_run(view, readout="tuned")
