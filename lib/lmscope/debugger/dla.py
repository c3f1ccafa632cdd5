"""Exact direct logit attribution: a logit (or a logit difference) split into the embedding, every
attention head, every FF value ``m_i v_i`` and the biases, at any number of positions in one call.

At one position the final norm divides the residual by one number, so frozen at that number
(:func:`lmscope.core.norms.frozen_norm`) it is linear and the logit of token ``t`` is a sum over
the parts ``p`` of the residual, ``logit_t = sum_p p . d + c`` with ``d = apply^T W_U[:, t]``
(the adjoint of the frozen norm applied to the unembedding column) and ``c`` the norm's bias
read by ``W_U[:, t]`` plus ``b_U[t]``. Families with a norm after a sub-block (Gemma 2/3, OLMo 2:
``Family.post_attn_norm`` / ``post_ff_norm``) freeze that norm too, at the sub-block's raw output
(the ``attn_out`` / ``mlp_out`` hook points), so a head's or a value's part is its raw vector read
along the adjoint of that norm. The parts then sum to the model's logit to float tolerance.

What is decomposed is the logit the unembedding gives (``view.unembed(resid, softcap=False)``); a
model that soft-caps its logits afterwards (Gemma 2: ``c * tanh(logit / c)``, monotone) is
decomposed before the cap. A masked LM's head (BERT: dense,
GELU, LayerNorm) is not linear at a token and is refused.

>>> attr = direct_logit_attribution(view, ids, target=paris_id)   # doctest: +SKIP
>>> attr.total() - attr.logit                                     # doctest: +SKIP
tensor([0., 0., ...])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from lmscope.core.hooks import hook_name
from lmscope.debugger.interventions import value_name

Tensor = torch.Tensor


@dataclass
class Attribution:
    """The parts of one logit (or logit difference) at each of P positions.

    Shapes: ``embed``, ``final_bias``, ``logit`` (P,); ``heads`` (L, H, P); ``values``
    (L, d_ff, P); ``attn_bias``, ``ff_bias`` (L, P) (b_O and b_ff_out, plus post-norm biases).
    ``final_bias`` is the final norm's bias read by the unembedding plus ``b_U``; ``logit`` is the
    model's own logit (difference), which :meth:`total` reproduces.
    """

    positions: list[int]
    targets: list[int]
    foils: list[int] | None
    embed: Tensor
    heads: Tensor
    values: Tensor
    attn_bias: Tensor
    ff_bias: Tensor
    final_bias: Tensor
    logit: Tensor
    tokens: list[str] | None = None

    def total(self) -> Tensor:
        """The sum of every part at each position: (P,)."""
        return (self.embed + self.heads.sum((0, 1)) + self.values.sum((0, 1)) + self.attn_bias.sum(0)
                + self.ff_bias.sum(0) + self.final_bias)

    def layer_table(self) -> Tensor:
        """Per (layer, component, position) sums: (L, 2, P), component 0 = attention, 1 = FF."""
        attn = self.heads.sum(1) + self.attn_bias
        ff = self.values.sum(1) + self.ff_bias
        return torch.stack([attn, ff], dim=1)

    def _column(self, position: int) -> int:
        if position in self.positions:
            return self.positions.index(position)
        if -len(self.positions) <= position < 0 and self.positions == sorted(self.positions):
            return len(self.positions) + position
        raise IndexError(f"Position {position} was not attributed; attributed positions: {self.positions}.")

    def top(self, position: int = -1, n: int = 10, kind: str = "all") -> list[tuple[str, float]]:
        """The ``n`` parts with the largest |contribution| at ``position``: ``[(name, value)]``.

        Names: ``L3H2`` (head), ``L12D34`` (FF value), ``embed``, ``L3 attn bias``, ``L3 FF bias``,
        ``final bias``; ``kind`` is ``"all"``, ``"heads"`` or ``"values"``.
        """
        if kind not in ("all", "heads", "values"):
            raise ValueError(f"kind={kind!r}: use 'all', 'heads' or 'values'.")
        c = self._column(position)
        parts: list[tuple[str, Tensor]] = []
        if kind in ("all", "heads"):
            parts.append(("head", self.heads[..., c].flatten()))
        if kind in ("all", "values"):
            parts.append(("value", self.values[..., c].flatten()))
        names, scores = [], []
        for what, flat in parts:
            k = min(n, flat.numel())
            idx = flat.abs().topk(k).indices.tolist()
            width = self.heads.shape[1] if what == "head" else self.values.shape[1]
            for i in idx:
                layer, unit = divmod(i, width)
                names.append(f"L{layer}H{unit}" if what == "head" else value_name(layer, unit))
                scores.append(float(flat[i]))
        if kind == "all":
            names.append("embed")
            scores.append(float(self.embed[c]))
            for layer in range(self.attn_bias.shape[0]):
                names += [f"L{layer} attn bias", f"L{layer} FF bias"]
                scores += [float(self.attn_bias[layer, c]), float(self.ff_bias[layer, c])]
            names.append("final bias")
            scores.append(float(self.final_bias[c]))
        order = sorted(range(len(names)), key=lambda i: -abs(scores[i]))[:n]
        return [(names[i], scores[i]) for i in order]

    def rows(self, n_values: int | None = 50) -> list[dict]:
        """Flat rows ``{position, token, layer, component, name, value}`` for export: every head,
        bias and the embedding, and per position the ``n_values`` FF values of largest |value|
        (all of them with ``None``)."""
        out = []
        L, H, _ = self.heads.shape
        for c, pos in enumerate(self.positions):
            tok = None if self.tokens is None else self.tokens[pos]
            base = {"position": pos, "token": tok, "target": self.targets[c],
                    "foil": None if self.foils is None else self.foils[c]}
            out.append({**base, "layer": None, "component": "embed", "name": "embed", "value": float(self.embed[c])})
            for layer in range(L):
                for h in range(H):
                    out.append({**base, "layer": layer, "component": "head", "name": f"L{layer}H{h}",
                                "value": float(self.heads[layer, h, c])})
                out.append({**base, "layer": layer, "component": "attn bias", "name": f"L{layer} attn bias",
                            "value": float(self.attn_bias[layer, c])})
                out.append({**base, "layer": layer, "component": "FF bias", "name": f"L{layer} FF bias",
                            "value": float(self.ff_bias[layer, c])})
            flat = self.values[..., c].flatten()
            k = flat.numel() if n_values is None else min(n_values, flat.numel())
            for i in flat.abs().topk(k).indices.tolist():
                layer, unit = divmod(i, self.values.shape[1])
                out.append({**base, "layer": layer, "component": "value", "name": value_name(layer, unit),
                            "value": float(flat[i])})
            out.append({**base, "layer": None, "component": "final bias", "name": "final bias",
                        "value": float(self.final_bias[c])})
        return out


def _adjoint(apply: Callable[[Tensor], Tensor], u: Tensor) -> Tensor:
    """``apply^T u`` for a linear ``apply`` on (P, d) rows: (P, d)."""
    with torch.enable_grad():
        x = torch.zeros_like(u, requires_grad=True)
        (grad,) = torch.autograd.grad((apply(x) * u).sum(), x)
    return grad.detach()


def _per_position(value, n: int, name: str, d_vocab: int) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: give a token id, or one id per position.")
    ids = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} ids for {n} positions: give one id, or one per position.")
    bad = [i for i in ids if not 0 <= i < d_vocab]
    if bad:
        raise IndexError(f"{name} id {bad[0]} is outside the vocabulary (0..{d_vocab - 1}).")
    return ids


def check_positions(positions, n_tokens: int, name: str = "positions") -> list[int]:
    """Positions (int, list, or None for all) -> indices 0..n_tokens-1; IndexError naming the bad one."""
    if positions is None:
        return list(range(n_tokens))
    items = [positions] if isinstance(positions, int) else list(positions)
    if not items:
        raise ValueError(f"{name} is empty: give at least one position, or None for all.")
    out = []
    for p in items:
        if isinstance(p, bool) or not isinstance(p, int) or not -n_tokens <= p < n_tokens:
            raise IndexError(f"{name}: position {p!r} is outside the prompt's {n_tokens} tokens "
                             f"(0..{n_tokens - 1}, or -1 for the last).")
        out.append(p % n_tokens)
    return out


def _as_ids(input_ids) -> Tensor:
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    ids = ids.reshape(1, -1) if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must be one prompt, (pos,) or (1, pos); got shape {tuple(ids.shape)}.")
    if ids.shape[1] == 0:
        raise ValueError("The prompt is empty: give at least one token.")
    return ids


@torch.no_grad()
def direct_logit_attribution(view, input_ids, target=None, foil=None, positions: Sequence[int] | int | None = None,
                             tokens: list[str] | None = None) -> Attribution:
    """Split the logit of ``target`` (minus that of ``foil``) at each of ``positions`` into its parts.

    ``input_ids`` (pos,) or (1, pos); ``target``/``foil``: a token id, one id per position, or
    ``None`` (target: the model's own top prediction at each position; foil: none).
    ``positions``: an index, a list, or ``None`` for every position. Returns an :class:`Attribution`.
    """
    if not view.cfg.causal:
        raise ValueError(f"Direct logit attribution needs a causal LM whose read-out is one norm and the "
                         f"unembedding; {view.cfg.family}'s masked-LM head (dense, GELU, norm) is not linear.")
    cfg, family = view.cfg, view.family
    ids = _as_ids(input_ids).to(view.device)
    pos = check_positions(positions, ids.shape[1])
    L = cfg.n_layers
    names = [hook_name(0, "resid_pre"), hook_name(L - 1, "resid_post")]
    for l in range(L):
        names += [hook_name(l, "attn_heads"), hook_name(l, "ff_coeffs"), hook_name(l, "attn_out"),
                  hook_name(l, "mlp_out")]
    logits, cache = view.run_with_cache(ids, names)
    at = {n: t[0, pos] for n, t in cache.items()}  # each (P, ...)
    x_final = at[hook_name(L - 1, "resid_post")]
    dtype = x_final.dtype
    targets = _per_position(target, len(pos), "target", cfg.d_vocab)
    if targets is None:
        targets = logits[0, pos].argmax(-1).tolist()
    foils = _per_position(foil, len(pos), "foil", cfg.d_vocab)

    W_U = view.W_U.detach().to(dtype)
    u = W_U[:, targets].T  # (P, d)
    b_u = torch.zeros(len(pos), dtype=dtype, device=u.device)
    if view.b_U is not None:
        b_u = view.b_U.detach().to(dtype)[targets]
    if foils is not None:
        u = u - W_U[:, foils].T
        if view.b_U is not None:
            b_u = b_u - view.b_U.detach().to(dtype)[foils]

    apply_f, bias_f = view.frozen_norm(view.final_norm, x_final)
    d_final = _adjoint(apply_f, u)  # (P, d)
    final_bias = (bias_f.detach() * u).sum(-1) + b_u

    heads, values, attn_bias, ff_bias = [], [], [], []
    for l in range(L):
        lv, block = view.layers[l], view.blocks[l]
        d_attn = d_ff = d_final
        post_attn = torch.zeros(len(pos), dtype=dtype, device=u.device)
        post_ff = torch.zeros_like(post_attn)
        if family.post_attn_norm is not None:
            apply, bias = view.frozen_norm(block.get_submodule(family.post_attn_norm), at[hook_name(l, "attn_out")])
            d_attn, post_attn = _adjoint(apply, d_final), (bias.detach() * d_final).sum(-1)
        if family.post_ff_norm is not None:
            apply, bias = view.frozen_norm(block.get_submodule(family.post_ff_norm), at[hook_name(l, "mlp_out")])
            d_ff, post_ff = _adjoint(apply, d_final), (bias.detach() * d_final).sum(-1)
        h = at[hook_name(l, "attn_heads")]  # (P, H, d)
        heads.append(torch.einsum("phd,pd->hp", h, d_attn))
        b_o = lv.b_O
        attn_bias.append(post_attn + (0 if b_o is None else d_attn @ b_o.detach().to(dtype)))
        m = at[hook_name(l, "ff_coeffs")]  # (P, d_ff)
        values.append((lv.ff_values.detach().to(dtype) @ d_ff.T) * m.T)  # (d_ff, P)
        b_f = lv.b_ff_out
        ff_bias.append(post_ff + (0 if b_f is None else d_ff @ b_f.detach().to(dtype)))

    own = view.unembed(x_final, softcap=False).to(dtype)  # (P, V): the logits the parts decompose (before a cap)
    logit = own[torch.arange(len(pos)), targets]
    if foils is not None:
        logit = logit - own[torch.arange(len(pos)), foils]
    embed = (at[hook_name(0, "resid_pre")] * d_final).sum(-1)
    return Attribution(pos, targets, foils, embed, torch.stack(heads), torch.stack(values),
                       torch.stack(attn_bias), torch.stack(ff_bias), final_bias, logit, tokens)
