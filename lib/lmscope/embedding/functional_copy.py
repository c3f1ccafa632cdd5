"""A functionally identical copy of a model with a known answer: rotated residual basis, permuted heads and units.

For families whose residual basis can be rotated exactly (``view.family.rotatable``: RMSNorm,
pre-norm, separate q/k/v projections) :func:`functional_copy` folds every norm gain into the
weights that read the norm's output, rotates the residual basis by a random orthogonal ``R``
(an RMSNorm without a gain commutes with it) and permutes key/value head groups, the query heads
within each group and the FF units of every layer. The copy computes the same logits (up to
rounding) while no raw coordinate means what it meant; :class:`CopyTruth` records the rotation
and the permutations, the ground truth that alignment (:mod:`lmscope.embedding.alignment`) must
recover. Every module is reached through the family table (:mod:`lmscope.core.families`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmscope.core.families import Family, SeparateQKV, linear_weight
from lmscope.core.view import ModelView

Tensor = torch.Tensor


@dataclass
class CopyTruth:
    """How a :func:`functional_copy` relates to its original (new index -> old index)."""

    rotation: Tensor  # (d_model, d_model) orthogonal R: copy's residual = original's residual @ R
    head_perm: list[np.ndarray]  # per layer (n_heads,): copy head h is original head head_perm[h]
    kv_perm: list[np.ndarray]  # per layer (n_kv_heads,)
    ff_perm: list[np.ndarray]  # per layer (d_ff,): copy unit i is original unit ff_perm[i]

    @staticmethod
    def inverse(perm: np.ndarray) -> np.ndarray:
        """The inverse permutation: ``inverse(perm)[perm[i]] == i``."""
        inv = np.empty_like(perm)
        inv[perm] = np.arange(len(perm))
        return inv


def check_rotatable(family: Family) -> None:
    """ValueError (naming the family and why) unless a rotation can be folded into its weights exactly."""
    if family.rotatable:
        return
    if family.norm != "rms":
        why = "it normalises with LayerNorm, whose centering does not commute with a rotation"
    elif family.post_norm:
        why = "it normalises after each residual add, so a rotation cannot be folded into the next weights"
    elif family.post_attn_norm or family.post_ff_norm or family.norm_gain_offset or family.embed_scale:
        why = ("its norms after the sub-blocks, (1 + weight) gains or scaled embedding do not commute with a "
               "rotation; functional_copy(view, rotate=False) permutes heads and FF units only")
    else:
        why = "its q/k/v projections are fused, so heads cannot be permuted row block by row block"
    raise ValueError(f"functional_copy needs an RMSNorm pre-norm family with separate q/k/v projections; "
                     f"the '{family.name}' family is not one: {why}.")


def check_permutable(family: Family) -> None:
    """ValueError unless heads and FF units can be permuted row block by row block (separate projections)."""
    if not isinstance(family.qkv, SeparateQKV) or family.gate_up_fused:
        raise ValueError(f"functional_copy(rotate=False) needs separate q/k/v and gate/up projections; the "
                         f"'{family.name}' family fuses them, so its heads or units cannot be permuted block by block.")


def _set(linear: nn.Module, weight: Tensor, bias: Tensor | None = None) -> None:
    """Give a linear projection a new weight (out, in) and, when given, a new bias (out,)."""
    stored = weight if linear_weight(linear) is linear.weight else weight.T
    linear.weight = nn.Parameter(stored.contiguous(), requires_grad=linear.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias.contiguous(), requires_grad=linear.bias.requires_grad)


def _permute_blocks(w: Tensor, perm: np.ndarray, block: int) -> Tensor:
    """Permute the row blocks of ``w`` (n*block, ...): block i of the result is block perm[i] of ``w``."""
    return w.reshape(len(perm), block, *w.shape[1:])[torch.as_tensor(perm)].reshape(w.shape)


def _bias(linear: nn.Module) -> Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


@torch.no_grad()
def functional_copy(view: ModelView, *, seed: int = 0, rotate: bool = True,
                    permute: bool = True) -> tuple[nn.Module, CopyTruth]:
    """A deep copy of ``view.model`` computing the same function, rotated, with permuted heads and FF units.

    Every norm gain is folded into the weights that read its output (q/k/v, gate/up, and the
    unembedding for the final norm, which unties a tied unembedding); the residual basis is
    rotated by a Haar-random orthogonal R (``rotate``); key/value head groups are permuted
    together with their query heads, query heads within each group, and FF units in every layer
    (``permute``). Biases follow: q/k/v and gate/up biases are permuted, output biases (W_O, FF
    out) rotated. The copy is named ``<view.name>-rotated-<seed>``. Returns (copy, truth).
    """
    if not isinstance(view, ModelView):
        raise TypeError(f"functional_copy takes a ModelView, got {type(view).__name__}: "
                        "use functional_copy(ModelView(model)).")
    family, cfg = view.family, view.cfg
    check_rotatable(family) if rotate else check_permutable(family)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    new = copy.deepcopy(view.model)
    dtype = view.W_E.dtype
    d, dh, H, Hkv, rep = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads
    R = torch.eye(d, dtype=torch.float64)
    if rotate:
        Q, Rr = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        R = Q * torch.sign(torch.diagonal(Rr))  # Haar-distributed orthogonal
    Rd = R.to(dtype)

    def same_order(n: int) -> np.ndarray:
        return np.arange(n)

    embed = new.get_submodule(family.embed)
    if rotate:
        embed.weight = nn.Parameter(embed.weight.detach() @ Rd)
    head_perms, kv_perms, ff_perms = [], [], []
    for block in new.get_submodule(family.layers):
        part = block.get_submodule
        kv_perm = rng.permutation(Hkv) if permute else same_order(Hkv)
        within = [rng.permutation(rep) if permute else same_order(rep) for _ in range(Hkv)]
        head_perm = np.array([kv_perm[gi] * rep + within[gi][r] for gi in range(Hkv) for r in range(rep)])
        ff_perm = rng.permutation(cfg.d_ff) if permute else same_order(cfg.d_ff)
        # attention: fold the norm gain into q/k/v, rotate their input, permute head blocks; rotate W_O's output
        # (without a rotation nothing is folded: the norms stay as they are, only blocks move)
        attn_norm = part(family.attn_norm) if rotate else None
        g1 = attn_norm.weight.detach().clone() if rotate else 1.0
        for path, perm in ((family.qkv.q, head_perm), (family.qkv.k, kv_perm), (family.qkv.v, kv_perm)):
            proj = part(path)
            w = _permute_blocks(linear_weight(proj).detach() * g1, perm, dh) @ Rd  # W diag(g) R, heads permuted
            b = _permute_blocks(proj.bias.detach(), perm, dh) if proj.bias is not None else None
            _set(proj, w, b)
        out_proj = part(family.attn_out_proj)
        wo = linear_weight(out_proj).detach()  # (d, H*dh)
        wo = _permute_blocks(wo.T, head_perm, dh).T  # permute input columns by head
        b_out = _bias(out_proj)
        _set(out_proj, Rd.T @ wo, b_out @ Rd if b_out is not None else None)
        for path, perm in zip(family.qk_norms or (), (head_perm, kv_perm)):
            norm = part(path)  # a QK-norm over all heads (OLMo 2) moves with them; a per-head one stays
            if norm.weight.numel() == len(perm) * dh:
                norm.weight.copy_(_permute_blocks(norm.weight.detach(), perm, dh))
        if rotate:
            attn_norm.weight.fill_(1.0)
        # FF: fold the norm gain into gate/up, rotate their input, permute units; rotate the output
        ff_norm = part(family.ff_norm) if rotate else None
        g2 = ff_norm.weight.detach().clone() if rotate else 1.0
        units = torch.as_tensor(ff_perm)
        for path in (family.ff_gate, family.ff_in):
            if path is None:  # not a gated MLP
                continue
            proj = part(path)
            b = _bias(proj)
            _set(proj, (linear_weight(proj).detach() * g2)[units] @ Rd, b[units] if b is not None else None)
        ff_out = part(family.ff_out)
        b_ff = _bias(ff_out)
        _set(ff_out, Rd.T @ linear_weight(ff_out).detach()[:, units], b_ff @ Rd if b_ff is not None else None)
        if rotate:
            ff_norm.weight.fill_(1.0)
        head_perms.append(head_perm), kv_perms.append(kv_perm), ff_perms.append(ff_perm)
    if rotate:
        final_norm, unembed = new.get_submodule(family.final_norm), new.get_submodule(family.unembed)
        gf = final_norm.weight.detach().clone()
        unembed.weight = nn.Parameter((unembed.weight.detach() * gf) @ Rd)  # a new tensor: unties
        new.config.tie_word_embeddings = False
        final_norm.weight.fill_(1.0)
    new.config.name_or_path = f"{view.name}-{'rotated' if rotate else 'permuted'}-{seed}"
    return new.eval(), CopyTruth(R, head_perms, kv_perms, ff_perms)
