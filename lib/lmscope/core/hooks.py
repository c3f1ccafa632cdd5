"""Hook points: capture or overwrite activations by canonical name.

Names are built by :func:`hook_name` (``blocks.{layer}.{point}``) with these points
(shapes for batch B, positions T):

===============  ==================  =============================================
point            shape               what it is
===============  ==================  =============================================
``resid_pre``    (B, T, d_model)     residual stream entering the block
``resid_mid``    (B, T, d_model)     after the attention update (pre-norm models:
                                     ``resid_pre + attn_resid``; BERT: after its norm)
``resid_post``   (B, T, d_model)     residual stream leaving the block
``attn_out``     (B, T, d_model)     attention sub-block's raw output (W_O's output),
                                     the sum of the heads and b_O
``attn_resid``   (B, T, d_model)     what attention adds to the residual: ``attn_out``,
                                     or ``post_attn_norm(attn_out)`` (Gemma 2/3, OLMo 2)
``attn_heads``   (B, T, H, d_model)  per-head raw outputs; ``attn_out = sum_h + b_O``
``attn_scores``  (B, H, T, T_k)      pre-softmax scores, mask included (the model runs
                                     the scored eager attention of
                                     :mod:`lmscope.core.attention` while such a hook is
                                     active)
``mlp_out``      (B, T, d_model)     FF sub-block's raw output, ``sum_i m_i v_i + b``
``mlp_resid``    (B, T, d_model)     what the FF adds to the residual: ``mlp_out``, or
                                     ``post_ff_norm(mlp_out)`` (Gemma 2/3, OLMo 2)
``ff_coeffs``    (B, T, d_ff)        FF coefficients m_i (input of the output projection)
===============  ==================  =============================================

With a post-norm, an edit of ``attn_out``/``mlp_out`` passes through that norm (which
sees the new raw sum); an edit of ``*_resid`` replaces the norm's output.

Hooks only exist inside the ``capture``/``overwrite`` context managers, which
always remove them, also when the body raises. They nest.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn

from lmscope.core.attention import edit_scores

if TYPE_CHECKING:
    from lmscope.core.view import ModelView

Tensor = torch.Tensor
Edit = Callable[[Tensor], "Tensor | None"]

POINTS = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "attn_resid",
    "attn_heads",
    "attn_scores",
    "mlp_out",
    "mlp_resid",
    "ff_coeffs",
)


def hook_name(layer: int, point: str) -> str:
    """The name of hook point ``point`` of block ``layer``: ``hook_name(3, "mlp_out") == "blocks.3.mlp_out"``."""
    return f"blocks.{layer}.{point}"


def hook_names(points, layers) -> list[str]:
    """``hook_name`` of every (layer, point), layer by layer: ``hook_names(["resid_post"], range(3))``."""
    points = [points] if isinstance(points, str) else list(points)
    return [hook_name(layer, point) for layer in layers for point in points]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, new):
    return (new, *output[1:]) if isinstance(output, tuple) else new


class HookPoints:
    """The hook points of one :class:`~lmscope.core.view.ModelView`."""

    def __init__(self, view: "ModelView"):
        self.view = view

    def names(self, layer: int | None = None) -> list[str]:
        return hook_names(POINTS, range(self.view.cfg.n_layers) if layer is None else [layer])

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

    def _adds(self, layer: int, sub: str) -> nn.Module:
        """The module whose output sub-block ``sub`` ("attn"/"ff") adds to the residual stream."""
        f = self.view.family
        post, raw = (f.post_attn_norm, f.attn_out_proj) if sub == "attn" else (f.post_ff_norm, f.ff_out)
        return self._module(layer, raw if post is None else post)

    def _register_attn_resid(self, layer, edit):
        return self._output_hook(self._adds(layer, "attn"), edit)

    def _register_mlp_resid(self, layer, edit):
        return self._output_hook(self._adds(layer, "ff"), edit)

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
        # pre-norm: resid_mid = resid_pre + attn_resid; an edit changes attn_resid by the difference
        state: dict[str, Tensor] = {}

        def pre(module, args, kwargs):
            state["resid_pre"] = args[0] if args else kwargs["hidden_states"]

        def post(module, args, output):
            added = _first(output)
            mid = state["resid_pre"] + added
            new = edit(mid)
            return None if new is None else _replace_first(output, new - state["resid_pre"])

        return [
            self.view.blocks[layer].register_forward_pre_hook(pre, with_kwargs=True),
            self._adds(layer, "attn").register_forward_hook(post),
        ]

    @contextmanager
    def _score_hook(self, layer: int, edit: Edit) -> Iterator[None]:
        with edit_scores(self.view, self._module(layer, self.view.family.attn), edit):
            yield


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
