"""The pattern explorer of chapter 03: one head's attention pattern, dense vs top-k, and the next token.

ipywidgets and matplotlib are imported inside the functions, so the rest of :mod:`lmscope.topk`
imports without them.
"""

from __future__ import annotations

import torch

from lmscope.core.tokens import token_texts
from lmscope.core.view import ModelView
from lmscope.display import figure_text
from lmscope.topk.patterns import head_patterns

DEFAULT_PROMPT = "The capital of France is Paris. The capital of Japan is"


def plot_head_patterns(result: dict, tokenizer, layer: int, head: int, k: int, n_tokens: int = 8):
    """Three panels from :func:`~lmscope.topk.patterns.head_patterns`: the dense pattern, the top-k
    pattern, and the ``n_tokens`` likeliest next tokens under both. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    tokens = [figure_text(t, max_chars=12) for t in result["tokens"]]
    for a, key, title in ((ax[0], "dense", "dense"), (ax[1], "topk", f"top-{k}")):
        a.imshow(result[key].numpy(), cmap="viridis", vmin=0, vmax=1)
        a.set_title(f"layer {layer} head {head}: {title}")
        a.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        a.set_yticks(range(len(tokens)), tokens, fontsize=7)
    p_dense, p_topk = result["p_dense"], result["p_topk"]  # (V,)
    top = torch.topk(torch.maximum(p_dense, p_topk), min(n_tokens, p_dense.numel())).indices
    x = torch.arange(len(top)).numpy()
    ax[2].bar(x - 0.2, p_dense[top].numpy(), 0.4, label="dense")
    ax[2].bar(x + 0.2, p_topk[top].numpy(), 0.4, label=f"top-{k}")
    ax[2].set_xticks(x.tolist(), [figure_text(t, max_chars=12) for t in token_texts(tokenizer, top.tolist())], rotation=45)
    total_variation = 0.5 * (p_dense - p_topk).abs().sum()
    ax[2].set_title(f"next token; total variation {total_variation:.3f}")
    ax[2].legend()
    fig.tight_layout()
    return fig


def topk_widget(view: ModelView, tokenizer, prompt: str = DEFAULT_PROMPT):
    """ipywidgets control: prompt, k, layer, head -> dense vs top-k pattern and next-token change."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    text = w.Text(value=prompt, description="prompt", layout=w.Layout(width="90%"))
    k = w.IntSlider(value=4, min=1, max=64, description="k")
    layer = w.IntSlider(value=view.cfg.n_layers // 2, min=0, max=view.cfg.n_layers - 1, description="layer")
    head = w.IntSlider(value=0, min=0, max=view.cfg.n_heads - 1, description="head")
    out = w.Output()

    def draw(_=None):
        result = head_patterns(view, tokenizer, text.value, layer.value, head.value, k.value)
        with out:
            out.clear_output(wait=True)
            plot_head_patterns(result, tokenizer, layer.value, head.value, k.value)
            plt.show()

    for control in (text, k, layer, head):
        control.observe(draw, names="value")
    draw()
    return w.VBox([text, w.HBox([k, layer, head]), out])
