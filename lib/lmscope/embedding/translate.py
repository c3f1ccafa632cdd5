"""Translating a classifier between models through embedding space, and fine-tuning deltas as tokens.

A linear classifier reads sentence features ``f`` (d_model): the mean over positions of a
layer's residual through the final norm, i.e. what the unembedding reads. Model A's
features relate to model B's through the shared vocabulary: ``f_A E_A ~ f_B E_B``, so
``f_A ~ f_B E_B pinv(E_A)`` and a classifier ``w_A`` becomes ``w_B = E_B pinv(E_A) w_A``
(``method="pinv"``) or, with ``E^T`` for ``E^+`` as the paper does in practice,
``E_B E_A^T w_A`` up to a scale (``method="transpose"``). No example of model B is used.
``raw_transfer`` is the naive control: the same weights in B's raw coordinates.

Fine-tuning deltas: :func:`finetune_last_values` trains the FF value vectors of the last
layer (and a linear head) on cached activations, exactly: changing those values changes
neither the coefficients that multiply them nor anything upstream. The delta
``theta_ft - theta_pre`` is then read through the vocabulary like any value vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.embedding.alignment import check_shared_vocabulary
from lmscope.embedding.sentiment_data import LabelledTexts, check_nonempty

Tensor = torch.Tensor
METHODS = ("pinv", "transpose")


# -- features ------------------------------------------------------------------------------
def _batches(tokenizer, texts: list[str], batch_size: int):
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        yield enc.input_ids, enc.attention_mask


def _pool(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real positions: x (B, T, d), mask (B, T) -> (B, d)."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1)


@torch.no_grad()
def sentence_features(view, tokenizer, texts: list[str], layer: int = -1, batch_size: int = 32) -> Tensor:
    """Mean-pooled final-normed residual after ``layer`` for each text: (n_texts, d_model) float32."""
    if len(texts) == 0:
        raise ValueError("No texts to compute features of: the dataset is empty.")
    layer = view.layer(layer).index
    name = f"blocks.{layer}.resid_post"
    out = []
    for ids, mask in _batches(tokenizer, texts, batch_size):
        with view.capture([name]) as cache:
            view.model.base_model(input_ids=ids.to(view.device), attention_mask=mask.to(view.device))
        normed = view.final_norm(cache[name]).float().cpu()  # (B, T, d)
        out.append(_pool(normed, mask))
    return torch.cat(out)


# -- a linear classifier -----------------------------------------------------------------------
@dataclass
class LinearProbe:
    """Binary logistic classifier on features: ``p(positive) = sigmoid(f @ w + b)``."""

    w: Tensor  # (d_model,)
    b: float = 0.0

    def scores(self, X: Tensor) -> Tensor:
        return X.float() @ self.w.float() + self.b

    def accuracy(self, X: Tensor, y) -> float:
        y = torch.as_tensor(y)
        return float(((self.scores(X) > 0).long() == y).float().mean())


def fit_probe(X: Tensor, y, l2: float = 1e-3, steps: int = 100) -> LinearProbe:
    """Logistic regression with an L2 penalty, fitted with L-BFGS: X (n, d), y (n,) in {0, 1}."""
    y = torch.as_tensor(y, dtype=torch.float32)
    if len(y) == 0:
        raise ValueError("Cannot fit a classifier on an empty dataset.")
    X = X.float()
    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)  # standardise for conditioning, fold back afterwards
    Z = (X - mu) / sd
    w = torch.zeros(X.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / sd).detach()
    return LinearProbe(w_raw, float(b.detach() - mu @ w_raw))


# -- translation ---------------------------------------------------------------------------
def feature_map(view_from, view_to, method: str = "pinv") -> Tensor:
    """(d_from, d_to) matrix M with ``f_to ~ f_from @ M`` through the vocabulary: ``E_from pinv(E_to)``."""
    if method not in METHODS:
        raise ValueError(f"Unknown method '{method}': use 'pinv' (E^+) or 'transpose' (E^T).")
    check_shared_vocabulary(view_from, view_to)
    E_from = view_from.W_U.detach().double()  # (d_from, V)
    E_to = view_to.W_U.detach().double()  # (d_to, V)
    if method == "pinv":
        return (E_from @ torch.linalg.pinv(E_to)).float()
    scale = (E_to.square().sum() / E_to.shape[0])  # E_to E_to^T ~ scale * I
    return (E_from @ E_to.T / scale).float()


def translate_probe(probe: LinearProbe, view_a, view_b, method: str = "pinv") -> LinearProbe:
    """A classifier trained on model A's features, rewritten for model B's: ``w_B = E_B pinv(E_A) w_A``."""
    return LinearProbe(feature_map(view_b, view_a, method) @ probe.w.float(), probe.b)


def raw_transfer(probe: LinearProbe, view_b) -> LinearProbe:
    """The naive control: A's weights used as they are on B's raw feature coordinates."""
    if view_b.cfg.d_model != probe.w.shape[0]:
        raise ValueError(f"Raw transfer needs the same d_model ({probe.w.shape[0]} vs {view_b.cfg.d_model}).")
    return LinearProbe(probe.w.clone(), probe.b)


# -- fine-tuning the last layer's values ----------------------------------------------------------
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
def _last_layer_cache(view, tokenizer, texts, batch_size):
    layer = view.cfg.n_layers - 1
    names = [f"blocks.{layer}.resid_mid", f"blocks.{layer}.ff_coeffs"]
    mids, coeffs, masks = [], [], []
    for ids, mask in _batches(tokenizer, texts, batch_size):
        with view.capture(names) as cache:
            view.model.base_model(input_ids=ids.to(view.device), attention_mask=mask.to(view.device))
        mids += list(cache[names[0]].float().cpu())
        coeffs += list(cache[names[1]].float().cpu())
        masks += list(mask)
    pad = torch.nn.utils.rnn.pad_sequence
    return layer, pad(mids, batch_first=True), pad(coeffs, batch_first=True), pad(masks, batch_first=True)


def finetune_last_values(view, tokenizer, data: LabelledTexts, steps: int = 200, lr: float = 1e-3,
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
        _train(steps, opt, base, m, delta, dtype, view.final_norm, mask, w, b, y, losses)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    coeffs = _pool(m, mask).mean(0)
    return FineTune(layer, delta.detach().cpu(), LinearProbe(w.detach().cpu(), float(b.detach())),
                    coeffs.cpu(), losses)


def _train(steps, opt, base, m, delta, dtype, norm, mask, w, b, y, losses) -> None:
    for _ in range(steps):
        opt.zero_grad()
        h = base + m @ delta  # (N, T, d)
        f = _pool(norm(h.to(dtype)).float(), mask)  # (N, d)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(f @ w + b, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
