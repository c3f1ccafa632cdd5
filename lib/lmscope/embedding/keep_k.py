"""Keep-k: do the top entries of a vocabulary reading carry the vector? (Dar et al., appendix A)

A vocabulary reading ``P = X E`` (``reading="transpose"``) or ``X (E^+)^T`` (``"pinv"``) of
vectors ``X`` (n, d_model) is made sparse by keeping the k entries of largest magnitude per
row (:func:`keep_k`); :func:`keep_k_similarity` asks how much of the geometry of ``X``
survives: the cosine of the sparse readings' Gram matrix with ``X X^T`` (1 = same up to scale).
"""

from __future__ import annotations

import torch

from lmscope.core.tensors import keep_largest_abs
from lmscope.embedding.projection import READINGS
from lmscope.embedding.top_k import check_k

Tensor = torch.Tensor


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
def keep_k_similarity(X: Tensor, E: Tensor, ks, reading: str = "transpose") -> list[float]:
    """How well sparse vocabulary readings keep the geometry of vectors ``X`` (n, d).

    The reading of ``X`` is ``P = X E`` (transpose) or ``X (E^+)^T`` (pinv), (n, d_vocab),
    with ``E`` the unembedding (d, d_vocab). For each k the Gram matrix
    ``keep_k(P) keep_k(P)^T`` is compared with ``X X^T`` by cosine similarity (1 = same up
    to scale). Returns one number per k.
    """
    if reading not in READINGS:
        raise ValueError(f"Unknown reading '{reading}': use 'transpose' or 'pinv'.")
    X, E = X.detach().float(), E.detach().float()
    P = X @ (E if reading == "transpose" else torch.linalg.pinv(E).T)  # (n, d_vocab)
    G = X.double() @ X.double().T
    out = []
    for k in ks:
        S = keep_k(P, int(k)).double()
        out.append(_cosine(S @ S.T, G))
    return out
