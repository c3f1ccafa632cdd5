"""The attention implementations lmscope puts into Hugging Face models, and the one guard over them.

Both are registered with transformers' ``AttentionInterface`` (with a mask builder in
``AttentionMaskInterface``) when this module is imported:

=====================  ===============================================================================
name                   what it computes
=====================  ===============================================================================
:data:`SCORED`         eager softmax attention whose pre-softmax scores (B, H, Tq, Tk), mask included,
                       pass through the active ``attn_scores`` hooks (:mod:`lmscope.core.hooks`)
:data:`TOPK`           top-k attention (:func:`lmscope.topk.attention.topk_attention`): each query
                       keeps only its k highest-scoring keys (Gupta et al., 2021)
=====================  ===============================================================================

:func:`use_attention` switches a model to one of them inside a ``with`` block and restores the
model's own implementation afterwards, also on error. It is the only code that switches a model,
and the guard: while one of them holds a model, asking for the other raises a ValueError that
names both; asking for the same one again nests (the innermost top-k settings apply). The state
lives in this module, keyed by the model and its attention modules, never on the model itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator
from weakref import WeakKeyDictionary

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from lmscope.topk.attention import topk_attention

Tensor = torch.Tensor
Edit = Callable[[Tensor], "Tensor | None"]

SCORED = "lmscope_eager"
TOPK = "lmscope_topk"
_WHAT = {SCORED: "attn_scores hooks", TOPK: "top-k attention"}


@dataclass
class _Hold:
    """An implementation holding a model: which, what to restore, how many blocks use it."""

    name: str
    previous: str
    depth: int = 0


_HOLDS: WeakKeyDictionary[nn.Module, _Hold] = WeakKeyDictionary()  # model -> its hold
_SCORE_EDITS: WeakKeyDictionary[nn.Module, list[Edit]] = WeakKeyDictionary()  # attention module -> edits
_TOPK_SETTINGS: WeakKeyDictionary[nn.Module, tuple[int, int | None]] = WeakKeyDictionary()  # (topk, chunk)


def active_implementation(model: nn.Module) -> str | None:
    """:data:`SCORED` or :data:`TOPK` while one holds ``model``, else None."""
    hold = _HOLDS.get(model)
    return None if hold is None else hold.name


def _conflict(requested: str, active: str) -> ValueError:
    if requested == SCORED:
        return ValueError(
            "attn_scores hooks need the model's scored eager attention, but top-k attention is active "
            "(use_topk_attention); read or edit the scores outside that block, e.g. keep the top k with "
            "an attn_scores overwrite (lmscope.topk.patterns.keep_topk_scores)"
        )
    return ValueError(
        f"{_WHAT[requested]} cannot start while {_WHAT[active]} are active (they run the model's scored eager "
        "attention); leave the capture/overwrite block first"
    )


@contextmanager
def use_attention(view, name: str, *, topk: int | None = None, chunk_size: int | None = None) -> Iterator[None]:
    """Inside: ``view``'s model runs attention ``name`` (:data:`SCORED` or :data:`TOPK`, with its
    ``topk`` and ``chunk_size``); its own implementation comes back after."""
    if name not in _WHAT:
        raise ValueError(f"Unknown attention implementation '{name}': use {SCORED!r} or {TOPK!r}.")
    model = view.model
    hold = _HOLDS.get(model)
    if hold is not None and hold.name != name:
        raise _conflict(name, hold.name)
    modules = view.attention_modules() if name == TOPK else []
    saved = [_TOPK_SETTINGS.get(m) for m in modules]
    if hold is None:
        previous = model.config._attn_implementation
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:
            model.set_attn_implementation(previous)
            raise RuntimeError(f"{type(model).__name__} did not accept attention implementation '{name}'")
        hold = _HOLDS[model] = _Hold(name, previous)
    hold.depth += 1
    try:
        for m in modules:
            _TOPK_SETTINGS[m] = (topk, chunk_size)
        yield
    finally:
        for m, s in zip(modules, saved):
            if s is None:
                _TOPK_SETTINGS.pop(m, None)
            else:
                _TOPK_SETTINGS[m] = s
        hold.depth -= 1
        if hold.depth == 0:
            del _HOLDS[model]
            model.set_attn_implementation(hold.previous)


@contextmanager
def edit_scores(view, module: nn.Module, edit: Edit) -> Iterator[None]:
    """Inside: the scored attention holds ``view``'s model and ``edit`` sees (and may replace) the
    pre-softmax scores of attention module ``module``."""
    with use_attention(view, SCORED):  # first: it may refuse
        edits = _SCORE_EDITS.setdefault(module, [])
        edits.append(edit)
        try:
            yield
        finally:
            edits.remove(edit)
            if not edits:
                del _SCORE_EDITS[module]


# -- the implementations --------------------------------------------------------------------------
def scored_eager_attention(
    module: nn.Module,
    query: Tensor,  # (B, H, Tq, dh)
    key: Tensor,  # (B, Hkv, Tk, dh)
    value: Tensor,  # (B, Hkv, Tk, dh)
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """Eager attention whose pre-softmax scores pass through the active score edits: ((B, Tq, H, dh), weights).

    As HF's eager attention: ``scaling`` and ``softcap`` come from the attention module (Gemma 2's
    ``c * tanh(s / c)`` before the mask), sliding windows arrive in ``attention_mask``.
    """
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    scores = _capped_scores(query, key, scaling, softcap)  # (B, H, Tq, Tk)
    scores = scores + additive_mask(module, attention_mask, scores)
    for edit in _SCORE_EDITS.get(module, ()):
        result = edit(scores)
        if result is not None:
            scores = result
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, Tq, H, dh)
    return out, weights


def _capped_scores(query: Tensor, key: Tensor, scaling: float | None, softcap: float | None) -> Tensor:
    """Scaled (and soft-capped) scores ``q k^T``: (B, H, Tq, Tk) for same-head-count query and key."""
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    return scores if softcap is None else torch.tanh(scores / softcap) * softcap


def additive_mask(module: nn.Module, mask: Tensor | None, scores: Tensor) -> Tensor:
    """Additive mask broadcastable to ``scores`` (B, H, Tq, Tk), from any HF mask format."""
    neg = torch.finfo(scores.dtype).min
    if mask is not None:
        mask = mask[..., : scores.shape[-1]]
        if mask.dtype == torch.bool:
            return torch.zeros((), dtype=scores.dtype, device=scores.device).masked_fill(~mask, neg)
        return mask.to(scores.dtype)
    tq, tk = scores.shape[-2:]
    if getattr(module, "is_causal", False) and tq > 1:
        future = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(tk - tq + 1)
        return torch.zeros(tq, tk, dtype=scores.dtype, device=scores.device).masked_fill(future, neg)
    return torch.zeros((), dtype=scores.dtype, device=scores.device)


def hf_topk_attention(
    module: nn.Module,
    query: Tensor,  # (B, Hq, Tq, D)
    key: Tensor,  # (B, Hkv, Tk, D)
    value: Tensor,  # (B, Hkv, Tk, D)
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Top-k attention with the settings :func:`use_attention` gave ``module``: ((B, Tq, Hq, D), None).

    With an attention soft cap (Gemma 2; monotone, so the same keys win) the kept scores are capped
    before their softmax on a dense path (:func:`_capped_topk`), since the kernels do not cap.
    """
    settings = _TOPK_SETTINGS.get(module)
    if settings is None:
        raise RuntimeError(f"attention '{TOPK}' is active but this module has no top-k settings; "
                           "use lmscope.topk.dropin.use_topk_attention()")
    topk, chunk_size = settings
    if attention_mask is not None and attention_mask.dim() == 4:
        attention_mask = attention_mask[..., : key.shape[2]]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal and attention_mask is None and query.shape[2] > 1)
    if softcap is not None:
        return _capped_topk(module, query, key, value, attention_mask, topk, scaling, softcap, causal), None
    out = topk_attention(query, key, value, topk, chunk_size=chunk_size, causal=causal, mask=attention_mask,
                         scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _capped_topk(module, query, key, value, mask, topk, scaling, softcap, causal) -> Tensor:
    """Dense top-k attention on soft-capped scores: (B, Tq, Hq, D)."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)
    scores = _capped_scores(query, key, scaling, softcap)  # (B, H, Tq, Tk)
    if mask is None and causal:
        scores = scores + additive_mask(module, None, scores)
    elif mask is not None:
        scores = scores + additive_mask(module, mask, scores)
    k = min(topk, scores.shape[-1])
    kth = scores.topk(k, dim=-1).values[..., -1:]  # ties at the k-th score are kept
    scores = scores.masked_fill(scores < kth, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous()


AttentionInterface.register(SCORED, scored_eager_attention)
AttentionMaskInterface.register(SCORED, eager_mask)
AttentionInterface.register(TOPK, hf_topk_attention)
AttentionMaskInterface.register(TOPK, sdpa_mask)
