"""Hook points: capture or overwrite activations by canonical name.

Names are ``blocks.{layer}.{point}`` with these points (shapes for batch B,
positions T):

===============  ==================  =============================================
point            shape               what it is
===============  ==================  =============================================
``resid_pre``    (B, T, d_model)     residual stream entering the block
``resid_mid``    (B, T, d_model)     after the attention update (pre-norm models:
                                     ``resid_pre + attn_out``; BERT: after its norm)
``resid_post``   (B, T, d_model)     residual stream leaving the block
``attn_out``     (B, T, d_model)     attention block output, before the residual add
``attn_heads``   (B, T, H, d_model)  per-head outputs; ``attn_out = sum_h + b_O``
``attn_scores``  (B, H, T, T_k)      pre-softmax scores, mask included
``mlp_out``      (B, T, d_model)     FF block output, before the residual add
``ff_coeffs``    (B, T, d_ff)        FF coefficients m_i (input of the output projection)
===============  ==================  =============================================

Hooks only exist inside the ``capture``/``overwrite`` context managers, which
always remove them, also when the body raises. They nest.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

if TYPE_CHECKING:
    from lmscope.arch import ModelView

Tensor = torch.Tensor
Edit = Callable[[Tensor], "Tensor | None"]

POINTS = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "attn_heads",
    "attn_scores",
    "mlp_out",
    "ff_coeffs",
)

ATTN_IMPLEMENTATION = "lmscope_eager"

# id(attention module) -> functions applied in turn to its pre-softmax scores
_SCORE_EDITS: dict[int, list[Edit]] = {}


def scored_eager_attention(
    module: nn.Module,
    query: Tensor,  # (B, H, Tq, dh)
    key: Tensor,  # (B, Hkv, Tk, dh)
    value: Tensor,  # (B, Hkv, Tk, dh)
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """Eager attention whose pre-softmax scores pass through the active score hooks."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale  # (B, H, Tq, Tk)
    scores = scores + causal_or_given_mask(module, attention_mask, scores)
    for edit in _SCORE_EDITS.get(id(module), ()):
        result = edit(scores)
        if result is not None:
            scores = result
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, Tq, H, dh)
    return out, weights


def causal_or_given_mask(module: nn.Module, mask: Tensor | None, scores: Tensor) -> Tensor:
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


AttentionInterface.register(ATTN_IMPLEMENTATION, scored_eager_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, eager_mask)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, new):
    return (new, *output[1:]) if isinstance(output, tuple) else new


class HookPoints:
    """The hook points of one :class:`~lmscope.arch.ModelView`."""

    def __init__(self, view: "ModelView"):
        self.view = view

    def names(self, layer: int | None = None) -> list[str]:
        layers = range(self.view.cfg.n_layers) if layer is None else [layer]
        return [f"blocks.{l}.{p}" for l in layers for p in POINTS]

    def parse(self, name: str) -> tuple[int, str]:
        """``'blocks.3.mlp_out'`` -> ``(3, 'mlp_out')``, with a clear error for bad names."""
        parts = name.split(".")
        n = self.view.cfg.n_layers
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"Bad hook name '{name}': expected 'blocks.<layer>.<point>', e.g. 'blocks.0.mlp_out'.")
        layer, point = int(parts[1]), parts[2]
        if not 0 <= layer < n:
            raise ValueError(f"Bad hook name '{name}': layer {layer} does not exist (layers 0..{n - 1}).")
        if point not in POINTS:
            raise ValueError(f"Bad hook name '{name}': unknown point '{point}'. Points: {', '.join(POINTS)}.")
        return layer, point

    # -- public context managers ---------------------------------------------------
    @contextmanager
    def capture(self, names, detach: bool = True) -> Iterator[dict[str, Tensor]]:
        if isinstance(names, str):
            names = [names]
        cache: dict[str, Tensor] = {}

        def recorder(name: str) -> Edit:
            def record(t: Tensor) -> None:
                cache[name] = t.detach() if detach else t

            return record

        with ExitStack() as stack:
            for name in names:
                layer, point = self.parse(name)
                stack.enter_context(self._hook(layer, point, recorder(name)))
            yield cache

    @contextmanager
    def overwrite(self, edits: dict) -> Iterator[None]:
        with ExitStack() as stack:
            for name, value in edits.items():
                layer, point = self.parse(name)
                stack.enter_context(self._hook(layer, point, _as_edit(name, value)))
            yield

    # -- one hook ------------------------------------------------------------------
    @contextmanager
    def _hook(self, layer: int, point: str, edit: Edit) -> Iterator[None]:
        """Apply ``edit`` to ``point`` of ``layer`` while inside; always clean up."""
        if point == "attn_scores":
            with self._score_hook(layer, edit):
                yield
            return
        handles = getattr(self, f"_register_{point}")(layer, edit)
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _module(self, layer: int, path: str) -> nn.Module:
        return self.view.blocks[layer].get_submodule(path)

    def _register_resid_pre(self, layer, edit):
        def pre(module, args, kwargs):
            if args:
                new = edit(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = edit(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return [self.view.blocks[layer].register_forward_pre_hook(pre, with_kwargs=True)]

    def _register_resid_post(self, layer, edit):
        def post(module, args, output):
            new = edit(_first(output))
            return None if new is None else _replace_first(output, new)

        return [self.view.blocks[layer].register_forward_hook(post)]

    def _output_hook(self, module: nn.Module, edit: Edit):
        def post(mod, args, output):
            new = edit(_first(output))
            return None if new is None else _replace_first(output, new)

        return [module.register_forward_hook(post)]

    def _register_attn_out(self, layer, edit):
        return self._output_hook(self._module(layer, self.view.family.attn_out_proj), edit)

    def _register_mlp_out(self, layer, edit):
        return self._output_hook(self._module(layer, self.view.family.ff_out), edit)

    def _register_ff_coeffs(self, layer, edit):
        def pre(module, args):
            new = edit(args[0])
            return None if new is None else (new, *args[1:])

        return [self._module(layer, self.view.family.ff_out).register_forward_pre_hook(pre)]

    def _register_attn_heads(self, layer, edit):
        lv = self.view.layers[layer]
        cfg = self.view.cfg

        def post(module, args, output):
            z = args[0]  # (B, T, H*dh)
            heads = torch.einsum(
                "bthk,hkd->bthd", z.reshape(*z.shape[:-1], cfg.n_heads, cfg.d_head), lv.W_O.to(z.dtype)
            )  # (B, T, H, d_model)
            new = edit(heads)
            if new is None:
                return None
            out = new.sum(dim=-2)
            return out + lv.b_O if lv.b_O is not None else out

        return [self._module(layer, self.view.family.attn_out_proj).register_forward_hook(post)]

    def _register_resid_mid(self, layer, edit):
        family = self.view.family
        if family.resid_mid_module is not None:  # post-norm: a module outputs it
            return self._output_hook(self._module(layer, family.resid_mid_module), edit)
        # pre-norm: resid_mid = resid_pre + attn_out; an edit changes attn_out by the difference
        state: dict[str, Tensor] = {}

        def pre(module, args, kwargs):
            state["resid_pre"] = args[0] if args else kwargs["hidden_states"]

        def post(module, args, output):
            attn_out = _first(output)
            mid = state["resid_pre"] + attn_out
            new = edit(mid)
            return None if new is None else _replace_first(output, new - state["resid_pre"])

        return [
            self.view.blocks[layer].register_forward_pre_hook(pre, with_kwargs=True),
            self._module(layer, family.attn_out_proj).register_forward_hook(post),
        ]

    @contextmanager
    def _score_hook(self, layer: int, edit: Edit) -> Iterator[None]:
        attn = self._module(layer, self.view.family.attn)
        self._use_scored_attention(+1)  # first: it may refuse
        edits = _SCORE_EDITS.setdefault(id(attn), [])
        edits.append(edit)
        try:
            yield
        finally:
            edits.remove(edit)
            if not edits:
                del _SCORE_EDITS[id(attn)]
            self._use_scored_attention(-1)

    def _use_scored_attention(self, delta: int) -> None:
        """Switch the model to the scored eager attention while any score hook is active.

        The count lives on the model, so several views of one model share it.
        """
        model = self.view.model
        users = getattr(model, "_lmscope_score_users", 0)
        from lmscope.topk_patch import ATTN_NAME as TOPK_ATTENTION

        if delta > 0 and model.config._attn_implementation == TOPK_ATTENTION:
            raise ValueError(
                "attn_scores hooks need the model's scored eager attention, but top-k attention is active "
                "(use_topk_attention); read or edit the scores outside that block, e.g. keep the top k with "
                "an attn_scores overwrite (lmscope.topk_study.keep_topk_scores)"
            )
        if delta > 0 and users == 0:
            model._lmscope_saved_attn = model.config._attn_implementation
            model.set_attn_implementation(ATTN_IMPLEMENTATION)
        model._lmscope_score_users = users + delta
        if delta < 0 and users + delta == 0:
            model.set_attn_implementation(model._lmscope_saved_attn)


def _as_edit(name: str, value) -> Edit:
    if callable(value):
        return value
    if isinstance(value, torch.Tensor):

        def replace(t: Tensor) -> Tensor:
            if value.shape != t.shape and torch.broadcast_shapes(value.shape, t.shape) != t.shape:
                raise ValueError(f"Overwrite of '{name}': shape {tuple(value.shape)} does not fit {tuple(t.shape)}.")
            return value.to(t.dtype).expand_as(t)

        return replace
    raise TypeError(f"Overwrite of '{name}' needs a tensor or a function tensor -> tensor, got {type(value).__name__}.")
