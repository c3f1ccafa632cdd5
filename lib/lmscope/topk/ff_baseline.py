"""ReLU vs gated FF coefficients on models trained the same way: how sparse, and what top-k FF costs.

No pretrained ReLU model (T5, GPT-2 style) is available offline, so the measured baseline is small:
models trained from scratch on the same text, schedule and seed that differ in their FF block
(:mod:`lmscope.embedding.scratch`, ``ScratchSpec(ff="relu" | "swiglu")``). :func:`ff_baseline` gives,
per model, the coefficient statistics of :func:`lmscope.topk.ff_sparsity.coefficient_stats` (mean
over layers) and the held-out perplexity change of top-k FF at k = fraction * d_ff, so models of
different d_ff are read at the same fraction (the paper's T5-base k=64 of 3072 is 2.1%).
"""

from __future__ import annotations

from typing import Iterable

import torch

from lmscope.core.view import ModelView
from lmscope.topk.ff_sparsity import ff_coefficient_stats, mean_stats
from lmscope.topk.perplexity import perplexity_sweep

Tensor = torch.Tensor


def fraction_ks(d_ff: int, fractions: Iterable[float]) -> list[int]:
    """k = round(fraction * d_ff), at least 1 and at most d_ff, one per fraction (duplicates dropped, in order)."""
    ks: list[int] = []
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fractions must be in (0, 1], got {f!r}")
        k = min(d_ff, max(1, round(f * d_ff)))
        if k not in ks:
            ks.append(k)
    return ks


@torch.no_grad()
def ff_baseline(models: dict[str, torch.nn.Module], blocks: Tensor, fractions: Iterable[float],
                stats_blocks: int = 4) -> list[dict]:
    """One row per model in ``models`` (name -> causal LM), scored on ``blocks`` (N, T) of its ids:
    {'model', 'd_ff', 'gated', 'ppl' (dense), 'zero', 'small', 'effective' (mean over layers),
    'ks': [k], 'l1_kept': {k: share}, 'out_error': {k: error}, 'ppl_change': {k: ppl_k / ppl - 1}}.
    The coefficient statistics use the first ``stats_blocks`` blocks; the perplexities all of them."""
    fractions = list(fractions)
    rows = []
    for name, model in models.items():
        view = ModelView(model)
        ks = fraction_ks(view.cfg.d_ff, fractions)
        stats = mean_stats(ff_coefficient_stats(view, blocks[:stats_blocks], ks))
        ppl = perplexity_sweep(view, blocks, ff_ks=ks)
        dense = ppl[0]["ppl"]
        rows.append({"model": name, "d_ff": view.cfg.d_ff, "gated": view.cfg.gated, "ppl": dense,
                     "zero": stats["zero"], "small": stats["small"], "effective": stats["effective"], "ks": ks,
                     "l1_kept": stats["l1_kept"], "out_error": stats["out_error"],
                     "ppl_change": {r["k"]: r["ppl"] / dense - 1 for r in ppl if r["mode"] == "ff"}})
    return rows
