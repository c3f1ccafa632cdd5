"""Logit lens over shared strings: a relabelled copy reads the same at every layer, unrelated models do not."""

import numpy as np
import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.cross_lens import lens_similarity, shared_lens, text_snippets, top1_agreement
from lmscope.embedding.cross_vocab import depth_rank, shared_strings

from conftest import VOCAB, make_tiny_model
from embedding_helpers import strings_a, vocab_permuted_copy


class _CharTokenizer:
    """Each character c of the text is token ``3 + ord(c) % 90`` of model a, mapped through ``to_b`` for model b."""

    def __init__(self, to_b=None):
        self.to_b = to_b

    def __call__(self, text, return_tensors="pt"):
        ids = torch.tensor([[3 + ord(c) % 90 for c in text]])
        return type("Enc", (), {"input_ids": ids if self.to_b is None else self.to_b[ids]})()


def _copy_with_permuted_vocab(seed: int = 5):
    """Model b computes model a's function with ids relabelled: a's id perm[j] is b's id j."""
    a, b, _, perm = vocab_permuted_copy(seed)
    sa = strings_a()
    sb = [sa[int(p)] for p in perm]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(VOCAB)
    return a, b, shared_strings(sa, sb), _CharTokenizer(), _CharTokenizer(inverse)


TEXTS = ["the cat sat", "on a mat today", "x y z w", "hello there friend", "lorem ipsum"]


def test_relabelled_copy_reads_the_same_over_shared_strings():
    a, b, shared, tok_a, tok_b = _copy_with_permuted_vocab()
    lens_a = shared_lens(a, tok_a, TEXTS, shared.ids_a)
    lens_b = shared_lens(b, tok_b, TEXTS, shared.ids_b)
    assert lens_a.shape == (len(TEXTS), 3, shared.count)
    torch.testing.assert_close(lens_a, lens_b, atol=1e-4, rtol=0)
    S = lens_similarity(lens_a, lens_b)
    assert np.allclose(np.diag(S), 1, atol=1e-6) and depth_rank(S) == 1.0
    assert top1_agreement(lens_a, lens_b) == 1.0
    order = torch.randperm(shared.count, generator=torch.Generator().manual_seed(0))
    assert lens_similarity(lens_a, lens_b, order).max() < 0.5


def test_unrelated_models_read_unrelated():
    a, b = ModelView(make_tiny_model("llama", seed=0)), ModelView(make_tiny_model("qwen2", seed=3))
    sa = strings_a()
    shared = shared_strings(sa, sa)
    S = lens_similarity(shared_lens(a, _CharTokenizer(), TEXTS, shared.ids_a),
                        shared_lens(b, _CharTokenizer(), TEXTS, shared.ids_b))
    assert np.abs(S).max() < 0.5


def test_snippets_and_bad_input():
    text = " ".join(f"w{i}" for i in range(50))
    assert text_snippets(text, 2, words=10) == [" ".join(f"w{i}" for i in range(10)),
                                               " ".join(f"w{i}" for i in range(10, 20))]
    with pytest.raises(ValueError, match="need 60"):
        text_snippets(text, 6, words=10)
    with pytest.raises(ValueError, match="same texts and shared strings"):
        lens_similarity(torch.zeros(2, 3, 5), torch.zeros(3, 3, 5))
