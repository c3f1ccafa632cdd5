"""The two-seed alignment: two independently trained models, compared in embedding and raw space.

With the paper's statistic (mean |correlation| of all vector pairs of two layers, Hungarian
matching of layers), and, finer than the paper, Hungarian matching of the FF values and heads
of each layer pair. Independently trained models have no true unit-to-unit answer, so a unit or
head matching is scored by how strongly the matched pairs correlate (:func:`matched_correlation`),
beside the chance level: the same number for Gaussian random vectors read through the same two
unembeddings (in embedding space every reading shares the unembeddings' dominant directions, so
chance there is far above zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lmscope.core.view import ModelView
from lmscope.embedding.alignment import (SPACES, Aligner, head_similarity, layer_match_accuracy, layer_similarity,
                                         matched_correlation, raw_correlation, unit_similarity, vocab_correlation)
from lmscope.embedding.projection import n_vectors

Tensor = torch.Tensor
GROUPS = ("ff_keys", "ff_values", "W_Q", "W_K", "W_V", "W_O")


@dataclass
class TwoSeedAlignment:
    """Layer matrices and accuracies per (group, space); per-layer matched unit/head |corr| and chance."""

    layer_sims: dict = field(default_factory=dict)  # (group, space) -> (L, L) mean |corr|
    layer_acc: dict = field(default_factory=dict)  # (group, space) -> share of layers matched to their own index
    units: dict = field(default_factory=dict)  # space -> (L,) matched |corr| of FF values
    heads: dict = field(default_factory=dict)  # space -> (L,) matched mean |corr| of heads
    chance_units: dict = field(default_factory=dict)  # space -> matched |corr| of Gaussian vectors
    chance_heads: dict = field(default_factory=dict)

    def layer_rows(self) -> list[tuple]:
        groups = list(dict.fromkeys(g for g, _ in self.layer_acc))
        return [(g, *[self.layer_acc[g, s] for s in SPACES]) for g in groups]

    def unit_rows(self) -> list[tuple]:
        """Per layer: FF values (embedding, raw), heads (embedding, raw); then a 'chance' row."""
        n = len(self.units[SPACES[0]])
        rows = [(l, *[self.units[s][l] for s in SPACES], *[self.heads[s][l] for s in SPACES]) for l in range(n)]
        return rows + [("chance", *[self.chance_units[s] for s in SPACES], *[self.chance_heads[s] for s in SPACES])]


def _chance(aligner: Aligner, n: int, d_a: int, d_b: int, space: str, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_a, generator=g, dtype=torch.float64)
    Y = torch.randn(n, d_b, generator=g, dtype=torch.float64)
    C = vocab_correlation(X, Y, aligner.gram) if space == "embedding" else raw_correlation(X, Y)
    return C.abs().numpy()


def two_seed_alignment(view_a: ModelView, view_b: ModelView, tokens: Tensor | None = None, groups=GROUPS,
                       seed: int = 0) -> TwoSeedAlignment:
    """Align two trained models over the vocabulary coordinates ``tokens`` (bool, d_vocab; None: all)."""
    out = TwoSeedAlignment()
    for g in groups:
        for space in SPACES:
            S = layer_similarity(view_a, view_b, g, space=space, stat="mean_abs", n_sample=None, tokens=tokens)
            out.layer_sims[g, space], out.layer_acc[g, space] = S, layer_match_accuracy(S)
    da, db, dh = view_a.cfg.d_model, view_b.cfg.d_model, view_a.cfg.d_head
    for space in SPACES:
        aligner = Aligner(view_a, view_b, space, tokens)
        L = view_a.cfg.n_layers
        out.units[space] = np.array([matched_correlation(unit_similarity(view_a, view_b, l, l, "ff_values", space,
                                                                         tokens)) for l in range(L)])
        out.heads[space] = np.array([matched_correlation(head_similarity(view_a, view_b, l, l, space, tokens=tokens,
                                                                         subheads="all")) for l in range(L)])
        out.chance_units[space] = matched_correlation(_chance(aligner, n_vectors(view_a, "ff_values"), da, db,
                                                              space, seed))
        H = view_a.cfg.n_heads
        C = _chance(aligner, H * dh, da, db, space, seed + 1).reshape(H, dh, H, dh).mean((1, 3))
        out.chance_heads[space] = matched_correlation(C)
    return out
