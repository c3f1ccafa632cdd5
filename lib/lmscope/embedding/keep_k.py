"""Keep-k: do the top entries of a vocabulary reading carry the vector? (Dar et al., appendix A)

Vectors ``X`` (n, d_model) are read over the vocabulary through the unembedding ``E`` (d, V)
as ``X E`` or through its pseudo-inverse as ``X E^{+T}``; :func:`keep_k` keeps the k entries of
largest magnitude per row, and :func:`keep_k_similarity` compares a Gram matrix of two sparse
readings with ``X X^T`` (cosine of the flattened matrices; 1 = the same up to scale).

The paper's measure (``pairing="paper"``, the default, as in the official code) is

* ``reading="transpose"``: ``keep_k(X E) keep_k(X E)^T``, i.e. ``X E E^T X^T`` at full k;
* ``reading="pinv"``: ``keep_k(X E) keep_k(X E^{+T})^T``, exactly ``X X^T`` at full k
  (``E E^+ = I``), so it measures only what sparsifying loses.

``pairing="both"`` (our earlier variant) reads both sides through the same matrix; for
``"pinv"`` that is ``X (E E^T)^{-1} X^T`` at full k, which is not ``X X^T``.
:func:`gram_spectrum` gives the eigenvalues of ``E E^T`` that decide how far the ``E^T``
reading is from exact; :func:`keep_k_vectors` draws the paper's vector sets.
:func:`keep_k_similarities` runs several variants on the same vectors, sharing their readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from scipy.linalg import blas

from lmscope.core.tensors import blas_matmul, keep_largest_abs
from lmscope.core.view import ModelView
from lmscope.embedding.projection import READINGS, group_vectors, pinv_wide
from lmscope.embedding.top_k import check_k

Tensor = torch.Tensor
PAIRINGS = ("paper", "both")
#: A dense float32 product (OpenBLAS, ``syrk`` or ``gemm``) does about this many times more multiply-adds
#: per second than a sparse one (scipy), measured on the 2-core CPU with Gemma 3's 262,144-word
#: vocabulary (1.5e3-6e3 for syrk, 1.6e3-3.8e3 for gemm): a Gram product of keep-k readings is done
#: sparse when its sparse work times this is below the dense product's multiply-adds.
SPARSE_SPEEDUP = 1500


def keep_k(x: Tensor, k: int) -> Tensor:
    """Zero all but the k largest-magnitude entries of each row of ``x`` (n, m): (n, m).

    ValueError unless ``1 <= k <= m``; with ``k == m`` nothing is zeroed (``x`` itself is returned).
    """
    check_k(k, x.shape[-1], "the number of coordinates")
    return keep_largest_abs(x, k)


def _cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


@torch.no_grad()
def keep_k_similarity(X: Tensor, E: Tensor, ks, reading: str = "transpose", pairing: str = "paper",
                      E_pinv: Tensor | None = None) -> list[float]:
    """Cosine between ``X X^T`` and the Gram matrix of keep-k readings of ``X`` (n, d), one per k.

    ``E`` is the unembedding (d, V); ``E_pinv`` (V, d) its pseudo-inverse if already computed.
    See the module docstring for ``reading`` and ``pairing``.
    """
    return keep_k_similarities(X, E, ks, [(reading, pairing)], E_pinv)[reading, pairing]


@torch.no_grad()
def keep_k_similarities(X: Tensor, E: Tensor, ks, variants=(("transpose", "paper"), ("pinv", "paper"),
                        ("pinv", "both")), E_pinv: Tensor | None = None) -> dict[tuple[str, str], list[float]]:
    """:func:`keep_k_similarity` for several ``(reading, pairing)`` variants of the same ``X`` (n, d):
    ``{(reading, pairing): [cosine per k]}``, each reading and each keep-k of it computed once."""
    variants = [tuple(v) for v in variants]
    for reading, pairing in variants:
        if reading not in READINGS:
            raise ValueError(f"Unknown reading '{reading}': use 'transpose' or 'pinv'.")
        if pairing not in PAIRINGS:
            raise ValueError(f"Unknown pairing '{pairing}': use 'paper' (E on one side) or 'both'.")
    X, E = X.detach().double().cpu(), E.detach().cpu()
    P_E = blas_matmul(X.float(), E.float())  # (n, V) float32: memory n * V * 4 bytes
    P_inv = None
    if any(reading == "pinv" for reading, _ in variants):
        E_pinv = pinv_wide(E) if E_pinv is None else E_pinv.detach().cpu()
        P_inv = blas_matmul(X.float(), E_pinv.float().T)  # (n, V)
    sides = {("transpose", "paper"): ("E", "E"), ("transpose", "both"): ("E", "E"),
             ("pinv", "paper"): ("E", "inv"), ("pinv", "both"): ("inv", "inv")}
    readings = {"E": P_E, "inv": P_inv}
    G = X @ X.T
    ks = [int(k) for k in ks]
    for k in ks:
        check_k(k, E.shape[1], "the number of coordinates")
    growing = {name: _growing_keep_k(readings[name], sorted(set(ks)))
               for name in {side for v in variants for side in sides[v]}}
    by_k = {}
    for k in sorted(set(ks)):
        kept = {name: next(steps) for name, steps in growing.items()}  # (keep_k(reading, k), its ids), in place
        by_k[k] = {v: _cosine(_gram(*kept[sides[v][0]], *kept[sides[v][1]]), G) for v in variants}  # float32: ~1e-6
    return {v: [by_k[k][v] for k in ks] for v in variants}


def _growing_keep_k(x: Tensor, ks: list[int]):
    """Yield ``(keep_k(x, k), ids)`` for ascending ``ks``: the kept matrix (n, m), one tensor filled in
    place, and the ids (n, k) of its kept entries.

    One top-``max(ks)`` selection for all k instead of one per k (on a 262,144-word vocabulary the
    selections cost as much as the Gram products); ties aside, the same entries as :func:`keep_k`.
    """
    order = torch.topk(x.abs(), ks[-1], dim=-1, sorted=True).indices  # (n, max k); ks[-1] <= m (checked)
    kept, done = torch.zeros_like(x), 0
    for k in ks:
        idx = order[:, done:k]
        kept.scatter_(-1, idx, x.gather(-1, idx))
        done = k
        yield kept, order[:, :k]


def _gram(a: Tensor, a_ids: Tensor, b: Tensor, b_ids: Tensor) -> Tensor:
    """``a @ b.T`` (n, n) of two keep-k readings (n, m) whose nonzeros sit at ``a_ids``, ``b_ids`` (n, k).

    Sparse (scipy) while few rows share a coordinate, else dense BLAS, through ``syrk`` (half the work)
    when ``a`` is ``b``. The sparse work is sum over coordinates of (rows of ``a`` holding it) x (rows of
    ``b`` holding it); hub tokens, kept by many rows, make it grow faster than k^2.
    """
    n, m = a.shape
    same = a is b
    syrk = same and a.dtype == torch.float32
    count_a = torch.bincount(a_ids.flatten(), minlength=m).double()
    count_b = count_a if same else torch.bincount(b_ids.flatten(), minlength=m).double()
    if float(count_a @ count_b) * SPARSE_SPEEDUP < n * n * m / (2 if syrk else 1):
        A = _csr(a, a_ids)
        return torch.from_numpy((A @ (A if same else _csr(b, b_ids)).T).toarray())
    if syrk:
        upper = torch.from_numpy(blas.ssyrk(1.0, a.numpy().T, trans=1))  # upper triangle of a a^T
        return upper.triu() + upper.triu(1).T
    return blas_matmul(a, b.T)


def _csr(kept: Tensor, ids: Tensor) -> scipy.sparse.csr_matrix:
    """The entries of ``kept`` (n, m) at ``ids`` (n, k) as a sparse (n, m) matrix."""
    n, k = ids.shape
    return scipy.sparse.csr_matrix((kept.gather(-1, ids).flatten().numpy(), ids.flatten().clone().numpy(),
                                    np.arange(0, n * k + 1, k)), shape=kept.shape)  # own copies: scipy may sort them


@dataclass
class GramSpectrum:
    """Eigenvalues of ``E E^T`` (d,), largest first, and two summaries of how far it is from ``c I``."""

    eigenvalues: Tensor
    condition: float  # largest / smallest eigenvalue
    top_share: float  # largest eigenvalue / trace (1/d for a multiple of the identity)

    def rows(self) -> list[tuple[str, str]]:
        d = len(self.eigenvalues)
        return [("condition number", f"{self.condition:.3g}"),
                ("top eigenvalue / trace", f"{self.top_share:.3f} (1/d = {1 / d:.4f} for c I)")]


@torch.no_grad()
def gram_spectrum(E: Tensor) -> GramSpectrum:
    """The spectrum of ``E E^T`` for an unembedding ``E`` (d, V); float64."""
    E = E.detach().double()
    ev = torch.linalg.eigvalsh(blas_matmul(E, E.T)).flip(0).clamp_min(0)  # (d,), descending
    return GramSpectrum(ev, float(ev[0] / ev[-1].clamp_min(1e-300)), float(ev[0] / ev.sum()))


@torch.no_grad()
def keep_k_vectors(view: ModelView, n: int = 1000, seed: int = 0, hidden: Tensor | None = None) -> dict[str, Tensor]:
    """The paper's vector sets, each (n, d_model): Gaussian, FF values sampled from all layers.

    ``hidden`` (any, d_model), e.g. residual states of some text, adds ``n`` of its rows.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of vectors, got {n}.")
    g = torch.Generator().manual_seed(seed)
    values = torch.cat([group_vectors(view, l, "ff_values").detach().float().cpu()
                        for l in range(view.cfg.n_layers)])  # (L * d_ff, d)
    out = {"Gaussian": torch.randn(n, view.cfg.d_model, generator=g),
           "FF values": values[torch.randperm(len(values), generator=g)[:n]]}
    if hidden is not None:
        hidden = hidden.detach().float().reshape(-1, view.cfg.d_model).cpu()
        out["hidden states"] = hidden[torch.randperm(len(hidden), generator=g)[:n]]
    return out
