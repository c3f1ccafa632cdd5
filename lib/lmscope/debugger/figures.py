"""Figures of attribution and patching: direct effects per layer and of the top parts, patching
heatmaps, and a token's logit-lens probability across layers. Each returns a matplotlib figure."""

from __future__ import annotations

import numpy as np

from lmscope.debugger.dla import Attribution
from lmscope.debugger.patching import PatchGrid
from lmscope.display import figure_text


def plot_dla(attr: Attribution, position: int = -1, n: int = 12, what: str = "logit"):
    """Left: the attention and FF blocks' direct effect per layer at ``position``; right: the ``n``
    heads and FF values with the largest |direct effect| (green: raises it, red: lowers it)."""
    import matplotlib.pyplot as plt

    c = attr._column(position)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    table = attr.layer_table()[..., c].double().numpy()  # (L, 2)
    layers = np.arange(table.shape[0])
    ax.bar(layers - 0.2, table[:, 0], width=0.4, label="attention (heads + bias)")
    ax.bar(layers + 0.2, table[:, 1], width=0.4, label="FF (values + bias)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="layer", ylabel=f"direct effect on the {what}", title=f"per layer (embedding {float(attr.embed[c]):+.2f})")
    ax.legend()
    parts = [p for p in attr.top(position, n=2 * n) if p[0][0] == "L" and " " not in p[0]][:n][::-1]
    bx.barh([name for name, _ in parts], [v for _, v in parts], color=["C2" if v > 0 else "C3" for _, v in parts])
    bx.set(xlabel=f"direct effect on the {what}", title=f"top heads (LxHy) and values (LxDy); sum = {float(attr.logit[c]):.2f}")
    return fig


def plot_patching(grids: dict[str, PatchGrid], title: str = ""):
    """One heatmap per component of the recovered fraction (layer x position, or layer x head)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 4.6), layout="constrained", squeeze=False)
    for ax, (comp, grid) in zip(axes[0], grids.items()):
        rec = grid.recovered().double().numpy()
        im = ax.imshow(rec, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=f"{comp} ({grid.method})", ylabel="layer")
        if comp == "heads":
            ax.set_xlabel("head")
        else:
            labels = grid.tokens and [figure_text(grid.tokens[c], max_chars=12) for c in grid.columns]
            ax.set_xticks(range(len(grid.columns)), labels or grid.columns, rotation=60, fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="recovered fraction")
    if title:
        fig.suptitle(title)
    return fig


def plot_lens_probability(probs, token: str):
    """``probs`` (3, L) from :meth:`LMDebugger.lens_probability`: P(token) per layer at three points."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    probs = np.asarray(probs)
    for row, label in zip(probs, ("before attention", "after attention", "after FF")):
        ax.plot(np.arange(probs.shape[1]), row, marker=".", label=label)
    ax.set(xlabel="layer", ylabel=figure_text(f"P({token!r})"), title="logit lens", ylim=(0, 1))
    ax.legend()
    return fig
