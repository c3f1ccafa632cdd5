"""Do parameters read in embedding space agree with the hidden states they act on? (Dar et al., section 4)

At each layer and position take the ``top_params`` most active parameter vectors of a
group (FF units by |coefficient| for keys and values; subheads by |z_j|, the attention
output coordinate that row j of W_O multiplies, for W_V columns and W_O rows). A is the
union of their top-``k`` tokens (each vector signed by its activation), B the top-``k``
logit-lens tokens of the residual after that layer at that position; the score is
|A ∩ B| / |B|. The baseline pairs A with B of a random other position.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from lmscope.core.hooks import hook_name, hook_names
from lmscope.core.view import ModelView
from lmscope.embedding.projection import GROUPS, Projector, group_vectors

GROUPS_CHECKED = ("ff_keys", "ff_values", "W_V", "W_O")


@contextmanager
def capture_attention_z(view: ModelView, layers):
    """Record the input of each layer's attention output projection (z: B, T, n_heads*d_head)."""
    store, handles = {}, []
    try:
        for layer in layers:
            module = view.blocks[layer].get_submodule(view.family.attn_out_proj)

            def pre(mod, args, layer=layer):
                store[layer] = args[0].detach()

            handles.append(module.register_forward_pre_hook(pre))
        yield store
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def parameter_hidden_overlap(view: ModelView, texts_ids: list[torch.Tensor], layers=None, groups=GROUPS_CHECKED,
                             top_params: int = 5, k: int = 50, seed: int = 0) -> dict:
    """Per group: ``{"aligned": (n_layers,), "random": (n_layers,)}`` mean overlaps, and ``layers``.

    ``texts_ids`` is a list of token-id tensors (T,), one per text.
    """
    for g in groups:
        if g not in GROUPS_CHECKED:
            raise ValueError(f"Unknown group '{g}': use some of {', '.join(GROUPS_CHECKED)}.")
    if not texts_ids:
        raise ValueError("No texts given: the validation needs at least one text.")
    layers = list(range(view.cfg.n_layers)) if layers is None else [view.layer(l).index for l in layers]
    proj = Projector(view)
    cfg = view.cfg
    rep = cfg.n_heads // cfg.n_kv_heads
    coeffs = {l: [] for l in layers}
    zs = {l: [] for l in layers}
    lens = {l: [] for l in layers}
    names = hook_names(["ff_coeffs", "resid_post"], layers)
    for ids in texts_ids:
        with capture_attention_z(view, layers) as z, view.capture(names) as cache:
            view.model(input_ids=ids.reshape(1, -1).to(view.device))
        for l in layers:
            coeffs[l].append(cache[hook_name(l, "ff_coeffs")][0].float())
            zs[l].append(z[l][0].float())
            lens[l].append(proj.logit_lens(cache[hook_name(l, "resid_post")][0]).topk(k, dim=-1).indices)
    rng = np.random.default_rng(seed)
    out = {g: {"aligned": [], "random": []} for g in groups}
    for l in layers:
        act = {"ff": torch.cat(coeffs[l]), "attn": torch.cat(zs[l])}  # (P, d_ff), (P, H*dh)
        B = torch.cat(lens[l])  # (P, k)
        P = B.shape[0]
        other = (np.arange(P) + rng.integers(1, P, size=P)) % P if P > 1 else np.zeros(P, dtype=int)
        for g in groups:
            a = act["ff" if g.startswith("ff_") else "attn"]
            top = a.abs().topk(top_params, dim=1).indices  # (P, top_params)
            sign = torch.sign(a.gather(1, top))  # (P, top_params)
            rows = top
            if g == "W_V":  # query-head subhead j = h*dh + c reads kv head h // rep
                rows = (top // cfg.d_head // rep) * cfg.d_head + top % cfg.d_head
            vecs = group_vectors(view, l, g).detach().float()[rows.reshape(-1)]  # (P*top_params, d)
            vecs = vecs * sign.reshape(-1, 1)
            A = proj.project(vecs, GROUPS[g]).topk(k, dim=-1).indices.reshape(P, -1)  # (P, top_params*k)
            aligned = [_overlap(A[p], B[p]) for p in range(P)]
            random = [_overlap(A[p], B[other[p]]) for p in range(P)]
            out[g]["aligned"].append(float(np.mean(aligned)))
            out[g]["random"].append(float(np.mean(random)))
    result = {g: {key: np.array(v) for key, v in d.items()} for g, d in out.items()}
    result["layers"] = np.array(layers)
    return result


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / len(b)
