"""Layer-causal finetuning (LCGD) and vanilla finetuning (GD) of chosen weights.

LCGD (Deutch et al. 2024): one forward pass in which the input of every block is
detached from the blocks below (a ``resid_pre`` overwrite hook), every block's output
``resid_post`` is read through the model's final norm and unembedding (the logit
lens), and the next-token loss is summed over layers. Layer ``l``'s weights then learn
only from layer ``l``'s own loss. GD reads only the last layer (the model's output).

Cost: the read-outs are the expensive part (n_layers x positions rows against the
whole vocabulary). They are computed only at the positions the loss needs
(``loss_positions``) and in chunks of layers; because the layers' graphs are
independent under LCGD, each chunk is backpropagated on its own and freed, so memory
stays at one chunk of logits.

Which weights train (``W_Q``, ``W_K``, ``W_V``, ``W_O``, ``mlp``) and where each family keeps them
is the family table's business (:meth:`lmscope.core.families.Family.trainable`).

Read-out (``readout``): None is the logit lens (the paper's); any lens with the interface of
:mod:`lmscope.core.tuned_lens` (``lens(resid, layer) -> logits``, e.g. a trained ``TunedLens``)
reads every layer instead. The lens itself is never trained (only ``params`` require grad) and,
being applied to each layer's own residual, keeps LCGD layer-causal.

>>> params = trainable_parameters(view, ("W_K", "W_V"))                   # doctest: +SKIP
>>> losses, grads = layer_losses(view, ids, positions, "lcgd", params)    # doctest: +SKIP
>>> with finetuned(view, sequences, "lcgd", lr=1e-3) as step_losses:      # doctest: +SKIP
...     ...                                                               # the model is finetuned here
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from lmscope.core.families import TRAINABLE_WEIGHTS
from lmscope.core.hooks import hook_name
from lmscope.core.view import ModelView

Tensor = torch.Tensor
METHODS = ("gd", "lcgd")
Readout = Callable[[Tensor, int], Tensor]  # (resid (..., d_model), layer) -> logits (..., d_vocab)


class NonFiniteLossError(ValueError):
    """A finetuning step produced a non-finite loss or weights (usually: learning rate too high)."""


@dataclass
class Trainable:
    """One parameter to train; ``mask`` (same shape, 0/1) picks a slice of a fused weight.

    ``name`` is the parameter's name in ``model.named_parameters()``; ``layer`` its block.
    """

    layer: int
    name: str
    param: torch.nn.Parameter
    mask: Tensor | None = None


def trainable_parameters(view: ModelView, which: Sequence[str] = ("W_K", "W_V")) -> list[Trainable]:
    """The parameters (weights and biases) of every layer named by ``which`` (see ``TRAINABLE_WEIGHTS``).

    Layer by layer, in the order of ``which``; a fused q/k/v weight appears once, its mask
    covering every projection asked for. The family table says where each one lives
    (:meth:`lmscope.core.families.Family.trainable`).
    """
    bad = [w for w in which if w not in TRAINABLE_WEIGHTS]
    if bad or not which:
        raise ValueError(f"Unknown trainable weights {bad or which}: choose from {', '.join(TRAINABLE_WEIGHTS)}.")
    out = [Trainable(layer, f"{view.family.layers}.{layer}.{path}", param, mask)
           for layer, block in enumerate(view.blocks) for w in which
           for path, param, mask in view.family.trainable(block, view.cfg, w)]
    return _merge_masks(out)


def _merge_masks(items: list[Trainable]) -> list[Trainable]:
    """One entry per parameter (fused K and V of one weight share it: masks are added)."""
    merged: dict[int, Trainable] = {}
    for t in items:
        prev = merged.get(id(t.param))
        if prev is None:
            merged[id(t.param)] = t
        elif prev.mask is not None and t.mask is not None:
            prev.mask = (prev.mask + t.mask).clamp(max=1)
    return list(merged.values())


# -- losses ----------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown finetuning method '{method}': use 'gd' (vanilla) or 'lcgd' (layer-causal).")


def _forward_residuals(view: ModelView, input_ids: Tensor, layers: list[int], detach_inputs: bool) -> dict[int, Tensor]:
    """Run the model once; return ``resid_post`` (T, d_model) of ``layers``, attached to the graph."""
    names = {l: hook_name(l, "resid_post") for l in layers}
    edits = {}
    if detach_inputs:  # every block's input cut from the blocks below
        edits = {hook_name(l, "resid_pre"): (lambda t: t.detach()) for l in range(1, view.cfg.n_layers)}
    with view.overwrite(edits), view.capture(list(names.values()), detach=False) as cache:
        try:
            view.model(input_ids=input_ids, logits_to_keep=1)  # the model's own logits are not needed
        except TypeError:
            view.model(input_ids=input_ids)
    return {l: cache[n][0] for l, n in names.items()}


def layer_losses(
    view: ModelView,
    input_ids: Tensor,
    loss_positions: Sequence[int] | None,
    method: str = "lcgd",
    params: list[Trainable] | None = None,
    chunk_layers: int = 10,
    readout: Readout | None = None,
) -> tuple[Tensor, list[Tensor] | None]:
    """Next-token losses of one sequence, per read-out layer, and (optionally) their gradients.

    ``input_ids`` (T,) or (1, T); ``loss_positions``: positions ``t`` whose token is predicted from
    ``t - 1`` (None: every position 1..T-1). ``method`` ``"gd"``: the last layer's read-out only;
    ``"lcgd"``: every layer's, with block inputs detached. Each layer's loss is the mean NLL over
    the positions. ``readout``: None, the logit lens; else ``readout(resid, layer)`` (a tuned lens).
    Returns (losses (n_readouts,), grads of their sum w.r.t. ``params`` or None).
    """
    _check_method(method)
    ids = input_ids.reshape(1, -1).to(view.device)
    T = ids.shape[1]
    pos = list(range(1, T)) if loss_positions is None else list(loss_positions)
    if not pos or min(pos) < 1 or max(pos) >= T:
        raise ValueError(f"loss_positions must lie in 1..{T - 1} (a token is predicted from the one before it).")
    n = view.cfg.n_layers
    layers = list(range(n)) if method == "lcgd" else [n - 1]
    with _only_these_require_grad(view, params):
        resid = _forward_residuals(view, ids, layers, detach_inputs=(method == "lcgd"))
        src = torch.tensor([p - 1 for p in pos], device=ids.device)
        target = ids[0, pos]  # (P,)
        losses, grads = [], None
        tensors = [t.param for t in params] if params is not None else None
        for c in range(0, len(layers), chunk_layers):
            chunk = layers[c : c + chunk_layers]
            h = torch.stack([resid[l][src] for l in chunk])  # (C, P, d_model)
            if readout is None:
                logits = view.unembed(h)  # (C, P, d_vocab)
            else:
                logits = torch.stack([readout(h[i], l) for i, l in enumerate(chunk)])
            if logits.dtype not in (torch.float32, torch.float64):
                logits = logits.float()
            nll = F.cross_entropy(logits.flatten(0, 1), target.repeat(len(chunk)), reduction="none")
            chunk_losses = nll.view(len(chunk), -1).mean(-1)  # (C,)
            if tensors is not None:
                # LCGD chunks have independent graphs (inputs detached): free each after its backward
                retain = method == "gd" and c + chunk_layers < len(layers)
                g = torch.autograd.grad(chunk_losses.sum(), tensors, retain_graph=retain, allow_unused=True)
                grads = list(g) if grads is None else [_add_grads(a, b) for a, b in zip(grads, g)]
            losses.append(chunk_losses.detach())
    if grads is not None:
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(tensors, grads)]
    return torch.cat(losses), grads


def _add_grads(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """The sum of two gradients, either of which may be None (unused)."""
    return a if b is None else (b if a is None else a + b)


def sgd_step_(params: list[Trainable], grads: list[Tensor], lr: float) -> None:
    """In place: ``p -= lr * grad`` (masked for fused weights)."""
    with torch.no_grad():
        for t, g in zip(params, grads):
            t.param.sub_(lr * (g if t.mask is None else g * t.mask))


def finetune_(
    view: ModelView,
    sequences: Sequence[tuple[Sequence[int], Sequence[int] | None]],
    method: str,
    lr: float,
    params: list[Trainable],
    readout: Readout | None = None,
) -> list[float]:
    """In place: one SGD step per sequence ``(ids, loss_positions)``; returns the summed loss of each step.

    Raises :class:`NonFiniteLossError` when a loss or an updated weight is not finite.
    """
    _check_method(method)
    if not lr > 0:
        raise ValueError(f"Learning rate must be positive, got {lr}.")
    history = []
    for i, (ids, positions) in enumerate(sequences):
        losses, grads = layer_losses(view, torch.as_tensor(ids), positions, method, params, readout=readout)
        loss = float(losses.sum())
        if not all(torch.isfinite(g).all() for g in grads) or not torch.isfinite(losses).all():
            raise NonFiniteLossError(
                f"{method.upper()} step {i + 1}: loss {loss} is not finite (lr={lr}). Lower the learning rate."
            )
        sgd_step_(params, grads, lr)
        if not all(torch.isfinite(t.param).all() for t in params):
            raise NonFiniteLossError(
                f"{method.upper()} step {i + 1}: weights became non-finite after the update (lr={lr}). "
                "Lower the learning rate."
            )
        history.append(loss)
    return history


@contextmanager
def _only_these_require_grad(view: ModelView, params: list[Trainable] | None) -> Iterator[None]:
    """Inside: autograd on and only ``params`` require grad (no graph at all when None)."""
    if params is None:
        with torch.no_grad():
            yield
        return
    flags = [(p, p.requires_grad) for p in view.model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for t in params:
            t.param.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def finetuned(
    view: ModelView,
    sequences: Sequence[tuple[Sequence[int], Sequence[int] | None]],
    method: str,
    lr: float,
    which: Sequence[str] = ("W_K", "W_V"),
    readout: Readout | None = None,
) -> Iterator[list[float]]:
    """Context manager: the model finetuned on ``sequences`` inside, its exact weights restored after.

    Yields the per-step losses. The restore happens in ``finally``, also when training fails.
    ``readout``: as in :func:`layer_losses` (None: the logit lens).
    """
    params = trainable_parameters(view, which)
    saved = [t.param.detach().clone() for t in params]
    try:
        yield finetune_(view, sequences, method, lr, params, readout)
    finally:
        with torch.no_grad():
            for t, s in zip(params, saved):
                t.param.copy_(s)


def update_norms(params: list[Trainable], saved: list[Tensor], n_layers: int) -> Tensor:
    """Per layer, the Frobenius norm of the update ``param - saved`` over the layer's trainables, (n_layers,)."""
    sq = torch.zeros(n_layers, dtype=torch.float64)
    with torch.no_grad():
        for t, s in zip(params, saved):
            d = (t.param - s).double()
            sq[t.layer] += float(((d if t.mask is None else d * t.mask) ** 2).sum())
    return sq.sqrt()
