"""lmscope.topk.dropin: Hugging Face models with top-k attention or top-k feed-forward."""

import pytest
import torch
from conftest import NEW_FAMILIES, make_tiny_model

from lmscope import ModelView
from lmscope.topk.dropin import topk_feedforward, use_topk_attention


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gpt_neox", *NEW_FAMILIES])
def test_hf_model_with_topk_covering_length_matches_eager(family):
    model = make_tiny_model(family)
    ids = torch.randint(3, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    model.set_attn_implementation("eager")
    ref = model(input_ids=ids).logits
    with use_topk_attention(ModelView(model), topk=20, chunk_size=7):
        out = model(input_ids=ids).logits
    assert model.config._attn_implementation == "eager"  # restored
    # float64 weights, but HF's RMSNorms compute in float32: the two paths agree to ~1e-7 absolute (seen
    # 1.1e-7 on Gemma 3 with transformers 5.25), so float32 round-off bounds the comparison, not float64's
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    with use_topk_attention(ModelView(model), topk=2):
        assert not torch.allclose(model(input_ids=ids).logits, ref)


def test_hf_left_padding_matches_sdpa():
    """Eager gives NaN after fully masked (padded) query rows here; SDPA and top-k give 0 there."""
    model = make_tiny_model("llama")
    ids = torch.randint(3, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[1, :5] = 0
    model.set_attn_implementation("sdpa")
    ref = model(input_ids=ids, attention_mask=attn).logits
    with use_topk_attention(ModelView(model), topk=32):
        out = model(input_ids=ids, attention_mask=attn).logits
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, 5:], ref[1, 5:])


def test_hf_switch_restores_on_error():
    model = make_tiny_model("llama")
    model.set_attn_implementation("sdpa")
    with pytest.raises(RuntimeError, match="boom"):
        with use_topk_attention(ModelView(model), topk=4):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="topk"):
        with use_topk_attention(ModelView(model), topk=0):
            pass


def test_hf_generation_with_cache_matches_eager():
    model = make_tiny_model("llama")
    ids = torch.randint(3, 97, (1, 8), generator=torch.Generator().manual_seed(1))
    model.set_attn_implementation("eager")
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with use_topk_attention(ModelView(model), topk=64):
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", *NEW_FAMILIES])
def test_ff_topk_with_all_units_is_dense_and_smaller_k_changes(family):
    model = make_tiny_model(family)
    view = ModelView(model)
    ids = torch.randint(3, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    ref = model(ids).logits
    with topk_feedforward(view, view.cfg.d_ff):
        torch.testing.assert_close(model(ids).logits, ref)
    with topk_feedforward(view, 2):
        assert not torch.allclose(model(ids).logits, ref)
        with view.capture(["blocks.1.ff_coeffs"]) as cache:
            model(ids)
    assert ((cache["blocks.1.ff_coeffs"] != 0).sum(-1) <= 2).all()
    torch.testing.assert_close(model(ids).logits, ref)  # hooks removed
