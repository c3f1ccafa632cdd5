"""Exact top-k selection along the rows of a score matrix, in torch: the selection of the torch path
of :func:`lmscope.topk.attention.topk_attention` (CUDA, bfloat16; the CPU kernels select on their own).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def select_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k along the last dim of ``scores`` (R, L), unsorted: (values, indices), each (R, k).

    The selection of the torch path (CUDA, bfloat16; the CPU kernels select
    on their own). ``torch.topk`` costs far more per entry than a max or
    compare pass, so long rows are first reduced with cheap passes. Both
    reductions rest on one fact: split a row into blocks; if ``tau`` is the
    k-th largest block maximum, at least k entries are >= ``tau``, so every
    top-k entry is >= ``tau`` and lies in one of the k blocks whose maximum is
    >= ``tau``. Rows of up to 4k entries use ``torch.topk`` directly; up to
    8192, :func:`_select_threshold`; longer ones, :func:`_select_blocks`.
    """
    length = scores.shape[1]
    if length <= 4 * k:
        return torch.topk(scores, k, dim=-1, sorted=False)
    if length < 8192:
        return _select_threshold(scores, k)
    return _select_blocks(scores, k)


def _select_blocks(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k over the m maxima of strided blocks of b entries, then over the k*b entries of the k best blocks."""
    n_rows, length = scores.shape
    b = max(2, min(2 ** round(math.log2(math.sqrt(length / (2 * k)))), length // (2 * k)))
    m = length // b
    block_max = scores[:, : m * b].view(n_rows, b, m).amax(dim=1)  # (R, m); entry j is in block j % m
    _, blocks = torch.topk(block_max, k, dim=-1, sorted=False)  # (R, k)
    cand_idx = (blocks.unsqueeze(-1) + m * torch.arange(b, device=scores.device)).view(n_rows, k * b)
    tail = length - m * b
    if tail:  # the last few columns are candidates too
        tail_idx = torch.arange(m * b, length, device=scores.device).expand(n_rows, tail)
        cand_idx = torch.cat([cand_idx, tail_idx], dim=1)
    cand = torch.gather(scores, 1, cand_idx)
    values, pos = torch.topk(cand, k, dim=-1, sorted=False)
    return values, torch.gather(cand_idx, 1, pos)


def _select_threshold(scores: Tensor, k: int, cap: int | None = None) -> tuple[Tensor, Tensor]:
    """Keep entries >= tau (k-th largest of 2k strided-block maxima), pad them per row, top-k those.

    A row with more than ``cap`` (default 4k) candidates, e.g. one whose valid
    entries are fewer than k, falls back to ``torch.topk`` over the full row.
    """
    n_rows, length = scores.shape
    cap = 4 * k if cap is None else cap
    m = 2 * k
    b = length // m
    block_max = scores[:, : m * b].view(n_rows, b, m).amax(dim=1)  # (R, 2k)
    tail = length - m * b
    if tail:  # column m*b + j joins block j
        block_max[:, :tail] = torch.maximum(block_max[:, :tail], scores[:, m * b :])
    tau = torch.topk(block_max, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # (R, 1)
    flat = (scores >= tau).view(-1).nonzero().squeeze(1)  # candidates, row-major
    row = torch.div(flat, length, rounding_mode="floor")
    counts = torch.bincount(row, minlength=n_rows)
    width = int(min(max(int(counts.max()), k), cap))
    rank = torch.arange(flat.numel(), device=scores.device) - (torch.cumsum(counts, 0) - counts)[row]
    keep = rank < width
    if not bool(keep.all()):
        flat, row, rank = flat[keep], row[keep], rank[keep]
    vals = torch.full((n_rows, width), float("-inf"), dtype=scores.dtype, device=scores.device)
    cols = torch.zeros((n_rows, width), dtype=torch.long, device=scores.device)
    vals[row, rank] = scores.view(-1)[flat]
    cols[row, rank] = flat - row * length
    values, pos = torch.topk(vals, k, dim=-1, sorted=False)
    idx = torch.gather(cols, 1, pos)
    over = (counts > width).nonzero().squeeze(1)
    if over.numel():
        values[over], idx[over] = torch.topk(scores[over], k, dim=-1, sorted=False)
    return values, idx
