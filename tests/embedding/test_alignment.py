"""Alignment: the kernel trick equals explicit correlation; a rotated, permuted copy is recovered."""

import numpy as np
import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.alignment import (
    CopyTruth, VocabGram, check_shared_vocabulary, functional_copy, head_similarity, layer_similarity,
    match, match_units, raw_correlation, vocab_correlation,
)
from lmscope.embedding.projection import Projector, group_vectors

from conftest import make_tiny_model


def _pearson(P, Q):
    P = P - P.mean(1, keepdim=True)
    Q = Q - Q.mean(1, keepdim=True)
    return (P / P.norm(dim=1, keepdim=True)) @ (Q / Q.norm(dim=1, keepdim=True)).T


def test_kernel_trick_equals_explicit_vocabulary_correlation():
    a, b = ModelView(make_tiny_model("gpt2", seed=0)), ModelView(make_tiny_model("llama", seed=1))
    X, Y = group_vectors(a, 1, "ff_values")[:9].detach(), group_vectors(b, 2, "ff_keys")[:7].detach()
    explicit = _pearson(X @ a.W_U.detach(), Y @ b.W_U.detach())
    fast = vocab_correlation(X, Y, VocabGram.of(a.W_U, b.W_U))
    torch.testing.assert_close(fast, explicit)
    torch.testing.assert_close(raw_correlation(X, X).diagonal(), torch.ones(9, dtype=torch.float64))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_functional_copy_computes_the_same_logits(family):
    model = make_tiny_model(family)
    with torch.no_grad():  # non-trivial norm gains, so folding them matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    copy, truth = functional_copy(model, seed=3)
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


def test_alignment_recovers_the_known_permutation():
    model = make_tiny_model("llama")
    copy, truth = functional_copy(model, seed=5)
    a, b = ModelView(model), ModelView(copy)
    for group in ("ff_values", "ff_keys", "W_Q", "W_O"):
        S = layer_similarity(a, b, group, stat="best_match")
        assert list(match(S)) == [0, 1, 2]
        assert np.all(np.diag(S) > 0.99)
    for layer in range(3):
        units = match_units(a, b, layer, layer, "ff_values")
        assert np.array_equal(units, CopyTruth.inverse(truth.ff_perm[layer]))
        heads = match(head_similarity(a, b, layer, layer))
        assert np.array_equal(heads, CopyTruth.inverse(truth.head_perm[layer]))
    # the raw-space control sees no layer structure
    raw = layer_similarity(a, b, "ff_values", space="raw", stat="best_match")
    assert raw.max() < 0.9
    assert (match_units(a, b, 1, 1, "ff_values", space="raw") == CopyTruth.inverse(truth.ff_perm[1])).mean() < 0.2


def test_mean_abs_statistic_and_sampling():
    a = ModelView(make_tiny_model("llama"))
    S = layer_similarity(a, a, "ff_values", stat="mean_abs", n_sample=10)
    assert S.shape == (3, 3) and np.all((S >= 0) & (S <= 1))


def test_bad_input():
    gpt2, llama = ModelView(make_tiny_model("gpt2")), ModelView(make_tiny_model("llama"))
    big = make_tiny_model("gpt2")
    big.resize_token_embeddings(120)
    with pytest.raises(ValueError, match="do not share a vocabulary"):
        check_shared_vocabulary(gpt2, ModelView(big))
    with pytest.raises(ValueError, match="do not share a vocabulary"):
        layer_similarity(gpt2, ModelView(big))
    with pytest.raises(ValueError, match="LayerNorm"):
        functional_copy(gpt2.model)
    with pytest.raises(ValueError, match="Unknown space"):
        layer_similarity(llama, llama, space="vocab")
    with pytest.raises(ValueError, match="Unknown stat"):
        layer_similarity(llama, llama, stat="median")
