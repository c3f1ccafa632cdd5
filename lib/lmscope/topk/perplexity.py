"""Perplexity of a model with dense attention, top-k attention or top-k feed-forward.

The three ways of running the model are the *modes* of this study: ``"dense"`` (the model as it
is), ``"attention"`` (top-k attention, :func:`lmscope.topk.dropin.use_topk_attention`) and
``"ff"`` (top-k feed-forward, :func:`lmscope.topk.dropin.topk_feedforward`). :func:`use_topk`
switches a model into one of them; :func:`sweep` measures anything over a list of them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Iterable

import torch
from torch import nn

from lmscope.core.hooks import hook_name
from lmscope.core.view import ModelView
from lmscope.topk.dropin import topk_feedforward, use_topk_attention

Tensor = torch.Tensor

#: How the model runs: as it is, with top-k attention, or with top-k feed-forward.
MODES = ("dense", "attention", "ff")


def use_topk(view: ModelView, mode: str, k: int | None, chunk_size: int | None = None) -> ContextManager:
    """A ``with`` block running ``view``'s model in ``mode`` (one of :data:`MODES`) with ``k``.

    ``"dense"`` changes nothing (``k`` is ignored); ``"attention"`` keeps the ``k`` highest-scoring
    keys per query (``chunk_size`` queries at a time); ``"ff"`` keeps the ``k`` largest |m_i| per token.
    """
    if mode == "dense":
        return contextlib.nullcontext()
    if mode == "attention":
        return use_topk_attention(view, k, chunk_size=chunk_size)
    if mode == "ff":
        return topk_feedforward(view, k)
    raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")


def sweep(
    view: ModelView,
    measure: Callable[[], dict],
    attn_ks: Iterable[int] = (),
    ff_ks: Iterable[int] = (),
    chunk_size: int | None = None,
) -> list[dict]:
    """Rows ``{'mode', 'k', **measure()}``: dense once, then top-k attention per k, then top-k FF per k."""
    rows = [{"mode": "dense", "k": None, **measure()}]
    for mode, ks in (("attention", attn_ks), ("ff", ff_ks)):
        for k in ks:
            with use_topk(view, mode, k, chunk_size):
                rows.append({"mode": mode, "k": k, **measure()})
    return rows


@torch.no_grad()
def next_token_logits(view: ModelView, ids: Tensor) -> Tensor:
    """float32 logits (b, T-1, V) of the tokens after positions 0..T-2 of ``ids`` (b, T).

    ``view.unembed`` of the last residual: the model's own logits up to float round-off, faster on a
    large vocabulary (see :func:`lmscope.core.tensors.blas_matmul`).
    """
    last = hook_name(view.cfg.n_layers - 1, "resid_post")
    _, cache = view.run_with_cache(ids, [last], **view.last_logits_only())
    return view.unembed(cache[last][:, :-1]).float()


@torch.no_grad()
def perplexity(view: ModelView, blocks: Tensor, batch_size: int = 1) -> float:
    """exp(mean next-token NLL) over token blocks (N, T), each block scored on its own."""
    nll, count = 0.0, 0
    for i in range(0, blocks.shape[0], batch_size):
        ids = blocks[i : i + batch_size].to(view.device)  # (b, T)
        logits = next_token_logits(view, ids)  # (b, T-1, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        nll += float(loss)
        count += ids[:, 1:].numel()
    return math.exp(nll / count)


def perplexity_sweep(
    view: ModelView,
    blocks: Tensor,
    attn_ks: Iterable[int] = (),
    ff_ks: Iterable[int] = (),
    chunk_size: int | None = None,
) -> list[dict]:
    """Rows ``{'mode', 'k', 'ppl'}`` of :func:`perplexity` over ``blocks`` (N, T): dense, top-k attention
    per k in ``attn_ks``, top-k FF per k in ``ff_ks``."""
    return sweep(view, lambda: {"ppl": perplexity(view, blocks)}, attn_ks, ff_ks, chunk_size)
