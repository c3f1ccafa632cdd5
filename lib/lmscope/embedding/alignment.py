"""Aligning two models that share a vocabulary, in embedding space (Dar et al., section 5.1).

Every parameter vector ``x`` of model 1 is read over the vocabulary as ``x E1`` and every
``y`` of model 2 as ``y E2`` (E: the unembedding, d_model x d_vocab). Their Pearson
correlation over the |V| vocabulary coordinates needs only d x d Gram matrices (the
kernel trick), never a |V|-dimensional vector:

    cov(x E1, y E2) = x C12 y^T,   C12 = E1 E2^T / |V| - mu1 mu2^T,   mu = E.mean(columns)

:func:`layer_similarity` turns these into an L1 x L2 matrix per parameter group,
:func:`match` finds the best one-to-one assignment (Hungarian, scipy), and
``space="raw"`` does the same on raw coordinates as the control.

A known answer to test this on: :func:`lmscope.embedding.functional_copy.functional_copy`
builds a model that computes the same function but whose residual basis is rotated by a random
orthogonal matrix (norm gains folded first) and whose heads and FF units are permuted;
:func:`layer_match_accuracy` and :func:`copy_recovery` score how much of that truth the
matching recovers, in embedding and in raw space.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lmscope.core.tensors import blas_matmul
from lmscope.core.view import ModelView
from lmscope.embedding.functional_copy import CopyTruth
from lmscope.embedding.projection import group_vectors

Tensor = torch.Tensor

SPACES = ("embedding", "raw")
STATS = ("mean_abs", "best_match")


# -- shared vocabulary ----------------------------------------------------------------------
def check_shared_vocabulary(view_a: ModelView, view_b: ModelView, tokenizer_a=None, tokenizer_b=None) -> None:
    """ValueError unless the two models read the same vocabulary (same size; same tokens if tokenizers given)."""
    va, vb = view_a.cfg.d_vocab, view_b.cfg.d_vocab
    if va != vb:
        raise ValueError(
            f"The models do not share a vocabulary: {va} vs {vb} tokens. Embedding-space alignment and "
            "translation need two models with the same tokenizer (e.g. gpt2 and gpt2-medium, or Pythia seeds)."
        )
    if tokenizer_a is not None and tokenizer_b is not None and tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise ValueError(
            "The models do not share a vocabulary: same size, but their tokenizers map tokens differently."
        )


# -- correlations ---------------------------------------------------------------------------
@dataclass
class VocabGram:
    """The d x d statistics of two unembeddings that vocabulary correlations need."""

    C11: Tensor  # (d1, d1)
    C12: Tensor  # (d1, d2)
    C22: Tensor  # (d2, d2)

    @classmethod
    def of(cls, E1: Tensor, E2: Tensor) -> "VocabGram":
        """From unembeddings E1 (d1, V), E2 (d2, V); float64.

        Two equal unembeddings (a permuted copy keeps its embedding) need one Gram matrix, not three.
        """
        if E1.shape[1] != E2.shape[1]:
            raise ValueError(f"The models do not share a vocabulary: {E1.shape[1]} vs {E2.shape[1]} tokens.")
        same = E1 is E2 or (E1.shape == E2.shape and torch.equal(E1, E2))

        def cov(A: Tensor, B: Tensor) -> Tensor:  # (dA, V), (dB, V) float64 -> (dA, dB)
            return blas_matmul(A, B.T) / A.shape[1] - torch.outer(A.mean(1), B.mean(1))

        E1 = E1.detach().double()
        C11 = cov(E1, E1)
        if same:
            return cls(C11, C11, C11)
        E2 = E2.detach().double()
        return cls(C11, cov(E1, E2), cov(E2, E2))


#: VocabGrams already computed, per pair of unembedding weights (by id, checked through weak references, so
#: an entry of a freed model is never reused) and per weight versions (an in-place edit bumps them) and token
#: mask: every Aligner of the same two models shares one.
_GRAMS: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, dict]] = {}


def shared_gram(view_a: ModelView, view_b: ModelView, tokens: Tensor | None = None) -> VocabGram:
    """``VocabGram.of`` the two unembeddings (columns ``tokens`` only, if given), computed once per pair."""
    wa = view_a.model.get_submodule(view_a.family.unembed).weight
    wb = view_b.model.get_submodule(view_b.family.unembed).weight
    for pair in [p for p, (ra, rb, _) in _GRAMS.items() if ra() is None or rb() is None]:
        del _GRAMS[pair]  # a model that is gone
    ra, rb, grams = _GRAMS.get((id(wa), id(wb)), (None, None, None))
    if ra is None or ra() is not wa or rb() is not wb:
        grams = {}
        _GRAMS[id(wa), id(wb)] = (weakref.ref(wa), weakref.ref(wb), grams)
    mask = None if tokens is None else hashlib.blake2b(tokens.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    key = (wa._version, wb._version, mask)
    if key not in grams:
        Ea, Eb = view_a.W_U, view_b.W_U
        if tokens is not None:
            Ea, Eb = Ea[:, tokens], Eb[:, tokens]
        grams[key] = VocabGram.of(Ea, Eb)
    return grams[key]


def _unit_rows(X: Tensor, cov: Tensor) -> Tensor:
    var = ((X @ cov) * X).sum(1).clamp_min(1e-30)  # (n,)
    return var.rsqrt()


def vocab_correlation(X: Tensor, Y: Tensor, gram: VocabGram) -> Tensor:
    """Pearson correlation of ``X E1`` (n, V) and ``Y E2`` (m, V) over vocabulary coordinates: (n, m)."""
    X, Y = X.detach().double(), Y.detach().double()
    return (X @ gram.C12 @ Y.T) * _unit_rows(X, gram.C11)[:, None] * _unit_rows(Y, gram.C22)[None, :]


def raw_correlation(X: Tensor, Y: Tensor) -> Tensor:
    """Pearson correlation of raw vectors X (n, d) and Y (m, d) over their d coordinates: (n, m)."""
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"Raw-space correlation needs the same d_model, got {X.shape[1]} and {Y.shape[1]}.")
    X = X.detach().double()
    Y = Y.detach().double()
    X = X - X.mean(1, keepdim=True)
    Y = Y - Y.mean(1, keepdim=True)
    return (X / X.norm(dim=1, keepdim=True)) @ (Y / Y.norm(dim=1, keepdim=True)).T


class Aligner:
    """Correlations between the parameters of two models, in embedding or raw space.

    ``tokens`` (bool, d_vocab): correlate over these vocabulary coordinates only (e.g. the
    tokens seen in training); None: all.
    """

    def __init__(self, view_a: ModelView, view_b: ModelView, space: str = "embedding", tokens: Tensor | None = None):
        if space not in SPACES:
            raise ValueError(f"Unknown space '{space}': use 'embedding' or 'raw'.")
        check_shared_vocabulary(view_a, view_b)
        if space == "raw" and view_a.cfg.d_model != view_b.cfg.d_model:
            raise ValueError("Raw-space alignment needs models of the same d_model; use space='embedding'.")
        self.view_a, self.view_b, self.space = view_a, view_b, space
        V = view_a.W_U.shape[1]
        if tokens is not None and (tokens.shape != (V,) or tokens.dtype != torch.bool):
            raise ValueError(f"tokens must be a bool mask of shape ({V},), got {tuple(tokens.shape)}.")
        self.gram = shared_gram(view_a, view_b, tokens) if space == "embedding" else None

    def prepared(self, side: str, layer: int, group: str, rows: Tensor | None = None) -> Tensor:
        """Rows of one group, transformed so that correlations are plain dot products: (n, d)."""
        view = self.view_a if side == "a" else self.view_b
        X = group_vectors(view, layer, group).detach().double()
        if rows is not None:
            X = X[rows]
        if self.space == "raw":
            X = X - X.mean(1, keepdim=True)
            return X / X.norm(dim=1, keepdim=True).clamp_min(1e-30)
        if side == "a":
            return (X @ self.gram.C12) * _unit_rows(X, self.gram.C11)[:, None]
        return X * _unit_rows(X, self.gram.C22)[:, None]

    def correlation(self, layer_a: int, layer_b: int, group: str) -> Tensor:
        """All correlations between the vectors of ``group`` in the two layers: (n_a, n_b)."""
        return self.prepared("a", layer_a, group) @ self.prepared("b", layer_b, group).T


def layer_similarity(view_a: ModelView, view_b: ModelView, group: str = "ff_values", *,
                     space: str = "embedding", stat: str = "mean_abs", n_sample: int | None = 256,
                     seed: int = 0, layers_a=None, layers_b=None, tokens: Tensor | None = None) -> np.ndarray:
    """An L_a x L_b matrix: how alike the parameter vectors of ``group`` are, layer by layer.

    ``stat="mean_abs"`` is the paper's mean |correlation| over all pairs of vectors;
    ``"best_match"`` averages, over vectors of layer a, the largest |correlation| with any
    vector of layer b (1 when layer b holds the same vectors in another order); ``tokens`` as in
    :class:`Aligner`. ``n_sample``
    vectors of each layer of model a are used (all of model b), to bound the cost;
    ``layers_a``/``layers_b`` restrict the rows/columns to some layers (default all).
    """
    if stat not in STATS:
        raise ValueError(f"Unknown stat '{stat}': use one of {', '.join(STATS)}.")
    aligner = Aligner(view_a, view_b, space, tokens)
    g = torch.Generator().manual_seed(seed)
    layers_a = range(view_a.cfg.n_layers) if layers_a is None else [view_a.layer(l).index for l in layers_a]
    layers_b = range(view_b.cfg.n_layers) if layers_b is None else [view_b.layer(l).index for l in layers_b]
    n = group_vectors(view_a, 0, group).shape[0]
    rows = None if n_sample is None or n_sample >= n else torch.randperm(n, generator=g)[:n_sample]
    prep_b = [aligner.prepared("b", l, group) for l in layers_b]
    out = np.zeros((len(layers_a), len(layers_b)))
    for i, la in enumerate(layers_a):
        Xa = aligner.prepared("a", la, group, rows)
        for j in range(len(layers_b)):
            C = (Xa @ prep_b[j].T).abs()
            out[i, j] = float(C.mean() if stat == "mean_abs" else C.max(1).values.mean())
    return out


def match(similarity) -> np.ndarray:
    """Hungarian matching of rows to columns maximising total similarity: ``m[i]`` = column of row i."""
    S = np.asarray(similarity, dtype=float)
    rows, cols = linear_sum_assignment(S, maximize=True)
    out = np.full(S.shape[0], -1)
    out[rows] = cols
    return out


def match_units(view_a: ModelView, view_b: ModelView, layer_a: int, layer_b: int,
                group: str = "ff_values", space: str = "embedding", tokens: Tensor | None = None) -> np.ndarray:
    """Which unit of ``layer_b`` is unit i of ``layer_a``: (n_units,), by Hungarian on |corr|."""
    return match(Aligner(view_a, view_b, space, tokens).correlation(layer_a, layer_b, group).abs().numpy())


def matched_correlation(similarity) -> float:
    """Mean of ``similarity`` over the pairs :func:`match` picks (how alike matched things are)."""
    S = np.asarray(similarity, dtype=float)
    m = match(S)
    ok = m >= 0
    return float(S[np.arange(len(m))[ok], m[ok]].mean())


def unit_similarity(view_a: ModelView, view_b: ModelView, layer_a: int, layer_b: int,
                    group: str = "ff_values", space: str = "embedding", tokens: Tensor | None = None) -> np.ndarray:
    """n_a x n_b: |corr| between every vector of ``group`` in the two layers."""
    return Aligner(view_a, view_b, space, tokens).correlation(layer_a, layer_b, group).abs().numpy()


def head_similarity(view_a: ModelView, view_b: ModelView, layer_a: int, layer_b: int,
                    space: str = "embedding", groups=("W_Q", "W_O"), tokens: Tensor | None = None,
                    subheads: str = "same") -> np.ndarray:
    """H_a x H_b: mean |corr| between the subheads of two heads.

    ``subheads="same"``: column c with column c (right for a permuted copy, whose heads keep their
    column order); ``"all"``: every column pair, the paper's mean |corr| per head pair (for
    independently trained models, whose columns inside a head have no common order).
    """
    if subheads not in ("same", "all"):
        raise ValueError(f"Unknown subheads '{subheads}': use 'same' or 'all'.")
    aligner = Aligner(view_a, view_b, space, tokens)
    da, db = view_a.cfg.d_head, view_b.cfg.d_head
    if da != db and subheads == "same":
        raise ValueError(f"Head matching needs the same d_head, got {da} and {db}; use subheads='all'.")
    total = 0
    for group in groups:
        C = aligner.correlation(layer_a, layer_b, group).abs()  # (Ha*dh, Hb*dh)
        Ha, Hb = C.shape[0] // da, C.shape[1] // db
        C = C.reshape(Ha, da, Hb, db)
        total = total + (C.diagonal(dim1=1, dim2=3).mean(-1) if subheads == "same" else C.mean((1, 3)))
    return (total / len(groups)).numpy()


# -- how much of a known answer the matching recovers -------------------------------------------
def layer_match_accuracy(similarity) -> float:
    """Fraction of layers of model a that :func:`match` pairs with the layer of the same index in b.

    ``similarity`` is a square L x L matrix (e.g. :func:`layer_similarity` of two models with the
    same layers); NaN when it is not square (there is no same-index answer).
    """
    S = np.asarray(similarity, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        return float("nan")
    return float(np.mean(match(S) == np.arange(S.shape[0])))


@dataclass
class CopyRecovery:
    """Per layer and space, the fraction of FF units and of heads matched to their true counterparts."""

    layers: list[int]
    units: dict[str, list[float]] = field(default_factory=dict)  # space -> one accuracy per layer
    heads: dict[str, list[float]] = field(default_factory=dict)

    def rows(self) -> list[tuple]:
        """One row per layer: ``(layer, units per space..., heads per space...)``."""
        return [(layer, *[v[i] for v in self.units.values()], *[v[i] for v in self.heads.values()])
                for i, layer in enumerate(self.layers)]

    def mean(self) -> dict[str, tuple[float, ...]]:
        """``{"units": (mean per space...), "heads": (...)}``, spaces in the order computed."""
        return {"units": tuple(float(np.mean(v)) for v in self.units.values()),
                "heads": tuple(float(np.mean(v)) for v in self.heads.values())}


def copy_recovery(view_a: ModelView, view_b: ModelView, truth: CopyTruth, layers, spaces=SPACES) -> CopyRecovery:
    """How well Hungarian matching recovers a functional copy's permutations, layer by layer.

    ``view_b`` is a :func:`~lmscope.embedding.functional_copy.functional_copy` of ``view_a`` and
    ``truth`` its :class:`CopyTruth`. For each layer and space: the FF values matched by
    :func:`match_units` and the heads matched by :func:`head_similarity`, each compared with the
    inverse of the true permutation (1.0: all recovered).
    """
    for space in spaces:
        if space not in SPACES:
            raise ValueError(f"Unknown space '{space}': use 'embedding' or 'raw'.")
    layers = [view_a.layer(l).index for l in layers]
    out = CopyRecovery(layers, {s: [] for s in spaces}, {s: [] for s in spaces})
    for layer in layers:
        for space in spaces:
            units = match_units(view_a, view_b, layer, layer, "ff_values", space)
            heads = match(head_similarity(view_a, view_b, layer, layer, space))
            out.units[space].append(float(np.mean(units == CopyTruth.inverse(truth.ff_perm[layer]))))
            out.heads[space].append(float(np.mean(heads == CopyTruth.inverse(truth.head_perm[layer]))))
    return out
