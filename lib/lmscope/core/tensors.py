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


def blas_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for CPU tensors of one float dtype, through numpy's BLAS: (..., k) @ (k, m) -> (..., m).

    The vocabulary-sized products (readings and logit lenses over Gemma 3's 262,144 words, Gram
    matrices of keep-k readings) run 1.1-2.1x faster in the OpenBLAS that numpy ships than in the MKL
    of torch's CPU wheels on this project's AMD processors (``benchmarks/blas_matmul.py``), with the
    same result up to float round-off. Anything else (a gradient to track, another device or dtype)
    is plain ``a @ b``.
    """
    tracked = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if (tracked or a.dim() < 1 or b.dim() != 2 or a.dtype != b.dtype or a.dtype not in (torch.float32, torch.float64)
            or a.device.type != "cpu" or b.device.type != "cpu"):
        return a @ b
    flat = a.detach().reshape(-1, a.shape[-1]).numpy()
    return torch.from_numpy(flat @ b.detach().numpy()).reshape(*a.shape[:-1], b.shape[1])
