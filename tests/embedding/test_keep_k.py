"""Keep-k: the k largest-magnitude entries, and how sparse readings keep the geometry."""

import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.keep_k import keep_k, keep_k_similarity
from lmscope.embedding.projection import group_vectors

from conftest import make_tiny_model


def test_keep_k():
    x = torch.tensor([[3.0, -5.0, 1.0, 0.5]])
    assert keep_k(x, 2).tolist() == [[3.0, -5.0, 0.0, 0.0]]
    view = ModelView(make_tiny_model("gpt2"))
    X = group_vectors(view, 0, "ff_values")[:20]
    full = keep_k_similarity(X, view.W_U, [view.cfg.d_vocab], reading="pinv")
    assert full[0] < 1.0  # X (E E^T)^-1 X^T is not X X^T
    sims = keep_k_similarity(X, view.W_U, [5, 40, view.cfg.d_vocab], reading="transpose")
    assert all(-1 <= s <= 1 for s in sims) and sims[-1] > sims[0]




def test_keep_k_rows_and_errors():
    x = torch.tensor([[1.0, -4.0, 2.0], [0.5, 0.25, -3.0]])
    assert keep_k(x, 1).tolist() == [[0.0, -4.0, 0.0], [0.0, 0.0, -3.0]]
    assert torch.equal(keep_k(x, 3), x)
    with pytest.raises(ValueError, match="positive integer"):
        keep_k(x, 0)
    with pytest.raises(ValueError, match="larger than the number of coordinates"):
        keep_k(x, 4)
    with pytest.raises(ValueError, match="Unknown reading"):
        keep_k_similarity(x, torch.randn(3, 5), [1], reading="inverse")
