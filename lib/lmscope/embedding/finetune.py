"""Fine-tuning the last layer's FF values, and reading the change as tokens (Dar et al.).

:func:`finetune_last_values` trains the FF value vectors of the last layer (and a linear head)
on cached activations, exactly: changing those values changes neither the coefficients that
multiply them nor anything upstream. The delta ``theta_ft - theta_pre`` (d_ff, d_model) is then
read through the vocabulary like any value vector (:class:`lmscope.embedding.projection.Projector`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.core.hooks import hook_names
from lmscope.core.view import ModelView
from lmscope.embedding.sentiment_data import LabelledTexts, check_nonempty
from lmscope.embedding.translate import LinearProbe, mean_over_positions, text_batches

Tensor = torch.Tensor


@dataclass
class FineTune:
    """Result of :func:`finetune_last_values`: the change of the last layer's values and the head."""

    layer: int
    delta: Tensor  # (d_ff, d_model): ff_values_ft - ff_values_pre
    probe: LinearProbe
    mean_coeffs: Tensor  # (d_ff,) mean FF coefficient of that layer over the training tokens
    losses: list[float]

    def mean_update(self) -> Tensor:
        """The average change of the FF output caused by fine-tuning: mean_coeffs @ delta, (d_model,)."""
        return self.mean_coeffs @ self.delta

    def top_units(self, n: int = 5) -> Tensor:
        """Units whose value vectors moved most (by the norm of their delta): (n,)."""
        return self.delta.norm(dim=1).topk(n).indices


@torch.no_grad()
def _last_layer_cache(view: ModelView, tokenizer, texts: list[str], batch_size: int):
    """The last layer's index, resid_mid (N, T, d_model), ff_coeffs (N, T, d_ff) and mask (N, T), padded."""
    layer = view.cfg.n_layers - 1
    names = hook_names(["resid_mid", "ff_coeffs"], [layer])
    mids, coeffs, masks = [], [], []
    for ids, mask in text_batches(tokenizer, texts, batch_size):
        with view.capture(names) as cache:
            view.model.base_model(input_ids=ids.to(view.device), attention_mask=mask.to(view.device))
        mids += list(cache[names[0]].float().cpu())
        coeffs += list(cache[names[1]].float().cpu())
        masks += list(mask)
    pad = torch.nn.utils.rnn.pad_sequence
    return layer, pad(mids, batch_first=True), pad(coeffs, batch_first=True), pad(masks, batch_first=True)


def finetune_last_values(view: ModelView, tokenizer, data: LabelledTexts, steps: int = 200, lr: float = 1e-3,
                         batch_size: int = 32, seed: int = 0) -> FineTune:
    """Fine-tune the last layer's FF values and a linear head for sentiment, on cached activations.

    The residual after the last layer is ``resid_mid + m @ (V + delta) + b``; ``m`` and
    ``resid_mid`` do not depend on ``V``, so they are computed once and training is exact
    and cheap. Adam on ``delta`` and the head, full-batch steps.
    """
    check_nonempty(data, "training set")
    layer, mid, m, mask = _last_layer_cache(view, tokenizer, data.texts, batch_size)
    device, dtype = view.device, view.W_U.dtype
    lv = view.layers[layer]
    V = lv.ff_values.detach().float()
    b_ff = lv.b_ff_out.detach().float() if lv.b_ff_out is not None else 0.0
    mid, m, mask = mid.to(device), m.to(device), mask.to(device)
    base = mid + m @ V + b_ff  # (N, T, d) residual after the layer, before any change
    y = torch.tensor(data.labels, dtype=torch.float32, device=device)
    torch.manual_seed(seed)
    delta = torch.zeros_like(V, requires_grad=True)  # (d_ff, d_model)
    w = torch.zeros(V.shape[1], device=device, requires_grad=True)
    b = torch.zeros((), device=device, requires_grad=True)
    opt = torch.optim.Adam([{"params": [delta], "lr": lr}, {"params": [w, b], "lr": 1e-2}])
    losses = []
    frozen = [(p, p.requires_grad) for p in view.final_norm.parameters()]
    for p, _ in frozen:  # the norm is part of the model: keep gradients out of it
        p.requires_grad_(False)
    try:
        _adam_steps(steps, opt, base, m, delta, dtype, view.final_norm, mask, w, b, y, losses)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    coeffs = mean_over_positions(m, mask).mean(0)
    return FineTune(layer, delta.detach().cpu(), LinearProbe(w.detach().cpu(), float(b.detach())),
                    coeffs.cpu(), losses)


def _adam_steps(steps, opt, base, m, delta, dtype, norm, mask, w, b, y, losses) -> None:
    """Full-batch Adam steps on ``delta`` and the head (w, b); appends each step's loss to ``losses``."""
    for _ in range(steps):
        opt.zero_grad()
        h = base + m @ delta  # (N, T, d)
        f = mean_over_positions(norm(h.to(dtype)).float(), mask)  # (N, d)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(f @ w + b, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
