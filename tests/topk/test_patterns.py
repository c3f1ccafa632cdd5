"""lmscope.topk.patterns: keep_topk_scores and one head's pattern, dense vs top-k."""

import doctest

import pytest
import torch
from conftest import make_tiny_model
from topk_helpers import WordTokenizer

from lmscope import ModelView
from lmscope.core.tokens import token_texts
from lmscope.topk import patterns
from lmscope.topk.patterns import head_patterns, keep_topk_scores

PROMPT = "The capital of France is Paris. The capital of Japan is Tokyo. The capital of Italy is"


def test_doctests():
    assert doctest.testmod(patterns).failed == 0


def test_keep_topk_scores_matches_brute_force():
    scores = torch.randn(2, 3, 5, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores[0, 0, 0, :4] = 7.0  # four-way tie at the top: k = 2 keeps all four
    scores[1, 2, 3, 5:] = float("-inf")  # masked keys stay masked
    low = torch.finfo(scores.dtype).min
    for k in (1, 2, 4):
        kept = keep_topk_scores(scores, k)
        for idx in torch.cartesian_prod(*(torch.arange(n) for n in scores.shape[:-1])).tolist():
            row, got = scores[tuple(idx)], kept[tuple(idx)]
            kth = sorted(row.tolist(), reverse=True)[k - 1]
            want = torch.where(row >= kth, row, torch.full_like(row, low))
            assert torch.equal(got, want)
    assert (keep_topk_scores(scores, 2)[0, 0, 0, :4] == 7.0).all()
    assert keep_topk_scores(scores, 9) is scores and keep_topk_scores(scores, 50) is scores


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_k_covering_the_prompt_gives_the_dense_pattern(family):
    view, tok = ModelView(make_tiny_model(family)), WordTokenizer()
    n_tokens = tok(PROMPT, return_tensors="pt").input_ids.shape[1]
    r = head_patterns(view, tok, PROMPT, layer=1, head=2, k=n_tokens)
    assert r["tokens"] == token_texts(tok, tok(PROMPT).input_ids)
    assert r["dense"].shape == r["topk"].shape == (n_tokens, n_tokens)
    torch.testing.assert_close(r["topk"], r["dense"])
    torch.testing.assert_close(r["p_topk"], r["p_dense"])
    torch.testing.assert_close(r["p_topk_kernel"], r["p_dense"])
    assert torch.allclose(r["dense"].sum(-1), torch.ones(n_tokens, dtype=r["dense"].dtype))
    assert (r["dense"].triu(1) == 0).all()  # causal


def test_small_k_pattern_keeps_k_keys_and_hooks_agree_with_the_kernel():
    view, tok = ModelView(make_tiny_model("llama")), WordTokenizer()
    r = head_patterns(view, tok, PROMPT, layer=2, head=1, k=3)
    assert ((r["topk"] > 0).sum(-1) <= 3).all() and ((r["dense"] > 0).sum(-1)[3:] > 3).all()
    torch.testing.assert_close(r["topk"].sum(-1), torch.ones(len(r["tokens"]), dtype=r["topk"].dtype))
    assert not torch.allclose(r["p_topk"], r["p_dense"])
    torch.testing.assert_close(r["p_topk_kernel"], r["p_topk"])  # the score edit is the kernel's model


@pytest.mark.slow
def test_embedded_model_hooks_agree_with_the_kernel(smollm):
    model, tok = smollm
    r = head_patterns(ModelView(model), tok, "The capital of France is Paris. The capital of Japan is", layer=10, head=0, k=4)
    assert r["tokens"][-1] == "␣is" and ((r["topk"] > 0).sum(-1) <= 4).all()
    torch.testing.assert_close(r["p_topk_kernel"], r["p_topk"], atol=1e-4, rtol=1e-3)
