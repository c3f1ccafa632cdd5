"""How well a lens reads the residual stream: per-layer KL to the model's final distribution, top-1
agreement and the first layer from which the final prediction leads, over held-out tokens.

Works for any lens with ``lens.read(resid, layer)`` (:class:`lmscope.core.tuned_lens.LogitLens`,
:class:`lmscope.core.tuned_lens.TunedLens`). Every position of every sequence counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmscope.core.hooks import hook_name

Tensor = torch.Tensor


def kl_to_final(target_logp: Tensor, logp: Tensor) -> Tensor:
    """``KL(final || lens)`` per position, in nats: (..., d_vocab) log-probs twice -> (...)."""
    return (target_logp.exp() * (target_logp - logp)).sum(-1)


def check_tokens(tokens: Tensor, batch: int = 1) -> Tensor:
    """``tokens`` as int64 (n, T); ValueError unless it is an integer matrix of at least ``batch`` rows."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
        raise ValueError("tokens must be an integer tensor of shape (n_sequences, seq_len).")
    if tokens.shape[0] < batch:
        raise ValueError(f"tokens has {tokens.shape[0]} sequences, fewer than the batch of {batch}.")
    return tokens.long()


@dataclass
class LensStats:
    """How well a lens reads each layer's ``resid_post`` on a token set (every position counts)."""

    kl: Tensor  # (n_layers,) mean KL(final || lens) in nats per token
    top1_agreement: Tensor  # (n_layers,) share of positions where the lens's top-1 is the model's top-1
    first_leading: Tensor  # (n_positions,) first layer from which the lens's top-1 is the final top-1 for good
    uniform_kl: float  # mean KL(final || uniform) = ln d_vocab - entropy: a lens worse than this knows nothing

    @property
    def mean_first_leading(self) -> float:
        return self.first_leading.double().mean().item()


def first_leading_layer(top1: Tensor, final: Tensor) -> Tensor:
    """First layer ``l`` with ``top1[l:] == final`` for each position: (n_layers, n) and (n,) ids -> (n,).

    The last layer always agrees when the lens reads the model's output there, so the answer is at most
    ``n_layers - 1``.
    """
    agree = top1 == final  # (n_layers, n)
    lasting = agree.flip(0).cumprod(0).flip(0)  # 1 where this and every later layer agree
    return agree.shape[0] - lasting.sum(0)


@torch.no_grad()
def lens_stats(view, lens, tokens: Tensor, batch: int = 4) -> LensStats:
    """Per-layer KL to the final distribution, top-1 agreement and the first leading layer of ``lens``
    over every position of ``tokens`` (n, T)."""
    tokens = check_tokens(tokens)
    L = view.cfg.n_layers
    names = [hook_name(l, "resid_post") for l in range(L)]
    kl = torch.zeros(L, dtype=torch.float64)
    top1, final, uniform = [], [], 0.0
    for start in range(0, tokens.shape[0], batch):
        ids = tokens[start : start + batch].to(view.device)
        logits, cache = view.run_with_cache(ids, names)
        target = logits.float().log_softmax(-1)  # (b, T, d_vocab)
        uniform += (math.log(target.shape[-1]) + (target.exp() * target).sum(-1)).sum().item()
        final.append(target.argmax(-1).flatten().cpu())
        rows = []
        for l, name in enumerate(names):
            logp = lens.read(cache[name], l).float().log_softmax(-1)
            kl[l] += kl_to_final(target, logp).sum().double().cpu()
            rows.append(logp.argmax(-1).flatten().cpu())
        top1.append(torch.stack(rows))  # (L, b * T)
    top1, final = torch.cat(top1, 1), torch.cat(final)
    n = tokens.numel()
    return LensStats(kl / n, (top1 == final).double().mean(1), first_leading_layer(top1, final), uniform / n)


def lens_kl(view, lens, tokens: Tensor, batch: int = 4) -> Tensor:
    """Mean ``KL(final || lens)`` per layer's ``resid_post`` over every position of ``tokens`` (n, T): (n_layers,)."""
    return lens_stats(view, lens, tokens, batch).kl
