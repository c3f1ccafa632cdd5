"""A norm frozen at one input: the exact linear map that lets a sum of parts pass through a norm.

At a given token, RMSNorm and LayerNorm divide by one number (the token's RMS or standard
deviation). Frozen at that number, the norm is affine in its input, so a sum of parts
``x = sum_j p_j`` goes through it part by part::

    apply, bias = frozen_norm(norm, x, kind="rms", gain_offset=0.0)
    norm(x) == sum_j apply(p_j) + bias          # to float tolerance

This serves every decomposition that crosses a norm: the final norm before the unembedding
(direct logit attribution) and the norms after a sub-block (Gemma 2/3 and OLMo 2), where a
head's or an FF value's contribution to the residual is its vector times ``gain / rms(x)``.
Changing one part changes the RMS, so a prediction of an intervention's effect must run the
norm again on the new sum, not reuse a frozen map.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Tensor = torch.Tensor


def norm_eps(norm: nn.Module) -> float:
    """The epsilon a norm module adds under the square root."""
    for name in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    raise ValueError(f"Cannot find the epsilon of norm module {type(norm).__name__}.")


def frozen_norm(norm: nn.Module, x: Tensor, *, kind: str, gain_offset: float = 0.0
                ) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """``(apply, bias)`` with ``norm(x) == apply(x) + bias``; ``apply`` is linear, frozen at ``x``'s scale.

    ``x`` is (..., d_model); ``apply`` maps parts of shape (..., [n_parts,] d_model) that broadcast
    against ``x`` with a parts axis inserted just before the last one, or of ``x``'s own shape.
    ``kind`` is ``"rms"`` or ``"layer"``; ``gain_offset`` is 1.0 for norms that scale by
    ``1 + weight`` (Gemma) and 0.0 otherwise. ``bias`` is (d_model,) (zeros without a bias).
    """
    weight = getattr(norm, "weight", None)
    d = x.shape[-1]
    gain = torch.ones(d, dtype=x.dtype, device=x.device) if weight is None else weight.to(x.dtype) + gain_offset
    bias = getattr(norm, "bias", None)
    bias = torch.zeros(d, dtype=x.dtype, device=x.device) if bias is None else bias.to(x.dtype)
    eps = norm_eps(norm)
    if kind == "rms":
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        center = False
    elif kind == "layer":
        scale = torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps)
        center = True
    else:
        raise ValueError(f"Unknown norm kind '{kind}': use 'rms' or 'layer'.")

    def apply(parts: Tensor) -> Tensor:
        if center:
            parts = parts - parts.mean(-1, keepdim=True)
        s = scale if parts.dim() == scale.dim() else scale.unsqueeze(-2)
        return parts * s * gain

    return apply, bias
