"""The attention implementations and the one guard that lets only one of them hold a model."""

import pytest
import torch
from conftest import NEW_FAMILIES, TINY_FAMILIES, make_tiny_model

from lmscope import ModelView
from lmscope.core import attention
from lmscope.core.hooks import hook_name
from lmscope.core.attention import SCORED, TOPK, active_implementation, use_attention
from lmscope.topk.dropin import use_topk_attention
from lmscope.topk.patterns import keep_topk_scores


def test_score_hooks_and_topk_attention_refuse_to_mix():
    """attn_scores hooks run dense eager attention: combining them with top-k would silently undo it."""
    model = make_tiny_model("llama")
    view = ModelView(model)
    ids = torch.tensor([[1, 5, 9, 3]])
    with use_topk_attention(view, topk=2):
        with pytest.raises(ValueError, match="top-k attention is active"):
            with view.capture(["blocks.0.attn_scores"]):
                model(ids)
        assert model.config._attn_implementation == "lmscope_topk"
    assert not attention._SCORE_EDITS  # the refused hook left nothing behind
    with view.capture(["blocks.0.attn_scores"]):
        with pytest.raises(ValueError, match="attn_scores hooks are active"):
            with use_topk_attention(ModelView(model), topk=2):
                pass
        model(ids)
    with view.capture(["blocks.0.attn_scores"]) as cache:  # both work again, one after the other
        model(ids)
    with use_topk_attention(ModelView(model), topk=2):
        with use_topk_attention(ModelView(model), topk=3):  # nested: leaving the inner block keeps the outer one active
            pass
        with pytest.raises(ValueError, match="top-k attention is active"):
            with view.capture(["blocks.0.attn_scores"]):
                pass
        model(ids)
    assert cache["blocks.0.attn_scores"].shape[-1] == 4


def test_guard_is_per_model_and_shared_by_views():
    """Two views of one model share the hold; another model is free; the model's own implementation returns."""
    model, other = make_tiny_model("llama"), make_tiny_model("llama", seed=1)
    model.set_attn_implementation("sdpa")
    a, b = ModelView(model), ModelView(model)
    with a.capture(["blocks.0.attn_scores"]):
        assert active_implementation(model) == SCORED and model.config._attn_implementation == SCORED
        with pytest.raises(ValueError, match="attn_scores hooks are active"):
            with use_topk_attention(b, topk=2):
                pass
        with use_topk_attention(ModelView(other), topk=2):
            assert active_implementation(other) == TOPK
        with b.capture(["blocks.1.attn_scores"]):  # the same implementation nests
            pass
        assert active_implementation(model) == SCORED
    assert active_implementation(model) is None and model.config._attn_implementation == "sdpa"
    assert active_implementation(other) is None


def test_topk_settings_nest_and_restore():
    """The innermost block's k applies; leaving it brings back the outer k."""
    model = make_tiny_model("llama")
    view = ModelView(model)
    ids = torch.randint(3, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    with use_topk_attention(view, topk=2):
        outer = model(input_ids=ids).logits
        with use_topk_attention(view, topk=12):
            inner = model(input_ids=ids).logits
        torch.testing.assert_close(model(input_ids=ids).logits, outer)
    with use_topk_attention(view, topk=12):
        torch.testing.assert_close(model(input_ids=ids).logits, inner)
    assert not torch.allclose(inner, outer)


def test_unknown_implementation_is_named():
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="Unknown attention implementation 'flash'"):
        with use_attention(view, "flash"):
            pass
    assert active_implementation(view.model) is None


ALL_FAMILIES = [f for f in TINY_FAMILIES if f != "bert"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_topk_covering_length_is_the_models_own_attention(family):
    """Top-k with k >= length changes nothing (soft caps, windows, GQA, QK-norm, scaling from the module)."""
    model = make_tiny_model(family)
    view = ModelView(model)
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    own = model(input_ids=ids).logits
    with use_topk_attention(view, topk=9):
        out = model(input_ids=ids).logits
    # HF's eager attention (Gemma 2's own) takes its softmax in float32 even in a float64 model
    tol = 2e-6 if model.config._attn_implementation == "eager" else 1e-9
    torch.testing.assert_close(out, own, rtol=tol, atol=tol)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_topk_equals_scored_attention_keeping_the_top_scores(family):
    """Top-k attention (k < length) equals the scored eager attention with all but the k best scores masked."""
    model = make_tiny_model(family)
    view = ModelView(model)
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    edits = {hook_name(l, "attn_scores"): (lambda s: keep_topk_scores(s, 2)) for l in range(view.cfg.n_layers)}
    with view.overwrite(edits):
        ref = model(input_ids=ids).logits
    with use_topk_attention(view, topk=2):
        out = model(input_ids=ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(out, model(input_ids=ids).logits)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_cached_generation_under_topk_and_score_hooks_is_the_models_own(family):
    """With a KV cache longer than the sliding window, both implementations generate the model's own tokens."""
    model = make_tiny_model(family)
    ids = torch.randint(3, 90, (1, 8), generator=torch.Generator().manual_seed(1))
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with use_topk_attention(ModelView(model), topk=64):
        assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0), ref)
    with ModelView(model).capture(["blocks.0.attn_scores"]):
        assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0), ref)
