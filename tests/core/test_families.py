"""The family table: what it says about each family's weights is consistent with the view and the model."""

import copy

import pytest
import torch
from conftest import make_tiny_model
from torch import nn

from lmscope import ModelView
from lmscope.core.families import FAMILIES, TRAINABLE_WEIGHTS, is_conv1d


@pytest.mark.parametrize("which", ["W_Q", "W_K", "W_V"])
def test_trainable_qkv_moves_exactly_that_projection(tiny, which):
    """Changing the trainable parameters of W_Q (masked rows of a fused weight) changes W_Q and nothing else."""
    family, model, view = tiny
    before = {w: getattr(view.layers[1], w).clone() for w in ("W_Q", "W_K", "W_V")}
    changed = copy.deepcopy(model)
    cview = ModelView(changed)
    with torch.no_grad():
        for path, param, mask in cview.family.trainable(cview.blocks[1], cview.cfg, which):
            assert path.startswith(tuple(cview.family.qkv.paths))
            param.add_(torch.ones_like(param) if mask is None else mask)
    for w, old in before.items():
        new = getattr(cview.layers[1], w)
        assert torch.equal(new, old) != (w == which), f"{family}: training {which} moved {w}"


def test_trainable_out_and_mlp_are_their_modules(tiny):
    family, model, view = tiny
    block = view.blocks[0]
    out = view.family.trainable(block, view.cfg, "W_O")
    assert {id(p) for _, p, _ in out} == {id(p) for p in block.get_submodule(view.family.attn_out_proj).parameters()}
    ff = [view.family.ff_gate, view.family.ff_in, view.family.ff_out]
    mlp = {id(p) for _, p, _ in view.family.trainable(block, view.cfg, "mlp")}
    assert mlp == {id(p) for path in ff if path for p in block.get_submodule(path).parameters()}
    with pytest.raises(ValueError, match="choose from W_Q"):
        view.family.trainable(block, view.cfg, "W_X")
    assert TRAINABLE_WEIGHTS == ("W_Q", "W_K", "W_V", "W_O", "mlp")


def test_block_linears_are_every_projection(tiny):
    family, model, view = tiny
    for l in range(view.cfg.n_layers):
        found = [m for m in view.blocks[l].modules() if isinstance(m, nn.Linear) or is_conv1d(m)]
        assert view.block_linears(l) == found


def test_rotatable_and_causal_flags():
    assert {name for name, f in FAMILIES.items() if f.rotatable} == {"llama", "mistral", "qwen2", "qwen3", "smollm3"}
    assert {name for name, f in FAMILIES.items() if not f.causal} == {"bert"}


def test_fused_gate_up_keys_are_row_blocks_and_train_together(tiny):
    """ff_gate_keys / ff_keys are the [gate | up] rows of a fused projection (Phi-3), or their own modules."""
    family, model, view = tiny
    lv, cfg = view.layers[0], view.cfg
    if view.family.gate_up_fused:
        fused = view.blocks[0].get_submodule(view.family.ff_in).weight
        assert fused.shape == (2 * cfg.d_ff, cfg.d_model)
        assert torch.equal(lv.ff_gate_keys, fused[: cfg.d_ff]) and torch.equal(lv.ff_keys, fused[cfg.d_ff :])
        assert lv.ff_keys.data_ptr() != lv.ff_gate_keys.data_ptr()
    trained = view.family.trainable(view.blocks[0], cfg, "mlp")
    assert len({id(p) for _, p, _ in trained}) == len(trained)  # a fused module's weight once


def test_family_features_are_read_from_the_model(tiny):
    """What each family needs (the module docstring of lmscope.core.families) shows in view.cfg."""
    family, model, view = tiny
    c = view.cfg
    gemma = family.startswith("gemma")
    assert (c.embed_scale == pytest.approx(c.d_model**0.5, rel=1e-6)) if gemma else c.embed_scale == 1.0
    assert c.post_block_norms == (gemma or family == "olmo2")
    assert c.qk_norm == (family in ("gemma3_text", "gemma3", "qwen3", "olmo2"))
    assert c.final_softcap == (3.0 if family in ("gemma2", "gemma3_text") else None)  # gemma3's head applies none
    assert c.attn_softcap == (2.0 if family == "gemma2" else None)
    assert c.nope_layers == ((1,) if family == "smollm3" else ())
    windows = {"gemma2": (0, 2), "gemma3_text": (0, 1), "gemma3": (1, 2), "qwen3": (1, 2), "phi3": (0, 1, 2)}
    assert c.sliding_layers == windows.get(family, ())
    assert c.sliding_window == {"phi3": 4}.get(family, 3 if family in windows else None)
    assert (view.layers[0].attn_norm is None) == (family == "olmo2")
    qk = view.layers[0].qk_norms
    assert (qk is not None) == c.qk_norm
    if qk is not None:  # per head (Gemma 3, Qwen3) or over all heads (OLMo 2)
        assert qk[0].weight.shape == ((c.n_heads * c.d_head,) if family == "olmo2" else (c.d_head,))
    assert view.architecture_table()[0] == {"name": "family", "value": view.family.name}


def test_config_reads_context_and_causality(tiny):
    family, model, view = tiny
    assert view.cfg.n_ctx == 64
    assert view.cfg.causal == (family != "bert")
    assert len(view.attention_modules()) == view.cfg.n_layers
