"""Switch a Hugging Face model to top-k attention or top-k feed-forward, temporarily.

* :func:`use_topk_attention` registers :func:`hf_topk_attention` in transformers'
  ``AttentionInterface`` under :data:`ATTN_NAME` and switches the model to it
  with ``set_attn_implementation``; the previous implementation comes back in
  ``finally``. Works for every family whose attention calls the interface
  (Llama family incl. the embedded model, GPT-2, ...).
* :func:`topk_feedforward` keeps, per token and FF layer, only the k FF
  coefficients m_i with the largest |m_i| (the FF as a key-value memory, Geva
  et al.; Gupta et al. 2021), through the ``blocks.{l}.ff_coeffs`` hook of
  :class:`lmscope.arch.ModelView`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from lmscope.arch import ModelView
from lmscope.topk_attention import topk_attention

Tensor = torch.Tensor

#: Name of the attention implementation registered in transformers.
ATTN_NAME = "lmscope_topk"
_SETTINGS = "_lmscope_topk"  # attribute set on each attention module while switched


def hf_topk_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Attention-interface function: query (B, Hq, Tq, D), key/value (B, Hkv, Tk, D) -> ((B, Tq, Hq, D), None).

    Reads ``topk`` and ``chunk_size`` from the module (set by :func:`use_topk_attention`).
    """
    settings = getattr(module, _SETTINGS, None)
    if settings is None:
        raise RuntimeError(f"attention '{ATTN_NAME}' is active but no top-k settings are set; use use_topk_attention()")
    topk, chunk_size = settings
    if attention_mask is not None and attention_mask.dim() == 4:
        attention_mask = attention_mask[..., : key.shape[2]]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal and attention_mask is None and query.shape[2] > 1)
    out = topk_attention(query, key, value, topk, chunk_size=chunk_size, causal=causal, mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register :data:`ATTN_NAME` (attention and its mask builder) with transformers; idempotent."""
    from transformers import AttentionInterface

    try:  # transformers >= 4.53: masks are built per implementation
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    except ImportError:  # pragma: no cover - older transformers
        pass
    AttentionInterface.register(ATTN_NAME, hf_topk_attention)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config") and "Attention" in type(m).__name__]


@contextlib.contextmanager
def use_topk_attention(model: nn.Module, topk: int, chunk_size: int | None = None) -> Iterator[nn.Module]:
    """Run ``model`` with top-k attention inside the block; restore its attention implementation after.

    >>> with use_topk_attention(model, topk=32):   # doctest: +SKIP
    ...     logits = model(input_ids).logits
    """
    if not isinstance(topk, int) or isinstance(topk, bool) or topk <= 0:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if getattr(model, "_lmscope_score_users", 0):
        raise ValueError(
            "top-k attention cannot start while attn_scores hooks are active (they run the model's scored eager "
            "attention); leave the capture/overwrite block first"
        )
    register()
    previous = model.config._attn_implementation
    modules = _attention_modules(model)
    if not modules:
        raise ValueError(f"no attention modules found in {type(model).__name__}")
    saved = [getattr(m, _SETTINGS, None) for m in modules]
    try:
        for m in modules:
            setattr(m, _SETTINGS, (topk, chunk_size))
        model.set_attn_implementation(ATTN_NAME)
        if model.config._attn_implementation != ATTN_NAME:
            raise RuntimeError(f"{type(model).__name__} did not accept attention implementation '{ATTN_NAME}'")
        yield model  # meanwhile attn_scores hooks refuse to start (lmscope.hooks)
    finally:
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)
        for m, s in zip(modules, saved):
            if s is None:
                if hasattr(m, _SETTINGS):
                    delattr(m, _SETTINGS)
            else:
                setattr(m, _SETTINGS, s)


def keep_topk_abs(m: Tensor, k: int) -> Tensor:
    """Zero all but the k entries of largest |m| along the last dim: (..., d_ff) -> same shape."""
    if k >= m.shape[-1]:
        return m
    idx = torch.topk(m.abs(), k, dim=-1, sorted=False).indices
    return torch.zeros_like(m).scatter(-1, idx, m.gather(-1, idx))


@contextlib.contextmanager
def topk_feedforward(model_or_view: nn.Module | ModelView, k: int, layers: list[int] | None = None) -> Iterator[None]:
    """Keep only the k largest |m_i| per token in the FF layers (all, or ``layers``) inside the block."""
    view = model_or_view if isinstance(model_or_view, ModelView) else ModelView(model_or_view)
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    layers = list(range(view.cfg.n_layers)) if layers is None else layers
    edits = {f"blocks.{layer}.ff_coeffs": (lambda m: keep_topk_abs(m, k)) for layer in layers}
    with view.overwrite(edits):
        yield
