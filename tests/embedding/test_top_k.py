"""Top-k selections: the factored pair search against brute force, masked top entries."""

import pytest
import torch

from lmscope.embedding.top_k import check_k, top_entries, top_pairs


def brute_force_pairs(M, k, drop_diag=False, mask=None):
    """Top-k entries of a full matrix M: (values, rows, cols)."""
    M = M.clone()
    if drop_diag:
        M.fill_diagonal_(float("-inf"))
    if mask is not None:
        M[~mask] = float("-inf")
        M[:, ~mask] = float("-inf")
    vals, flat = torch.topk(M.flatten(), k)
    return vals, flat // M.shape[1], flat % M.shape[1]


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_top_pairs_against_brute_force(chunk_size):
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(61, 5, generator=g, dtype=torch.float64), torch.randn(61, 5, generator=g, dtype=torch.float64)
    M = A @ B.T
    for kwargs in ({}, {"drop_diagonal": True}):
        s, r, c = top_pairs(A, B, 25, chunk_size=chunk_size, **kwargs)
        vals, rr, cc = brute_force_pairs(M, 25, drop_diag=bool(kwargs))
        torch.testing.assert_close(s, vals)
        assert r.tolist() == rr.tolist() and c.tolist() == cc.tolist()
    s, r, c = top_pairs(A, B, 10, negative=True, chunk_size=chunk_size)
    vals, rr, cc = brute_force_pairs(-M, 10)
    torch.testing.assert_close(s, -vals)
    assert r.tolist() == rr.tolist()
    mask = torch.rand(61, generator=g) > 0.4
    s, r, c = top_pairs(A, B, 12, row_mask=mask, col_mask=mask, chunk_size=chunk_size)
    vals, rr, cc = brute_force_pairs(M, 12, mask=mask)
    torch.testing.assert_close(s, vals)
    assert r.tolist() == rr.tolist() and c.tolist() == cc.tolist()


def test_top_entries_over_a_mask():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    mask = torch.tensor([False, True, False, True, True, True])
    vals, ids = top_entries(scores, 2, mask)
    assert ids.tolist() == [1, 3] and vals.tolist() == [4.0, 2.0]
    vals, ids = top_entries(scores, 2, mask, negative=True)
    assert ids.tolist() == [5, 4] and vals.tolist() == [0.0, -1.0]  # ranked by -scores, negated scores
    assert top_entries(scores, 3)[1].tolist() == [0, 1, 2]


def test_bad_input():
    with pytest.raises(ValueError, match="allowed tokens"):
        top_entries(torch.randn(10), 3, mask=torch.tensor([True, True] + [False] * 8))
    with pytest.raises(ValueError, match="positive integer"):
        check_k(0, 5)
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        check_k(6, 5)
    with pytest.raises(ValueError, match="allowed token pairs"):
        top_pairs(torch.randn(3, 2), torch.randn(3, 2), 7, drop_diagonal=True)  # only 6 off-diagonal pairs
    with pytest.raises(ValueError, match="factors"):
        top_pairs(torch.randn(3, 2), torch.randn(3, 4), 1)


@pytest.mark.parametrize("negative", [False, True])
def test_top_entries_overwrite_gives_the_same_entries(negative):
    """``overwrite`` masks (and negates) the reading in place: the same values and ids as the copying path."""
    scores = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(30, generator=torch.Generator().manual_seed(1)) < 0.5
    for m in (mask, None):
        values, ids = top_entries(scores, 5, m, negative=negative)
        reading = scores.clone()
        got_values, got_ids = top_entries(reading, 5, m, negative=negative, overwrite=True)
        assert torch.equal(got_values, values) and torch.equal(got_ids, ids)
        if m is not None:
            assert torch.isinf(reading[:, ~mask]).all()  # masked in place, not in a copy
