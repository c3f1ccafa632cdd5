"""Alignment: the kernel trick equals explicit correlation; a rotated, permuted copy is recovered, and scored."""

import numpy as np
import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.alignment import (
    CopyRecovery, VocabGram, check_shared_vocabulary, copy_recovery, head_similarity, layer_match_accuracy,
    layer_similarity, match, match_units, raw_correlation, vocab_correlation,
)
from lmscope.embedding.functional_copy import CopyTruth, functional_copy
from lmscope.embedding.projection import group_vectors

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


def test_one_unembedding_on_both_sides_gives_the_explicit_correlation():
    """Equal unembeddings (a permuted copy) take the one-Gram path; it must still be the explicit correlation."""
    a = ModelView(make_tiny_model("gemma3_text", seed=0))
    X, Y = group_vectors(a, 0, "ff_values")[:9].detach(), group_vectors(a, 2, "ff_values")[:7].detach()
    E = a.W_U.detach()
    gram = VocabGram.of(a.W_U, E.clone())  # equal values, another tensor
    assert gram.C11 is gram.C12 is gram.C22
    torch.testing.assert_close(vocab_correlation(X, Y, gram), _pearson(X @ E, Y @ E))
    unequal = E.clone()
    unequal[0, 0] += 1.0
    three = VocabGram.of(E, unequal)  # unequal: three Gram matrices, C12 the cross one
    assert three.C12 is not three.C11 and not torch.equal(three.C12, three.C11)
    torch.testing.assert_close(vocab_correlation(X, Y, three), _pearson(X @ E, Y @ unequal))


def test_alignment_recovers_the_known_permutation():
    model = make_tiny_model("llama")
    copy, truth = functional_copy(ModelView(model), seed=5)
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
    with pytest.raises(ValueError, match="Unknown space"):
        layer_similarity(llama, llama, space="vocab")
    with pytest.raises(ValueError, match="Unknown stat"):
        layer_similarity(llama, llama, stat="median")
    with pytest.raises(ValueError, match="Unknown space"):
        copy_recovery(llama, llama, None, [0], spaces=("vocab",))


def test_layer_match_accuracy():
    assert layer_match_accuracy(np.eye(4)) == 1.0
    assert layer_match_accuracy(np.eye(4)[[1, 0, 2, 3]]) == 0.5  # two layers swapped
    assert np.isnan(layer_match_accuracy(np.ones((2, 3))))


def test_copy_recovery_scores_the_matching_against_the_truth():
    model = make_tiny_model("llama")
    copy, truth = functional_copy(ModelView(model), seed=5)
    a, b = ModelView(model), ModelView(copy)
    rec = copy_recovery(a, b, truth, [1, -1])
    assert isinstance(rec, CopyRecovery) and rec.layers == [1, 2]
    assert rec.units["embedding"] == [1.0, 1.0] and rec.heads["embedding"] == [1.0, 1.0]
    raw_units = (match_units(a, b, 1, 1, "ff_values", space="raw") == CopyTruth.inverse(truth.ff_perm[1])).mean()
    assert rec.units["raw"][0] == pytest.approx(raw_units) and rec.units["raw"][0] < 0.2
    assert rec.rows()[1] == (2, 1.0, rec.units["raw"][1], 1.0, rec.heads["raw"][1])
    assert rec.mean() == {"units": (1.0, float(np.mean(rec.units["raw"]))),
                          "heads": (1.0, float(np.mean(rec.heads["raw"])))}
    # a wrong truth is scored as wrong
    shuffled = CopyTruth(truth.rotation, truth.head_perm, truth.kv_perm, [p[::-1] for p in truth.ff_perm])
    assert copy_recovery(a, b, shuffled, [1], spaces=("embedding",)).units["embedding"][0] < 0.2


def test_aligners_of_the_same_two_models_share_one_gram():
    """The VocabGram of a pair is computed once, per token mask, and again after an in-place edit of W_U."""
    from lmscope.embedding.alignment import Aligner, shared_gram

    a, b = ModelView(make_tiny_model("llama", seed=0)), ModelView(make_tiny_model("llama", seed=1))
    first = Aligner(a, b).gram
    assert Aligner(a, b).gram is first and shared_gram(a, b) is first
    torch.testing.assert_close(first.C12, VocabGram.of(a.W_U, b.W_U).C12, rtol=0, atol=0)
    tokens = torch.arange(a.cfg.d_vocab) % 3 > 0
    masked = Aligner(a, b, tokens=tokens).gram
    assert masked is not first and Aligner(a, b, tokens=tokens.clone()).gram is masked
    torch.testing.assert_close(masked.C11, VocabGram.of(a.W_U[:, tokens], b.W_U[:, tokens]).C11, rtol=0, atol=0)
    assert Aligner(b, a).gram is not first  # the order of the pair matters (C12 vs C21)
    with torch.no_grad():
        b.model.lm_head.weight.mul_(2.0)
    edited = Aligner(a, b).gram
    assert edited is not first
    torch.testing.assert_close(edited.C22, VocabGram.of(a.W_U, b.W_U).C22, rtol=0, atol=0)
