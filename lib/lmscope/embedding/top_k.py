"""Top-k selections over the vocabulary: of one reading, and of a |V| x |V| matrix kept in factors.

:func:`top_entries` ranks a reading (..., d_vocab) over the allowed tokens of a mask;
:func:`top_pairs` finds the top entries of ``A @ B.T`` (a head's ``E^T W_QK E`` or
``E^T W_VO E``, with factors A, B of shape (d_vocab, d_head)) a block of rows at a time,
never building the full matrix (49152^2 floats would be 9.7 GB). :func:`check_k` is the one
check of a ``k`` that the embedding-space modules share.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def check_k(k: int, n: int, what: str = "the vocabulary") -> int:
    """``k`` when it is a positive integer no larger than ``n`` (the size of ``what``); ValueError otherwise."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > n:
        raise ValueError(f"k={k} is larger than {what} ({n} entries).")
    return k


def top_entries(scores: Tensor, k: int, mask: Tensor | None = None, negative: bool = False,
                overwrite: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k of ``scores`` (..., d_vocab) over allowed tokens: (values, ids), each (..., k).

    ``mask`` (bool, d_vocab) marks the allowed tokens (None: all). ``negative`` ranks by
    ``-scores`` (the tokens a vector suppresses) and returns those negated scores. ``overwrite``:
    ``scores`` is a reading made for this call, negated and masked in place instead of copied
    (on a 262,144-word vocabulary a copy of a block of readings costs as much as its top-k).
    """
    s = (scores.neg_() if overwrite else -scores) if negative else scores
    if mask is not None:
        n_allowed = int(mask.sum())
        check_k(k, n_allowed, "the number of allowed tokens")
        fill = s.masked_fill_ if overwrite else s.masked_fill
        s = fill(~mask.to(s.device), float("-inf"))
    else:
        check_k(k, s.shape[-1])
    return torch.topk(s, k, dim=-1)


@torch.no_grad()
def top_pairs(A: Tensor, B: Tensor, k: int, *, row_mask: Tensor | None = None,
              col_mask: Tensor | None = None, drop_diagonal: bool = False,
              negative: bool = False, chunk_size: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k entries of ``M = A @ B.T`` without building M: (scores, rows, cols), each (k,).

    ``A`` is (n_rows, r), ``B`` (n_cols, r). Rows are visited in blocks of
    ``chunk_size``, largest ``||A_i||`` first; each block's top-k merges into a running
    top-k, and the search stops once ``||A_i|| * max_j ||B_j||`` (a bound on any later
    entry) falls below the current k-th score. Peak extra memory: the two factors, one
    (chunk_size, n_cols) block and O(k). ``row_mask``/``col_mask`` (bool) restrict the
    tokens; ``drop_diagonal`` skips entries with row == col (e.g. a token with itself).
    """
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"top_pairs needs factors (n, r) and (m, r), got {tuple(A.shape)} and {tuple(B.shape)}.")
    if negative:
        A = -A
    rows = torch.arange(A.shape[0]) if row_mask is None else row_mask.nonzero().squeeze(1)
    cols = torch.arange(B.shape[0]) if col_mask is None else col_mask.nonzero().squeeze(1)
    A, B = A[rows.to(A.device)], B[cols.to(B.device)]
    n_pairs = len(rows) * len(cols) - (int(torch.isin(rows, cols).sum()) if drop_diagonal else 0)
    check_k(k, n_pairs, "the number of allowed token pairs")
    norms = A.norm(dim=1)
    order = torch.argsort(norms, descending=True)
    b_max = float(B.norm(dim=1).max())
    best_s = torch.full((0,), float("-inf"), dtype=A.dtype, device=A.device)
    best_r = torch.zeros(0, dtype=torch.long, device=A.device)
    best_c = torch.zeros(0, dtype=torch.long, device=A.device)
    cols_dev = cols.to(A.device)
    for start in range(0, len(order), chunk_size):
        block = order[start : start + chunk_size]
        if len(best_s) == k and float(norms[block[0]]) * b_max < float(best_s[-1]):
            break  # no later row can beat the current k-th entry
        s = A[block] @ B.T  # (c, n_cols)
        if drop_diagonal:
            same = rows.to(A.device)[block][:, None] == cols_dev[None, :]
            s = s.masked_fill(same, float("-inf"))
        flat_s = s.reshape(-1)
        if len(best_s) == k:  # only entries above the current k-th can enter: skip the full top-k
            cand = (flat_s > best_s[-1]).nonzero().squeeze(1)
            vals, pick = torch.topk(flat_s[cand], min(k, len(cand)))
            flat = cand[pick]
        else:
            vals, flat = torch.topk(flat_s, min(k, flat_s.numel()))
        r, c = block[flat // s.shape[1]], flat % s.shape[1]
        merged_s = torch.cat([best_s, vals])
        keep = torch.topk(merged_s, min(k, len(merged_s))).indices
        best_s, best_r, best_c = merged_s[keep], torch.cat([best_r, r])[keep], torch.cat([best_c, c])[keep]
    finite = torch.isfinite(best_s)
    best_s, best_r, best_c = best_s[finite], best_r[finite], best_c[finite]
    scores = -best_s if negative else best_s
    return scores, rows[best_r.cpu()], cols[best_c.cpu()]
