"""Chapter 05's read-out of the cross-vocabulary alignment: one sentence of numbers and the heatmaps.

:func:`finding` states what :func:`lmscope.embedding.cross_vocab.cross_vocab_alignment` found
(signal over the shuffled-string control, unit matches, depth order); :func:`plot_cross_vocab`
draws a layer x layer matrix beside its shuffled control; :func:`plot_lens` the logit-lens
matrix of :mod:`lmscope.embedding.cross_lens`.
"""

from __future__ import annotations

import numpy as np

from lmscope.embedding.cross_vocab import CrossVocabAlignment, levels_removed


def finding(result: CrossVocabAlignment, names=("model a", "model b"), group: str = "ff_values",
            lens: dict | None = None) -> str:
    """Sentences with the headline numbers: signal over the shuffled control, and the depth order.

    ``lens``: the chapter's logit-lens numbers (keys ``"lens: ..."``), stated last when given.
    """
    rows = {r["matrix"]: r for r in result.summary() if r["group"] == group}
    raw, lev = rows["mean |corr|"], rows["levels removed"]
    text = (f"Over {result.n_shared:,} shared token strings, {group} of {names[0]} and {names[1]} correlate "
            f"{raw['mean |corr|'] / raw['mean |corr| (shuffled)']:.1f}x more than with the string order shuffled "
            f"(mean |corr| {raw['mean |corr|']:.3f} vs {raw['mean |corr| (shuffled)']:.3f})")
    if result.units:
        real, ctrl = np.mean([u[2] for u in result.units]), np.mean([u[3] for u in result.units])
        far = np.mean([u[5] for u in result.units])
        text += (f"; Hungarian-matched FF units at the same relative depth reach |corr| {real:.3f} "
                 f"(shuffled {ctrl:.3f}, mirrored depth {far:.3f})")
    return text + (f". Depth order of the Hungarian layer matching: Spearman {raw['depth rank']:.2f} "
                   f"(p {raw['p (layer order)']:.3f} over random layer orders; shuffled strings "
                   f"{raw['depth rank (shuffled)']:.2f}), {lev['depth rank']:.2f} (p {lev['p (layer order)']:.3f}) "
                   f"once each layer's overall level is removed; the matrix is {raw['rank-1 share']:.2%} "
                   "one product of layer levels." + ("" if lens is None else
                   f" Through the logit lens, the last layers' shared-string logits correlate "
                   f"{lens['lens: last-layer corr']:.2f} (top-1 agreement {lens['lens: top-1 agreement']:.0%}; "
                   f"shuffled at most {lens['lens: max |corr| (shuffled)']:.3f}), depth rank "
                   f"{lens['lens: depth rank']:.2f} (p {lens['lens: depth rank p']:.3f})."))


def plot_cross_vocab(result: CrossVocabAlignment, group: str = "ff_values", names=("model a", "model b"),
                     levels: bool = False):
    """Figure: the layer x layer mean |corr| over shared strings beside the shuffled control (same colour scale).

    ``levels=True`` shows :func:`levels_removed` of both matrices instead.
    """
    import matplotlib.pyplot as plt

    S, C = result.sims[group], result.controls[group][0]
    if levels:
        S, C = levels_removed(S), levels_removed(C)
    lo, hi = min(S.min(), C.min()), max(S.max(), C.max())
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    for ax, M, title in ((axes[0], S, "shared strings"), (axes[1], C, "shuffled string order (control)")):
        im = ax.imshow(M, vmin=lo, vmax=hi, aspect="auto", origin="lower", cmap="viridis")
        best = M.argmax(1)
        ax.plot(best, np.arange(len(best)), "w.", ms=5, label=f"best layer of {names[1]}")
        ax.plot([0, M.shape[1] - 1], [0, M.shape[0] - 1], "w--", lw=0.8, label="same relative depth")
        ax.set_xticks(range(M.shape[1]), result.layers_b, fontsize=6)
        ax.set_yticks(range(M.shape[0]), result.layers_a, fontsize=6)
        ax.set_xlabel(f"layer of {names[1]}")
        ax.set_ylabel(f"layer of {names[0]}")
        ax.set_title(f"{group}: {title}", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.colorbar(im, ax=axes, label="log mean |corr|, levels removed" if levels else "mean |corr| over shared strings")
    return fig


def plot_lens(similarity, control, names=("model a", "model b")):
    """Figure: layer x layer correlation of the two models' logit lens over shared strings, beside the control."""
    import matplotlib.pyplot as plt

    S, C = np.asarray(similarity), np.asarray(control)
    lim = max(np.abs(S).max(), np.abs(C).max())
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    for ax, M, title in ((axes[0], S, "shared strings"), (axes[1], C, "shuffled string order (control)")):
        im = ax.imshow(M, vmin=-lim, vmax=lim, aspect="auto", origin="lower", cmap="RdBu_r")
        ax.plot(M.argmax(1), np.arange(M.shape[0]), "k.", ms=5)
        ax.plot([0, M.shape[1] - 1], [0, M.shape[0] - 1], "k--", lw=0.8)
        ax.set_xlabel(f"layer of {names[1]}")
        ax.set_ylabel(f"layer of {names[0]}")
        ax.set_title(f"logit lens, last position: {title}", fontsize=9)
    fig.colorbar(im, ax=axes, label="mean correlation of shared-string logits")
    return fig
