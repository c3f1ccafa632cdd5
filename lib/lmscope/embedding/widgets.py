"""HTML tables of readings and an ipywidgets explorer of parameters in embedding space.

ipywidgets is imported inside :func:`embedding_explorer`, so this module imports without it.
"""

from __future__ import annotations

from lmscope.display import esc, html_table
from lmscope.embedding.projection import GROUPS, Projector, TokenPairs, n_vectors


def pairs_html(pairs: TokenPairs) -> str:
    """A table of token pairs (row token, column token, score), best first."""
    return html_table(["row token", "column token", "score"],
                      [(a, b, f"{s:.2f}")
                       for a, b, s in zip(pairs.row_tokens, pairs.col_tokens, pairs.scores.tolist())])


def reading_html(proj: Projector, layer: int, group: str, index: int, k: int = 20) -> str:
    """Top and bottom tokens of one parameter vector, or token pairs of a head (group 'W_QK'/'W_VO')."""
    if group in ("W_QK", "W_VO"):
        pairs = proj.head_pairs(layer, index, "qk" if group == "W_QK" else "vo", k=k, drop_identical=True)
        return pairs_html(pairs)
    top, bottom = proj.read(layer, group, index, k), proj.read(layer, group, index, k, negative=True)
    return html_table(["top token", "score", "bottom token", "score"],
                      [(a, f"{s:.2f}", b, f"{-t:.2f}") for a, s, b, t in
                       zip(top.tokens, top.scores.tolist(), bottom.tokens, bottom.scores.tolist())])


def embedding_explorer(proj: Projector, k: int = 20):
    """Pick a layer, a parameter group, a unit/subhead (or a head for W_QK/W_VO); see its tokens."""
    import ipywidgets as widgets

    cfg = proj.view.cfg
    groups = [g for g in GROUPS if g != "ff_gate_keys" or cfg.gated] + ["W_QK", "W_VO"]
    layer = widgets.IntSlider(description="layer", min=0, max=cfg.n_layers - 1, value=cfg.n_layers // 2)
    group = widgets.Dropdown(description="group", options=groups, value="ff_values")
    index = widgets.BoundedIntText(description="unit/head", min=0, max=cfg.d_ff - 1, value=0)
    out = widgets.HTML()

    def limit() -> int:
        return cfg.n_heads if group.value in ("W_QK", "W_VO") else n_vectors(proj.view, group.value)

    def redraw(*_):
        index.max = limit() - 1
        try:
            out.value = reading_html(proj, layer.value, group.value, min(index.value, index.max), k)
        except (ValueError, IndexError) as err:
            out.value = f"<b>{esc(err)}</b>"

    for w in (layer, group, index):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([layer, group, index]), out])
