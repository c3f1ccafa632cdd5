"""The functional copy: same logits, a real rotation and permutation, biases handled, clear refusals."""

import numpy as np
import pytest
import torch
import transformers as tf

from lmscope import ModelView
from lmscope.embedding.functional_copy import CopyTruth, check_rotatable, functional_copy
from lmscope.embedding.projection import Projector, group_vectors

from conftest import make_tiny_model


def _with_gains(model):
    with torch.no_grad():  # non-trivial norm gains, so folding them matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "smollm3"])
def test_functional_copy_computes_the_same_logits(family):
    model = _with_gains(make_tiny_model(family))
    copy, truth = functional_copy(ModelView(model), seed=3)
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
    assert copy.lm_head.weight.data_ptr() != copy.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(truth.rotation @ truth.rotation.T, torch.eye(32, dtype=torch.float64))
    assert sorted(truth.ff_perm[0]) == list(range(48)) and not np.array_equal(truth.ff_perm[0], np.arange(48))
    # the original is untouched
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr() or family == "qwen2"
    # the copy's values read through its own E equal the original's, permuted; the final norm's gain is
    # folded into the copy's E, so the original is read with that gain applied
    view, cview = ModelView(model), ModelView(copy)
    gf = model.model.norm.weight.detach()
    orig = Projector(view).project(group_vectors(view, 1, "ff_values").detach() * gf)
    new = Projector(cview).project(group_vectors(cview, 1, "ff_values"))
    torch.testing.assert_close(new, orig[truth.ff_perm[1]], rtol=1e-4, atol=1e-5)


def test_the_copy_is_rotated_and_permuted_as_its_truth_says():
    model = _with_gains(make_tiny_model("llama"))
    view = ModelView(model)
    copy, truth = functional_copy(view, seed=4)
    cview = ModelView(copy)
    R = truth.rotation
    torch.testing.assert_close(cview.W_E, view.W_E @ R)  # the residual basis is rotated
    gain = model.model.layers[2].post_attention_layernorm.weight.detach()
    torch.testing.assert_close(cview.layers[2].ff_keys, (view.layers[2].ff_keys * gain)[truth.ff_perm[2]] @ R)
    torch.testing.assert_close(cview.layers[2].ff_values, view.layers[2].ff_values[truth.ff_perm[2]] @ R)
    torch.testing.assert_close(cview.layers[0].W_O, view.layers[0].W_O[truth.head_perm[0]] @ R)
    rep = view.cfg.n_heads // view.cfg.n_kv_heads
    assert all(truth.head_perm[0][h] // rep == truth.kv_perm[0][h // rep] for h in range(view.cfg.n_heads)), \
        "query heads move with their key/value group"
    assert np.array_equal(truth.head_perm[0][CopyTruth.inverse(truth.head_perm[0])], np.arange(4))
    assert copy.config.name_or_path == f"{view.name}-rotated-4" and copy.config.tie_word_embeddings is False
    plain, plain_truth = functional_copy(view, rotate=False, permute=False)
    assert torch.equal(plain_truth.rotation, torch.eye(32, dtype=torch.float64))
    assert np.array_equal(plain_truth.ff_perm[1], np.arange(48))
    torch.testing.assert_close(ModelView(plain).layers[1].ff_values, view.layers[1].ff_values)


def test_biases_are_permuted_and_rotated():
    """A Llama with biases on every projection: q/k/v and gate/up biases permuted, output biases rotated."""
    config = tf.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=64, vocab_size=97,
                            attention_bias=True, mlp_bias=True)
    torch.manual_seed(0)
    model = _with_gains(tf.AutoModelForCausalLM.from_config(config).double().eval())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    copy, truth = functional_copy(ModelView(model), seed=1)
    ids = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
    old, new = model.model.layers[1], copy.model.layers[1]
    perm = torch.as_tensor(truth.ff_perm[1])
    torch.testing.assert_close(new.mlp.up_proj.bias, old.mlp.up_proj.bias[perm])
    torch.testing.assert_close(new.mlp.down_proj.bias, old.mlp.down_proj.bias @ truth.rotation)
    torch.testing.assert_close(new.self_attn.o_proj.bias, old.self_attn.o_proj.bias @ truth.rotation)


def test_refusals_name_the_family_and_why():
    with pytest.raises(ValueError, match="'gpt2' family.*LayerNorm"):
        functional_copy(ModelView(make_tiny_model("gpt2")))
    with pytest.raises(ValueError, match="'gpt_neox' family.*LayerNorm"):
        functional_copy(ModelView(make_tiny_model("gpt_neox")))
    with pytest.raises(ValueError, match="'bert' family"):
        functional_copy(ModelView(make_tiny_model("bert")))
    with pytest.raises(TypeError, match="ModelView"):
        functional_copy(make_tiny_model("llama"))
    check_rotatable(ModelView(make_tiny_model("qwen2")).family)  # no error


@pytest.mark.slow
def test_copy_of_the_embedded_model_computes_the_same_logits(smollm):
    model, tok = smollm
    copy, _ = functional_copy(ModelView(model), seed=0)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(ids).logits - copy(ids).logits).abs().max().item()
    assert diff < 1e-3  # float32 rounding only (7.2e-5 on one thread)
    assert ModelView(copy).name == "smollm2-135m-rotated-0"


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3_text", "olmo2", "qwen3", "smollm3"])
def test_permute_only_copy_computes_the_same_logits_without_folding_norms(family):
    """Without a rotation nothing is folded, so families with post-norms and 1 + weight gains work too."""
    model = _with_gains(make_tiny_model(family))
    view = ModelView(model)
    copy, truth = functional_copy(view, seed=2, rotate=False)
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(truth.ff_perm[0], np.arange(view.cfg.d_ff))
    torch.testing.assert_close(ModelView(copy).layers[1].ff_values, view.layers[1].ff_values[truth.ff_perm[1]])
    assert ModelView(copy).name == f"{view.name}-permuted-2"


def test_permute_only_copy_refuses_fused_projections_and_rotation_refusal_points_to_it():
    with pytest.raises(ValueError, match="'phi3' family fuses"):
        functional_copy(ModelView(make_tiny_model("phi3")), rotate=False)
    with pytest.raises(ValueError, match="rotate=False"):
        functional_copy(ModelView(make_tiny_model("gemma3_text")))
