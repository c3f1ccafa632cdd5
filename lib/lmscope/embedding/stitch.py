"""Zero-shot stitching of two models through the vocabulary (Dar et al., section 5.2).

Model B's residual stream after layer ``l`` (n, T, d_B) is mapped into model A's basis with
``M = E_B[:, S] pinv(E_A[:, S])`` (``"pinv"``; ``"transpose"`` uses ``E_A^T`` scaled for
``pinv(E_A)``; ``"raw"`` is the naive control ``M = I``), over the vocabulary columns ``S``
(e.g. the tokens both models saw in training), and replaces A's own residual there; A's
remaining layers, final norm and unembedding (and a classifier trained on A's features) then
run on it. No example of B is used to fit anything. :func:`stitch_table` scores next-token
accuracy and a classifier's accuracy for every layer and map.
"""

from __future__ import annotations

import numpy as np
import torch

from lmscope.core.hooks import hook_name
from lmscope.core.view import ModelView

Tensor = torch.Tensor
MAPS = ("pinv", "transpose", "raw")


def stitch_map(view_from: ModelView, view_to: ModelView, method: str = "pinv", tokens: Tensor | None = None) -> Tensor:
    """(d_from, d_to) matrix taking ``view_from``'s residual basis to ``view_to``'s, float32."""
    if method not in MAPS:
        raise ValueError(f"Unknown map '{method}': use one of {', '.join(MAPS)}.")
    E_f, E_t = view_from.W_U.detach().double(), view_to.W_U.detach().double()  # (d, V)
    if E_f.shape[1] != E_t.shape[1]:
        raise ValueError(f"The models do not share a vocabulary: {E_f.shape[1]} vs {E_t.shape[1]} tokens.")
    if method == "raw":
        if E_f.shape[0] != E_t.shape[0]:
            raise ValueError(f"The raw map needs the same d_model, got {E_f.shape[0]} and {E_t.shape[0]}.")
        return torch.eye(E_f.shape[0])
    if tokens is not None:
        E_f, E_t = E_f[:, tokens], E_t[:, tokens]
    if method == "pinv":
        return (E_f @ torch.linalg.pinv(E_t)).float()
    return (E_f @ E_t.T / (E_t.square().sum() / E_t.shape[0])).float()


@torch.no_grad()
def stitched_run(view_a: ModelView, blocks: Tensor, view_b: ModelView | None = None, layer: int = 0,
                 M: Tensor | None = None, batch: int = 32) -> tuple[float, Tensor]:
    """Run A on ``blocks`` (n, T), with B's mapped residual after ``layer`` if ``view_b`` is given.

    Returns A's next-token accuracy (share of positions whose argmax is the next token) and
    sentence features (n, d_A): the mean over positions of A's final-normed last residual.
    Runs ``batch`` blocks at a time (logits are never all held).
    """
    last = hook_name(view_a.cfg.n_layers - 1, "resid_post")
    hits, feats = 0, []
    for i in range(0, len(blocks), batch):
        x = blocks[i: i + batch].to(view_a.device)
        edits = {}
        if view_b is not None:
            name = hook_name(view_b.layer(layer).index, "resid_post")
            _, cache_b = view_b.run_with_cache(x.to(view_b.device), [name])
            mapped = (cache_b[name].float() @ M.to(cache_b[name].device)).to(view_a.W_U.dtype)
            edits = {hook_name(view_a.layer(layer).index, "resid_post"): mapped}
        with view_a.overwrite(edits), view_a.capture([last]) as cache:
            logits = view_a.model(input_ids=x).logits
        hits += int((logits[:, :-1].argmax(-1) == x[:, 1:]).sum())
        feats.append(view_a.final_norm(cache[last]).float().mean(1).cpu())
    return hits / (len(blocks) * (blocks.shape[1] - 1)), torch.cat(feats)


def unigram_accuracy(train: Tensor, test: Tensor) -> float:
    """Next-token accuracy of always predicting the training text's most frequent token."""
    top = torch.bincount(train.flatten()).argmax()
    return float((test[:, 1:] == top).float().mean())


class SoftmaxProbe:
    """Multinomial logistic regression on features (L-BFGS, L2), standardised inside."""

    def __init__(self, X: Tensor, y: Tensor, n_classes: int, l2: float = 1e-3, steps: int = 200):
        if len(y) == 0:
            raise ValueError("Cannot fit a classifier on an empty dataset.")
        X = X.float()
        self.mu, self.sd = X.mean(0), X.std(0).clamp_min(1e-6)
        Z = (X - self.mu) / self.sd
        self.W = torch.zeros(X.shape[1], n_classes, requires_grad=True)
        self.b = torch.zeros(n_classes, requires_grad=True)
        opt = torch.optim.LBFGS([self.W, self.b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Z @ self.W + self.b, y) + l2 * self.W.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.W, self.b = self.W.detach(), self.b.detach()

    def accuracy(self, X: Tensor, y: Tensor) -> float:
        pred = (((X.float() - self.mu) / self.sd) @ self.W + self.b).argmax(-1)
        return float((pred == y).float().mean())


def stitch_table(view_a: ModelView, view_b: ModelView, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 layers=None, maps=MAPS, tokens: Tensor | None = None) -> list[dict]:
    """Rows ``{"layer", "map", "next-token accuracy", "classifier accuracy"}`` on ``test``.

    ``train``/``test`` are (blocks (n, T), labels (n,)). A classifier is fitted on A's features of
    the training blocks; the first rows are chance (majority class), A alone and B alone
    (next-token accuracy of B's own model), then one row per stitched layer and map.
    """
    (Xtr, ytr), (Xte, yte) = train, test
    n_classes = int(max(ytr.max(), yte.max())) + 1
    _, f_train = stitched_run(view_a, Xtr)
    probe = SoftmaxProbe(f_train, ytr, n_classes)
    acc_a, f_a = stitched_run(view_a, Xte)
    acc_b, _ = stitched_run(view_b, Xte)
    counts = np.bincount(yte.numpy(), minlength=n_classes)
    rows = [{"layer": "-", "map": "chance (majority class / most frequent token)",
             "next-token accuracy": unigram_accuracy(Xtr, Xte), "classifier accuracy": float(counts.max() / counts.sum())},
            {"layer": "-", "map": "A alone", "next-token accuracy": acc_a, "classifier accuracy": probe.accuracy(f_a, yte)},
            {"layer": "-", "map": "B alone", "next-token accuracy": acc_b, "classifier accuracy": float("nan")}]
    layers = range(view_a.cfg.n_layers) if layers is None else layers
    for layer in layers:
        for method in maps:
            acc, f = stitched_run(view_a, Xte, view_b, layer, stitch_map(view_b, view_a, method, tokens))
            rows.append({"layer": int(layer), "map": method, "next-token accuracy": acc,
                         "classifier accuracy": probe.accuracy(f, yte)})
    return rows
