"""How well a lens reads the residual stream: per-layer KL to the model's final distribution, top-1
agreement and the first layer from which the final prediction leads, over held-out tokens.

Works for any lens with ``lens.read(resid, layer)`` (:class:`lmscope.core.tuned_lens.LogitLens`,
:class:`lmscope.core.tuned_lens.TunedLens`). Every position of every sequence counts.
:func:`compare_lenses` scores several lenses on one forward pass per batch (:func:`lens_stats`: one lens).
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


#: Lens logits more than this far below a position's maximum are raised to it before ``exp``: their terms
#: (< 2e-35 each) cannot move a sum that holds the maximum's 1, and ``exp`` of such inputs (denormal
#: or zero results) runs on a path about 15 times slower on x86.
EXP_FLOOR = -80.0


def kl_and_top1(target_p: Tensor, neg_entropy: Tensor, logits: Tensor,
                scratch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``KL(final || softmax(logits))`` and the lens's top-1 id per position, without building its log-softmax.

    ``target_p`` (..., d_vocab) the final distribution, ``neg_entropy`` (...) its ``sum p log p``,
    ``logits`` (..., d_vocab) the lens's, **overwritten**; ``scratch``: an optional buffer shaped like
    ``logits`` (else one is allocated). With ``z = logits - max(logits)``:
    ``KL = sum p log p - sum p z + log sum exp z``. Returns (kl (...), top1 (...)).
    """
    top, top1 = logits.max(-1, keepdim=True)  # argmax of the logits = argmax of their log-softmax
    z = logits.sub_(top)  # (..., d_vocab), <= 0 with a 0 at the top
    p_z = torch.mul(target_p, z, out=scratch).sum(-1)  # a pairwise sum: a dot product in float32 drifts
    log_norm = z.clamp_(min=EXP_FLOOR).exp_().sum(-1).log()
    return neg_entropy - p_z + log_norm, top1.squeeze(-1)


@torch.no_grad()
def compare_lenses(view, lenses: dict, tokens: Tensor, batch: int = 4) -> dict[str, LensStats]:
    """:class:`LensStats` of each of ``lenses`` (name -> lens) over every position of ``tokens`` (n, T).

    One forward pass per batch serves every lens. A lens's ``read`` must return new logits (they are
    overwritten while scored).
    """
    tokens = check_tokens(tokens)
    L = view.cfg.n_layers
    names = [hook_name(l, "resid_post") for l in range(L)]
    kl = {lens: torch.zeros(L, dtype=torch.float64) for lens in lenses}
    top1 = {lens: [] for lens in lenses}
    final, uniform = [], 0.0
    for start in range(0, tokens.shape[0], batch):
        ids = tokens[start : start + batch].to(view.device)
        logits, cache = view.run_with_cache(ids, names)
        target = logits.float().log_softmax(-1)  # (b, T, d_vocab)
        del logits
        p = target.exp()
        neg_entropy = (p * target).sum(-1)  # (b, T)
        scratch = torch.empty_like(p)  # one buffer for every lens and layer of the batch
        uniform += (math.log(target.shape[-1]) + neg_entropy).sum().item()
        final.append(target.argmax(-1).flatten().cpu())
        del target
        for lens_name, lens in lenses.items():
            rows = []
            for l, name in enumerate(names):
                kl_l, top1_l = kl_and_top1(p, neg_entropy, lens.read(cache[name], l).float(), scratch)
                kl[lens_name][l] += kl_l.sum().double().cpu()
                rows.append(top1_l.flatten().cpu())
            top1[lens_name].append(torch.stack(rows))  # (L, b * T)
    final, n = torch.cat(final), tokens.numel()
    stats = {}
    for lens_name in lenses:
        top = torch.cat(top1[lens_name], 1)  # (L, n)
        stats[lens_name] = LensStats(kl[lens_name] / n, (top == final).double().mean(1),
                                     first_leading_layer(top, final), uniform / n)
    return stats


def lens_stats(view, lens, tokens: Tensor, batch: int = 4) -> LensStats:
    """Per-layer KL to the final distribution, top-1 agreement and the first leading layer of ``lens``
    over every position of ``tokens`` (n, T): :func:`compare_lenses` of one lens."""
    return compare_lenses(view, {"lens": lens}, tokens, batch)["lens"]


def lens_kl(view, lens, tokens: Tensor, batch: int = 4) -> Tensor:
    """Mean ``KL(final || lens)`` per layer's ``resid_post`` over every position of ``tokens`` (n, T): (n_layers,)."""
    return lens_stats(view, lens, tokens, batch).kl
