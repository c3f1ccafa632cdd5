"""Group FF value vectors by direction: spherical k-means, and clusters of every value of a model.

:func:`spherical_kmeans` groups vectors by cosine similarity (k-means on the unit sphere, in
torch, chunked); :func:`cluster_values` runs it over every value of a model and names each
cluster by the top tokens of its centroid. The original LM-Debugger's agglomerative clustering
"can take several hours"; this takes seconds on a CPU for the embedded model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lmscope.core.tokens import vocab_texts
from lmscope.debugger.interventions import value_name

Tensor = torch.Tensor


@dataclass
class Clusters:
    """Result of :func:`spherical_kmeans`: ``labels`` (N,), unit-norm ``centroids`` (K, d)."""

    labels: Tensor  # (N,) int64
    centroids: Tensor  # (K, d) float32, unit norm
    sizes: Tensor  # (K,) int64
    mean_cosine: float  # mean cosine of each point to its centroid
    n_iter: int
    seconds: float


def _assign(X: Tensor, C: Tensor, labels: Tensor, best: Tensor, chunk_size: int) -> None:
    """Each row of ``X`` (N, d) to its most similar centroid of ``C`` (K, d): fills ``labels`` and ``best`` (N,)."""
    for a in range(0, X.shape[0], chunk_size):
        sims = X[a : a + chunk_size] @ C.T  # (c, K)
        best[a : a + chunk_size], labels[a : a + chunk_size] = sims.max(dim=1)


@torch.no_grad()
def spherical_kmeans(X: Tensor, n_clusters: int, n_iter: int = 20, seed: int = 0,
                     chunk_size: int = 8192, tol: float = 1e-4) -> Clusters:
    """Cluster the rows of ``X`` (N, d) by cosine similarity.

    Forgy initialisation (``n_clusters`` distinct random rows), then alternate
    assignment (argmax cosine, ``chunk_size`` rows at a time) and centroid update
    (normalised mean); an empty cluster is re-seeded with the worst-fitting point.
    Stops after ``n_iter`` rounds or when the mean cosine improves by less than ``tol``.
    """
    start = time.perf_counter()
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty (N, d) matrix, got shape {tuple(X.shape)}.")
    n = X.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters={n_clusters} must be between 1 and the number of vectors ({n}).")
    X = torch.nn.functional.normalize(X.detach().float(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    C = X[torch.randperm(n, generator=gen)[:n_clusters]].clone()  # (K, d)
    labels = torch.empty(n, dtype=torch.long)
    best = torch.empty(n)
    prev = -2.0
    it = 0
    for it in range(1, n_iter + 1):
        _assign(X, C, labels, best, chunk_size)
        sums = torch.zeros_like(C).index_add_(0, labels, X)  # (K, d)
        sizes = torch.bincount(labels, minlength=n_clusters)
        empty = (sizes == 0).nonzero().flatten()
        if len(empty):
            worst = best.argsort()[: len(empty)]
            sums[empty] = X[worst]
            best[worst] = 1.0
        C = torch.nn.functional.normalize(sums, dim=1)
        mean_cos = float(best.mean())
        if mean_cos - prev < tol:
            break
        prev = mean_cos
    _assign(X, C, labels, best, chunk_size)  # final assignment to the final centroids
    sizes = torch.bincount(labels, minlength=n_clusters)
    return Clusters(labels, C, sizes, float(best.mean()), it, time.perf_counter() - start)


@dataclass
class ValueClusters:
    """Clusters of a model's value vectors; ``labels`` is (n_layers, d_ff)."""

    clusters: Clusters
    labels: Tensor  # (n_layers, d_ff) cluster of every value
    top_tokens: list[list[str]]  # per cluster: top tokens of centroid @ W_U

    def members(self, cluster: int) -> list[str]:
        """Value names in ``cluster``."""
        if not 0 <= cluster < len(self.top_tokens):
            raise IndexError(f"Cluster {cluster} does not exist (0..{len(self.top_tokens) - 1}).")
        return [value_name(int(l), int(u)) for l, u in (self.labels == cluster).nonzero().tolist()]

    def cluster_of(self, layer: int, unit: int) -> int:
        """The cluster of value ``L{layer}D{unit}``."""
        return int(self.labels[layer, unit])


@torch.no_grad()
def cluster_values(view, tokenizer=None, n_clusters: int = 512, n_iter: int = 20, seed: int = 0,
                   n_tokens: int = 10) -> ValueClusters:
    """Spherical k-means over every FF value vector of ``view`` (n_layers * d_ff rows); each cluster
    is named by the ``n_tokens`` top tokens of ``centroid @ W_U``."""
    cfg = view.cfg
    X = torch.cat([view.layers[l].ff_values.detach().float() for l in range(cfg.n_layers)])  # (L*d_ff, d)
    result = spherical_kmeans(X, n_clusters, n_iter=n_iter, seed=seed)
    top = (result.centroids @ view.W_U.detach().float()).topk(n_tokens, dim=1).indices  # (K, n_tokens)
    texts = vocab_texts(tokenizer, cfg.d_vocab)
    return ValueClusters(result, result.labels.reshape(cfg.n_layers, cfg.d_ff),
                         [[texts[i] for i in row] for row in top.tolist()])
