"""Small tensor operations that more than one study needs."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def keep_largest_abs(x: Tensor, k: int) -> Tensor:
    """Zero all but the k entries of largest |x| along the last dim: (..., n) -> (..., n).

    ``k >= n`` returns ``x`` itself. Used for keep-k readings (embedding space) and top-k FF.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k >= x.shape[-1]:
        return x
    idx = torch.topk(x.abs(), k, dim=-1, sorted=False).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))
