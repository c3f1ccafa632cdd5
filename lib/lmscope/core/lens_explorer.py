"""Chapter 00's static explorer: the logit lens (and the tuned lens) for several prompts.

:func:`lens_grid` reads every layer's ``resid_post`` of a prompt through one or more lenses
(anything called as ``lens(resid, layer) -> logits``, e.g. :class:`lmscope.core.tuned_lens.LogitLens`
or a trained ``TunedLens``); :func:`lens_explorer` turns the grids into a
:class:`lmscope.static_explorer.StaticExplorer` with one panel per (prompt, lens): layers as
rows (last layer on top), positions as columns, each cell the top-1 token coloured by its
probability, and the top-k tokens with their probabilities on hover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmscope.core.hooks import hook_names
from lmscope.core.tokens import token_text
from lmscope.static_explorer import StaticExplorer, heatmap, token_list


@dataclass
class LensGrid:
    """Top-k read-out of one prompt by one lens: ``probs``/``ids`` (n_layers, n_pos, k)."""

    prompt: str
    lens: str
    input_tokens: list[str]
    top_tokens: list[list[list[str]]]  # [layer][pos][rank]
    ids: np.ndarray
    probs: np.ndarray


@torch.no_grad()
def lens_grid(view, tokenizer, prompt: str, lenses: dict | None = None, k: int = 5) -> list[LensGrid]:
    """One :class:`LensGrid` per lens in ``lenses`` (name -> lens; default: the logit lens)."""
    if not prompt:
        raise ValueError("prompt is empty: give the lens a prompt of at least one token")
    if lenses is None:
        from lmscope.core.tuned_lens import LogitLens

        lenses = {"logit lens": LogitLens(view)}
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.reshape(1, -1)
    names = hook_names("resid_post", range(view.cfg.n_layers))
    _, cache = view.run_with_cache(input_ids, names)
    words = [token_text(tokenizer, t) for t in input_ids[0].tolist()]
    grids = []
    for label, lens in lenses.items():
        probs, ids = [], []
        for layer, name in enumerate(names):
            p = lens(cache[name][0], layer).float().softmax(dim=-1)  # (pos, d_vocab)
            top = p.topk(k, dim=-1)
            probs.append(top.values)
            ids.append(top.indices)
        probs, ids = torch.stack(probs).numpy(), torch.stack(ids).numpy()
        tokens = [[[token_text(tokenizer, t) for t in pos] for pos in layer] for layer in ids.tolist()]
        grids.append(LensGrid(prompt, label, words, tokens, ids, probs))
    return grids


def grid_panel(grid: LensGrid, final_ids: np.ndarray | None = None) -> str:
    """The heatmap of one grid: top-1 token per (layer, position), top-k on hover."""
    n_layers, n_pos, _ = grid.probs.shape
    order = list(range(n_layers))[::-1]  # last layer on top, as the read-out ends there
    cells = [[grid.top_tokens[l][p][0][:8] for p in range(n_pos)] for l in order]
    tips = [[f"layer {l}, after {grid.input_tokens[p]!r}: " + token_list(grid.top_tokens[l][p], grid.probs[l, p])
             for p in range(n_pos)] for l in order]
    table = heatmap(grid.probs[order, :, 0], cells, tips, [f"L{l}" for l in order],
                    [f"{p}:{w[:8]}" for p, w in enumerate(grid.input_tokens)], corner="layer")
    final = grid.ids[-1, -1, 0]
    first = next(l for l in range(n_layers) if grid.ids[l, -1, 0] == final)
    return (f"<p>{grid.lens}: the final prediction {grid.top_tokens[-1][-1][0]!r} first leads after layer "
            f"{first} of {n_layers}.</p>{table}")


def lens_explorer(view, tokenizer, prompts: list[str], lenses: dict | None = None, k: int = 5) -> StaticExplorer:
    """The static lens explorer over ``prompts`` x ``lenses`` (computed here, shown without a kernel)."""
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    panels, lens_names = {}, None
    for prompt in prompts:
        grids = lens_grid(view, tokenizer, prompt, lenses, k)
        lens_names = [g.lens for g in grids]
        for grid in grids:
            panels[(prompt, grid.lens)] = grid_panel(grid)
    return StaticExplorer(
        title=f"{'/'.join(lens_names)} of {view.name}: the top token after every layer (colour: its probability)",
        controls={"prompt": list(prompts), "lens": lens_names}, panels=panels,
        hint="hover a cell: the top tokens there with their probabilities")
