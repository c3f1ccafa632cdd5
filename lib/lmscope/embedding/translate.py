"""Translating a sentiment classifier between models through embedding space (Dar et al.: zero-shot stitching).

A linear classifier reads sentence features ``f`` (d_model): the mean over positions of a
layer's residual through the final norm, i.e. what the unembedding reads. Model A's
features relate to model B's through the shared vocabulary: ``f_A E_A ~ f_B E_B``, so
``f_A ~ f_B E_B pinv(E_A)`` and a classifier ``w_A`` becomes ``w_B = E_B pinv(E_A) w_A``
(``method="pinv"``) or, with ``E^T`` for ``E^+`` as the paper does in practice,
``E_B E_A^T w_A`` up to a scale (``method="transpose"``). No example of model B is used.
``raw_transfer`` is the naive control: the same weights in B's raw coordinates, and
:func:`transfer_accuracies` is the chapter's table of all of them against chance.

Reading what fine-tuning changes is :mod:`lmscope.embedding.finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmscope.core.hooks import hook_name
from lmscope.core.tensors import blas_matmul
from lmscope.core.view import ModelView
from lmscope.embedding.alignment import check_shared_vocabulary
from lmscope.embedding.projection import pinv_wide

Tensor = torch.Tensor
METHODS = ("pinv", "transpose")


# -- features ------------------------------------------------------------------------------
def text_batches(tokenizer, texts: list[str], batch_size: int):
    """Yield (input_ids, attention_mask), each (B, T), right-padded (the EOS token pads if there is no pad token)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        yield enc.input_ids, enc.attention_mask


def mean_over_positions(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real positions: x (B, T, d), mask (B, T) -> (B, d)."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1)


@torch.no_grad()
def sentence_features(view: ModelView, tokenizer, texts: list[str], layer: int = -1, batch_size: int = 32) -> Tensor:
    """Mean-pooled final-normed residual after ``layer`` for each text: (n_texts, d_model) float32."""
    if len(texts) == 0:
        raise ValueError("No texts to compute features of: the dataset is empty.")
    layer = view.layer(layer).index
    name = hook_name(layer, "resid_post")
    out = []
    for ids, mask in text_batches(tokenizer, texts, batch_size):
        with view.capture([name]) as cache:
            view.model.base_model(input_ids=ids.to(view.device), attention_mask=mask.to(view.device))
        normed = view.final_norm(cache[name]).float().cpu()  # (B, T, d)
        out.append(mean_over_positions(normed, mask))
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
def feature_map(view_from: ModelView, view_to: ModelView, method: str = "pinv",
                E_to_pinv: Tensor | None = None) -> Tensor:
    """(d_from, d_to) matrix M with ``f_to ~ f_from @ M`` through the vocabulary: ``E_from pinv(E_to)``.

    ``E_to_pinv`` (V, d_to): ``torch.linalg.pinv`` of ``view_to.W_U`` in float64 if already computed.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method '{method}': use 'pinv' (E^+) or 'transpose' (E^T).")
    check_shared_vocabulary(view_from, view_to)
    E_from = view_from.W_U.detach().double()  # (d_from, V)
    E_to = view_to.W_U.detach().double()  # (d_to, V)
    if method == "pinv":
        E_to_pinv = pinv_wide(E_to) if E_to_pinv is None else E_to_pinv.detach().double()
        return blas_matmul(E_from, E_to_pinv).float()
    scale = (E_to.square().sum() / E_to.shape[0])  # E_to E_to^T ~ scale * I
    return (blas_matmul(E_from, E_to.T) / scale).float()


def translate_probe(probe: LinearProbe, view_a: ModelView, view_b: ModelView, method: str = "pinv",
                    E_a_pinv: Tensor | None = None) -> LinearProbe:
    """A classifier trained on model A's features, rewritten for model B's: ``w_B = E_B pinv(E_A) w_A``.

    ``E_a_pinv``: ``pinv(E_A)`` (V, d_a) in float64 if already computed.
    """
    return LinearProbe(feature_map(view_b, view_a, method, E_a_pinv) @ probe.w.float(), probe.b)


def raw_transfer(probe: LinearProbe, view_b: ModelView) -> LinearProbe:
    """The naive control: A's weights used as they are on B's raw feature coordinates."""
    if view_b.cfg.d_model != probe.w.shape[0]:
        raise ValueError(f"Raw transfer needs the same d_model ({probe.w.shape[0]} vs {view_b.cfg.d_model}).")
    return LinearProbe(probe.w.clone(), probe.b)


def transfer_accuracies(probe: LinearProbe, view_a: ModelView, view_b: ModelView, X_a: Tensor, X_b: Tensor,
                        labels, E_a_pinv: Tensor | None = None) -> dict[str, float]:
    """Test accuracy of a classifier trained on A, and of its transfers to B, beside chance.

    ``X_a``/``X_b`` are the test set's :func:`sentence_features` in models A and B (n, d_a) and
    (n, d_b), ``labels`` (n,) in {0, 1}. Keys, in this order: ``"chance (majority class)"``,
    ``"A, trained"``, ``"B, translated (E^+)"``, ``"B, translated (E^T)"``, ``"B, raw transfer"``
    (NaN when the two models' d_model differ). ``E_a_pinv``: ``pinv(E_A)`` in float64 if already computed.
    """
    if len(labels) == 0:
        raise ValueError("No test labels: transfer accuracies need a non-empty test set.")
    same_width = view_b.cfg.d_model == view_a.cfg.d_model
    return {
        "chance (majority class)": float(max(np.mean(labels), 1 - np.mean(labels))),
        "A, trained": probe.accuracy(X_a, labels),
        "B, translated (E^+)": translate_probe(probe, view_a, view_b, "pinv", E_a_pinv).accuracy(X_b, labels),
        "B, translated (E^T)": translate_probe(probe, view_a, view_b, "transpose").accuracy(X_b, labels),
        "B, raw transfer": raw_transfer(probe, view_b).accuracy(X_b, labels) if same_width else float("nan"),
    }
