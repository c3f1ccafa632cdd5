"""Chapter 01's static explorer: FF values and attention heads of any layer read in embedding space.

Precomputed for a static page (:class:`lmscope.static_explorer.StaticExplorer`):

- *FF values*: per layer, the ``n_values`` most coherent value vectors
  (:func:`lmscope.embedding.filters.coherent_units`) with their top and bottom tokens;
  the choice "all layers" lists them all, and the search box finds a token among them.
- *heads*: per layer and head, the main output direction of ``W_VO`` (the top right
  singular vector, from the head's low-rank factors) read through the vocabulary, with the
  share of ``W_VO``'s squared norm it carries. A singular vector's sign is arbitrary, so
  both ends are shown.
"""

from __future__ import annotations

import torch

from lmscope.embedding.filters import coherent_units
from lmscope.embedding.projection import GROUPS, Projector, group_vectors
from lmscope.static_explorer import StaticExplorer, bar_rows

ALL = "all layers"
VALUES, HEADS = "FF values (most coherent)", "heads (main W_VO output direction)"


def value_rows(proj: Projector, layer: int, n_values: int = 8, k: int = 10, index=None) -> list[dict]:
    """The ``n_values`` most coherent FF values of ``layer``: name, coherence, top / bottom tokens.

    ``index``: the model's ``ProjectionIndex`` (ff_values), which makes ranking a layer's values cheap.
    """
    rows = []
    units = coherent_units(proj, layer, "ff_values", k=k, n=n_values, index=index)
    vectors = group_vectors(proj.view, layer, "ff_values")[[unit for unit, _ in units]]  # (n_values, d_model)
    readings = proj.project(vectors, GROUPS["ff_values"])  # (n_values, d_vocab): the vocabulary read once
    for (unit, coherence), scores in zip(units, readings):
        top = proj.top(scores, k)
        bottom = proj.top(scores, max(3, k // 2), negative=True)
        rows.append({"name": f"L{layer}D{unit}", "coherence": coherence, "top": top.tokens, "bottom": bottom.tokens})
    return rows


@torch.no_grad()
def head_direction(view, layer: int, head: int) -> tuple[torch.Tensor, float]:
    """Main output direction (d_model,) of head ``head``'s ``W_VO`` and its share of ``|W_VO|_F^2``."""
    A, B = view.layer(layer).W_VO(head)  # W_VO = A @ B.T, A and B (d_model, d_head)
    Qa, Ra = torch.linalg.qr(A.double())
    Qb, Rb = torch.linalg.qr(B.double())
    _, S, Vh = torch.linalg.svd(Ra @ Rb.T)  # W_VO = Qa (Ra Rb^T) Qb^T
    direction = Qb @ Vh[0]
    return direction.float(), float(S[0] ** 2 / (S ** 2).sum().clamp_min(1e-30))


def head_rows(proj: Projector, layer: int, k: int = 10) -> list[dict]:
    """Every head of ``layer``: the tokens at both ends of its main W_VO output direction."""
    rows = []
    heads = [head_direction(proj.view, layer, head) for head in range(proj.view.cfg.n_heads)]
    readings = proj.project(torch.stack([direction for direction, _ in heads]), "out")  # (n_heads, d_vocab)
    for head, ((_, share), scores) in enumerate(zip(heads, readings)):
        rows.append({"name": f"L{layer}H{head}", "share": share, "top": proj.top(scores, k).tokens,
                     "bottom": proj.top(scores, k, negative=True).tokens})
    return rows


def _values_table(rows: list[dict]) -> str:
    texts = [[r["name"], f"{r['coherence']:.2f}", " ".join(r["top"]), " ".join(r["bottom"])] for r in rows]
    return bar_rows(["value", "coherence", "top tokens (v E)", "bottom tokens (-v E)"], texts,
                    [r["coherence"] for r in rows], scale=1.0,
                    search=[" ".join([r["name"]] + r["top"] + r["bottom"]) for r in rows])


def _heads_table(rows: list[dict]) -> str:
    texts = [[r["name"], f"{r['share']:.0%}", " ".join(r["top"]), " ".join(r["bottom"])] for r in rows]
    return bar_rows(["head", "share of |W_VO|^2", "tokens at one end", "tokens at the other end"], texts,
                    [r["share"] for r in rows], scale=1.0,
                    search=[" ".join([r["name"]] + r["top"] + r["bottom"]) for r in rows])


def embedding_static_explorer(proj: Projector, layers=None, n_values: int = 8, k: int = 10,
                              index=None) -> StaticExplorer:
    """The chapter's static explorer over ``layers`` (default: every layer) of ``proj.view``.

    ``index``: the model's ``ProjectionIndex`` (ff_values); without it each layer projects all its values.
    """
    view = proj.view
    layers = list(range(view.cfg.n_layers)) if layers is None else [int(l) for l in layers]
    for layer in layers:
        view.layer(layer)  # IndexError naming the valid range
    panels, every_value = {}, []
    for layer in layers:
        values = value_rows(proj, layer, n_values, k, index)
        every_value += values
        panels[(str(layer), VALUES)] = _values_table(values)
        panels[(str(layer), HEADS)] = _heads_table(head_rows(proj, layer, k))
    panels[(ALL, VALUES)] = _values_table(every_value)
    return StaticExplorer(
        title=f"{view.name} in embedding space: FF values and heads per layer",
        controls={"layer": [ALL] + [str(l) for l in layers], "read": [VALUES, HEADS]}, panels=panels,
        hint="pick a layer and what to read; the search box keeps the rows with a token",
        search="a token, e.g. Paris", missing="heads are listed per layer: pick one layer")
