"""Do parameters read in embedding space agree with the hidden states they act on? (Dar et al., section 4)

:func:`paper_overlap` is the measure of the official code (the chapter's main result): at each of
the first ``n_positions`` positions of a text, the ``top_params`` FF units with the largest
(signed) coefficient and the attention subheads with the largest (signed) ``z_j``; their keys,
values, ``W_V`` columns and ``W_O`` rows read through ``E`` (top ``k`` each, unsigned); the score is
|union ∩ B| / |B| with B the top-``k`` logit-lens tokens of the layer's output (or of the last
layer's, ``against="last"``); the baseline takes the units of a random other position. Token masks
(e.g. hub tokens dropped) restrict both sides' top-k.

:func:`parameter_hidden_overlap` is our earlier variant: at each layer and position take the ``top_params`` most active parameter vectors of a
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
from lmscope.core.tensors import blas_matmul
from lmscope.core.view import ModelView
from lmscope.embedding.projection import GROUPS, Projector, group_vectors
from lmscope.embedding.top_k import top_entries

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
            view.model(input_ids=ids.reshape(1, -1).to(view.device), **view.last_logits_only())
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


def _masked_tops(scores: torch.Tensor, k: int, masks: dict) -> dict[str, torch.Tensor]:
    """Per mask name, the top-``k`` ids (n, k) of ``scores`` (n, V) over the tokens a mask keeps
    (None: all); ``scores`` is masked in place by the last mask (each other one fills a copy)."""
    last = next(reversed(masks), None)
    return {name: top_entries(scores, k, keep, overwrite=name == last)[1] for name, keep in masks.items()}


def _unit_tops(view: ModelView, layer: int, group: str, E: torch.Tensor, k: int, masks: dict,
               rows: torch.Tensor, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Per mask name, the top-``k`` token ids of vectors ``rows`` of ``group`` read as ``x E``: (len(rows), k)."""
    vecs = group_vectors(view, layer, group).detach().float()[rows]
    out = {name: [] for name in masks}
    for i in range(0, len(vecs), chunk):
        for name, ids in _masked_tops(blas_matmul(vecs[i: i + chunk], E), k, masks).items():  # scores (c, V)
            out[name].append(ids)
    return {name: torch.cat(v) for name, v in out.items()}


def _hits(A: torch.Tensor, B: torch.Tensor, V: int) -> torch.Tensor:
    """``|A_p & B_p|`` per row: token ids A (P, m), repeats allowed, and B (P, k), distinct -> (P,)."""
    offset = torch.arange(A.shape[0])[:, None] * V  # row p's ids move to p*V.. so one isin serves every row
    return torch.isin(B + offset, A + offset).sum(1)


@torch.no_grad()
def paper_overlap(view: ModelView, blocks: torch.Tensor, layers=None, groups=GROUPS_CHECKED, *,
                  top_params: int = 5, k: int = 50, n_positions: int = 1000, masks: dict | None = None,
                  seed: int = 0) -> dict:
    """The official code's parameter / hidden-state overlap on natural text.

    ``blocks`` (n, T) token ids; the first ``n_positions`` positions (block by block) are used.
    ``masks``: name -> bool (d_vocab,) of tokens to keep, or None for all (default
    ``{"all tokens": None}``). Returns ``{"layers": (L,), "positions": P, mask name: {against:
    {group: {"aligned": (L,), "random": (L,)}}}}`` with ``against`` in ("layer", "last").
    """
    for g in groups:
        if g not in GROUPS_CHECKED:
            raise ValueError(f"Unknown group '{g}': use some of {', '.join(GROUPS_CHECKED)}.")
    blocks = torch.as_tensor(blocks)
    if blocks.ndim != 2 or blocks.numel() == 0:
        raise ValueError("blocks must be token ids of shape (n_blocks, seq_len), e.g. from "
                         "lmscope.data.shakespeare.token_blocks.")
    masks = {"all tokens": None} if masks is None else masks
    cfg = view.cfg
    layers = list(range(cfg.n_layers)) if layers is None else [view.layer(l).index for l in layers]
    last = cfg.n_layers - 1
    names = hook_names(["ff_coeffs", "resid_post"], sorted(set(layers) | {last}))
    acts = {l: {"ff": [], "attn": [], "resid": []} for l in set(layers) | {last}}
    got = 0
    for ids in blocks:
        if got >= n_positions:
            break
        with capture_attention_z(view, layers) as z, view.capture(names) as cache:
            view.model(input_ids=ids.reshape(1, -1).to(view.device), **view.last_logits_only())
        for l in acts:
            acts[l]["resid"].append(cache[hook_name(l, "resid_post")][0].float())
            if l in layers:
                acts[l]["ff"].append(cache[hook_name(l, "ff_coeffs")][0].float())
                acts[l]["attn"].append(z[l][0].float())
        got += ids.numel()
    acts = {l: {key: torch.cat(v)[:n_positions] if v else None for key, v in d.items()} for l, d in acts.items()}
    P = acts[last]["resid"].shape[0]
    E = view.W_U.detach().float()
    V = E.shape[1]
    rng = np.random.default_rng(seed)
    other = torch.as_tensor((np.arange(P) + rng.integers(1, P, size=P)) % P if P > 1 else np.zeros(P, dtype=int))

    lens_tops = {}  # layer -> mask name -> (P, k): the top-k logit-lens tokens of the layer's output

    def lens(l: int) -> dict[str, torch.Tensor]:
        if l not in lens_tops:  # one unembedding (P, V) per layer serves every mask
            logits = view.unembed(acts[l]["resid"].to(view.W_U.dtype)).float()
            lens_tops[l] = _masked_tops(logits, k, masks)
        return lens_tops[l]

    out = {name: {a: {g: {"aligned": [], "random": []} for g in groups} for a in ("layer", "last")} for name in masks}
    rep = cfg.n_heads // cfg.n_kv_heads
    for l in layers:
        for g in groups:
            a = acts[l]["ff" if g.startswith("ff_") else "attn"]
            top = a.topk(top_params, dim=1).indices  # (P, top_params)
            if g == "W_V":  # query-head subhead j = h*dh + c reads kv head h // rep
                top = (top // cfg.d_head // rep) * cfg.d_head + top % cfg.d_head
            used, where = torch.unique(top, return_inverse=True)  # read only the units that fire
            tops = _unit_tops(view, l, g, E, k, masks, used)
            for name in masks:
                A = tops[name][where].reshape(P, -1)  # (P, top_params*k): the units' tokens
                for against, B in (("layer", lens(l)[name]), ("last", lens(last)[name])):  # B (P, k) distinct ids
                    for kind, rows in (("aligned", slice(None)), ("random", other)):
                        hits = _hits(A[rows], B, V)  # (P,)
                        out[name][against][g][kind].append(float((hits.float() / k).mean()))
    result = {name: {a: {g: {kind: np.array(v) for kind, v in d.items()} for g, d in per.items()}
                     for a, per in by.items()} for name, by in out.items()}
    return {"layers": np.array(layers), "positions": P, **result}


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / len(b)
