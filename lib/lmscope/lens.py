"""The logit lens: read the residual stream after every layer as a next-token prediction.

The residual after layer ``l`` goes through the model's final norm and unembedding
(:meth:`lmscope.arch.ModelView.logit_lens`); the last layer's read-out is the model's
own output. :func:`logit_lens` returns the top-k tokens and probabilities for every
layer and position, :func:`plot_logit_lens` draws them as a heatmap and
:func:`logit_lens_explorer` wraps both in an ipywidgets control (prompt and position).
Plotting and widget libraries are imported only inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LensTable:
    """Logit-lens read-out of one prompt: ``n_layers`` rows, ``n_pos`` columns, ``k`` ranks."""

    input_tokens: list[str]  # (n_pos,) the prompt's tokens as text
    top_tokens: list[list[list[str]]]  # [layer][pos][rank] text of the top-k predicted tokens
    top_ids: np.ndarray  # (n_layers, n_pos, k) their token ids
    probs: np.ndarray  # (n_layers, n_pos, k) their probabilities

    @property
    def n_layers(self) -> int:
        return self.probs.shape[0]


@torch.no_grad()
def lens_topk(view, input_ids: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k next-token probabilities and ids read from every layer's ``resid_post``.

    ``input_ids`` is (pos,) or (1, pos); returns ``(probs, ids)``, each (n_layers, pos, k).
    """
    input_ids = input_ids.reshape(1, -1)
    names = [f"blocks.{layer}.resid_post" for layer in range(view.cfg.n_layers)]
    _, cache = view.run_with_cache(input_ids, names)
    resid = torch.stack([cache[name][0] for name in names])  # (n_layers, pos, d_model)
    probs = view.logit_lens(resid).float().softmax(dim=-1)  # (n_layers, pos, d_vocab)
    return probs.topk(k, dim=-1)


def token_text(tokenizer, token_id: int) -> str:
    """A token as readable text: decoded, with spaces and newlines made visible."""
    return tokenizer.decode([int(token_id)]).replace(" ", "\u2423").replace("\n", "\\n")


def logit_lens(view, tokenizer, prompt: str, k: int = 5) -> LensTable:
    """Logit lens of ``prompt``: top-k tokens and probabilities per layer and position."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids[0]  # (pos,)
    probs, ids = lens_topk(view, input_ids, k)
    return LensTable(
        input_tokens=[token_text(tokenizer, t) for t in input_ids],
        top_tokens=[[[token_text(tokenizer, t) for t in pos] for pos in layer] for layer in ids.tolist()],
        top_ids=ids.numpy(),
        probs=probs.numpy(),
    )


def _annotated_heatmap(ax, values, labels, xticks, title):
    """Heatmap of ``values`` (rows, cols) with a text label in every cell; layer 0 at the bottom."""
    image = ax.imshow(values, origin="lower", aspect="auto", cmap="Blues", vmin=0, vmax=1)
    for row, col in np.ndindex(values.shape):
        color = "white" if values[row, col] > 0.6 else "black"
        ax.text(col, row, labels[row][col][:8], ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(xticks)), xticks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("layer (residual after)")
    ax.set_title(title, fontsize=10)
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
