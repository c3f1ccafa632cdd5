"""What the chapters show: HTML tables of tokens for the studies' widgets, and chapter 00's logit lens.

:func:`html_table` and :func:`esc` build the small HTML pieces every widget shows;
:func:`plot_logit_lens` draws a :class:`lmscope.core.lens.LensTable` as a heatmap and
:func:`logit_lens_explorer` wraps it in an ipywidgets control (prompt and position).
:func:`figure_text` writes a token for a matplotlib figure: characters the figure's font cannot
draw (CJK, Bengali, ... with only DejaVu Sans installed) become ``U+XXXX`` instead of empty boxes.
matplotlib and ipywidgets are imported inside the functions that need them, so this module
imports without them.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape

import numpy as np

from lmscope.core.lens import LensTable, logit_lens


def esc(text) -> str:
    """``text`` escaped for HTML text (quotes kept as they are)."""
    return escape(str(text), quote=False)


def html_table(headers, rows) -> str:
    """A plain HTML table: a header row, then one row per item of ``rows`` (cells escaped)."""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='padding:1px 8px'>{escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


@lru_cache(maxsize=8)
def _drawable(font_path: str) -> frozenset[int]:
    """The code points the font file at ``font_path`` has glyphs for."""
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_path).get_charmap())


def figure_text(text: str, max_chars: int | None = None) -> str:
    """``text`` for a matplotlib figure: each character matplotlib's default font has no glyph
    for is written as ``U+XXXX`` (matplotlib would draw an empty box and print a warning).

    ``max_chars`` cuts the result after whole characters or codes, marked with "…" (tick labels).
    """
    from matplotlib import font_manager

    drawable = _drawable(font_manager.findfont(font_manager.FontProperties()))
    pieces = [c if ord(c) in drawable or c in "\n\t" else f"U+{ord(c):04X}" for c in str(text)]
    out, used = [], 0
    for piece in pieces:
        if max_chars is not None and used + len(piece) > max_chars:
            return "".join(out) + "\u2026"
        out.append(piece)
        used += len(piece)
    return "".join(out)


# -- the logit lens (chapter 00) ---------------------------------------------------------------
def _annotated_heatmap(ax, values, labels, xticks, title):
    """Heatmap of ``values`` (rows, cols) with a text label in every cell; layer 0 at the bottom."""
    image = ax.imshow(values, origin="lower", aspect="auto", cmap="Blues", vmin=0, vmax=1)
    for row, col in np.ndindex(values.shape):
        color = "white" if values[row, col] > 0.6 else "black"
        ax.text(col, row, figure_text(labels[row][col], max_chars=8), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(xticks)), [figure_text(t, max_chars=16) for t in xticks], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("layer (residual after)")
    ax.set_title(figure_text(title), fontsize=10)
    return image


def plot_logit_lens(table: LensTable, position: int | None = None):
    """Figure: top-1 token per layer x position; with ``position``, also its top-k per layer."""
    import matplotlib.pyplot as plt

    n_pos = len(table.input_tokens)
    width = 1.0 + 0.75 * n_pos
    if position is None:
        fig, ax = plt.subplots(figsize=(width, 0.3 * table.n_layers + 1.8), layout="constrained")
        axes = [ax]
    else:
        k = table.probs.shape[2]
        fig, axes = plt.subplots(1, 2, figsize=(width + 0.9 * k + 1, 0.3 * table.n_layers + 1.8),
                                 width_ratios=[n_pos, k + 1], layout="constrained")
    top1 = [[ranks[0] for ranks in layer] for layer in table.top_tokens]
    image = _annotated_heatmap(axes[0], table.probs[:, :, 0], top1, table.input_tokens,
                               "top prediction after each layer (colour: its probability)")
    if position is not None:
        axes[0].axvline(position - 0.5, color="crimson")
        axes[0].axvline(position + 0.5, color="crimson")
        labels = [layer[position] for layer in table.top_tokens]
        _annotated_heatmap(axes[1], table.probs[:, position, :], labels,
                           [f"#{r + 1}" for r in range(table.probs.shape[2])],
                           f"top {table.probs.shape[2]} after {table.input_tokens[position]!r}")
    fig.colorbar(image, ax=axes, label="probability", shrink=0.8)
    return fig


def logit_lens_explorer(view, tokenizer, prompt: str, k: int = 5):
    """An ipywidgets control: edit the prompt, slide the position, the lens redraws."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    text = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                        layout=widgets.Layout(width="80%"))
    slider = widgets.IntSlider(description="position", min=0, max=0)
    out = widgets.Output()
    state = {}

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig = plot_logit_lens(state["table"], slider.value)
            display(fig)
            plt.close(fig)

    def new_prompt(*_):
        state["table"] = logit_lens(view, tokenizer, text.value, k)
        old = slider.value
        with slider.hold_trait_notifications():
            slider.max = len(state["table"].input_tokens) - 1
            slider.value = slider.max
        if slider.value == old:  # otherwise the slider's observer has redrawn
            redraw()

    text.observe(new_prompt, names="value")
    slider.observe(redraw, names="value")
    new_prompt()
    return widgets.VBox([text, slider, out])
