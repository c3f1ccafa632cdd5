"""How sparse a model's feed-forward coefficients are, and what keeping the top k of them loses.

Read as a key-value memory, an FF layer writes ``mlp_out = m @ ff_values + b`` with coefficients m
(d_ff per token; ``ff_coeffs``). Top-k FF keeps the k largest |m_i| per token. For a ReLU FF (T5,
the paper's models) many m_i are exactly zero, so a small k loses little; for a gated FF (SwiGLU,
GeGLU) few are. :func:`ff_coefficient_stats` measures it per layer on real text:

* ``zero``: share of coefficients exactly 0; ``small``: share below 1% of the token's largest |m_i|;
* ``effective``: (sum |m|)^2 / sum m^2 / d_ff, the share of units that carry the token's mass;
* ``l1_kept[k]``: share of sum |m| in the top k; ``out_error[k]``: ||(m - top_k(m)) V|| / ||m V||,
  the relative error of the FF output (bias excluded; for post-norm families, before that norm).
"""

from __future__ import annotations

import torch

from lmscope.core.hooks import hook_name
from lmscope.core.tensors import keep_largest_abs
from lmscope.core.view import ModelView

Tensor = torch.Tensor


def coefficient_stats(m: Tensor, values: Tensor, ks: list[int]) -> dict:
    """Statistics of coefficients ``m`` (N, d_ff) with value vectors ``values`` (d_ff, d), averaged over N."""
    a = m.abs()
    peak = a.amax(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    total = a.sum(-1).clamp_min(torch.finfo(a.dtype).tiny)  # (N,)
    sorted_a = a.sort(-1, descending=True).values.cumsum(-1)  # (N, d_ff)
    out = m @ values  # (N, d)
    norm = out.norm(dim=-1).clamp_min(torch.finfo(a.dtype).tiny)
    d_ff = m.shape[-1]
    return {
        "zero": float((m == 0).float().mean()),
        "small": float((a < 0.01 * peak).float().mean()),
        "effective": float((total**2 / (a**2).sum(-1).clamp_min(torch.finfo(a.dtype).tiny)).mean() / d_ff),
        "l1_kept": {k: float((sorted_a[:, min(k, d_ff) - 1] / total).mean()) for k in ks},
        "out_error": {k: float(((m - keep_largest_abs(m, k)) @ values).norm(dim=-1).div(norm).mean()) for k in ks},
    }


@torch.no_grad()
def ff_coefficient_stats(view: ModelView, blocks: Tensor, ks: list[int]) -> list[dict]:
    """Per layer, :func:`coefficient_stats` of the FF coefficients on ``blocks`` (N, T): rows
    {'layer', 'zero', 'small', 'effective', 'l1_kept': {k: share}, 'out_error': {k: error}}."""
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    names = [hook_name(layer, "ff_coeffs") for layer in range(view.cfg.n_layers)]
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    for i in range(blocks.shape[0]):
        with view.capture(names) as cache:
            view.model(input_ids=blocks[i : i + 1].to(view.device), **view.last_logits_only())
        for n in names:
            parts[n].append(cache[n].reshape(-1, cache[n].shape[-1]).float())
    rows = []
    for layer, n in enumerate(names):
        values = view.layers[layer].ff_values.float()  # (d_ff, d)
        rows.append({"layer": layer, **coefficient_stats(torch.cat(parts[n]), values, ks)})
    return rows


def mean_stats(rows: list[dict]) -> dict:
    """The per-layer rows of :func:`ff_coefficient_stats` averaged over layers (same keys, no 'layer')."""
    n = len(rows)
    out = {key: sum(r[key] for r in rows) / n for key in ("zero", "small", "effective")}
    for key in ("l1_kept", "out_error"):
        out[key] = {k: sum(r[key][k] for r in rows) / n for k in rows[0][key]}
    return out
