"""Find FF value vectors by concept: keyword search over the projection index, and clustering.

**Search.** Every value ``L{layer}D{unit}`` is a "document" holding its top tokens
(from :class:`lmscope.projection_index.ProjectionIndex`). A keyword matches every
token that reads as that word once the tokenizer's markers are dropped: a leading
space (byte-level ``Ġ``), sentencepiece's ``▁``, newlines, and case. So ``paris``
finds ``" Paris"``, ``"Paris"`` and ``"PARIS"``. A hit at rank ``r`` of a value's top
``k`` weighs ``1 - r / k``; a value's score sums, over the query's keywords, its best
hit per keyword, and values that match more keywords come first. An inverted index
(token id -> postings) makes a query a few array look-ups: in process, no server.

**Clustering.** :func:`spherical_kmeans` groups value vectors by cosine similarity
(k-means on the unit sphere, in torch, chunked); :func:`cluster_values` runs it over
every value of a model and names each cluster by the top tokens of its centroid.
The original tool's agglomerative clustering "can take several hours"; this takes
seconds on a CPU for the embedded model.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from lmscope.debugger.engine import decoded_vocab, value_name, vocab_texts

Tensor = torch.Tensor

# markers tokenizers use for spaces and newlines, dropped before matching
_MARKERS = "\u0120\u2581\u010a\u0109"  # Ġ ▁ Ċ ċ(tab)


def normalize_word(text: str) -> str:
    """How a token or keyword is compared: markers and surrounding whitespace dropped, lower case."""
    return text.strip().strip(_MARKERS).strip().lower()


@dataclass
class SearchHit:
    """A value whose top tokens match the query."""

    layer: int
    unit: int
    score: float  # sum over matched keywords of (1 - rank / k) of the best matching token
    n_keywords: int  # how many of the query's keywords it matched
    matched: list[tuple[str, int]]  # (token text, rank) of the matching tokens, best first
    annotation: str | None = None

    @property
    def name(self) -> str:
        return value_name(self.layer, self.unit)


class ValueSearch:
    """Keyword search over a projection index of values (see the module docstring).

    ``max_rank`` limits matching to each value's top ``max_rank`` tokens (default: all ``k``).
    """

    def __init__(self, index, tokenizer=None, annotations=None, max_rank: int | None = None):
        self.index = index
        self.annotations = annotations
        self.k = index.k if max_rank is None else max_rank
        if not 1 <= self.k <= index.k:
            raise ValueError(f"max_rank={max_rank} must be between 1 and the index's k={index.k}.")
        d_vocab = int(index.ids.max()) + 1 if tokenizer is None else max(len(tokenizer), int(index.ids.max()) + 1)
        self.texts = vocab_texts(tokenizer, d_vocab)
        # word -> token ids that read as it
        self._word_ids: dict[str, list[int]] = {}
        for i, text in enumerate(decoded_vocab(tokenizer, d_vocab)):
            word = normalize_word(text)
            if word:
                self._word_ids.setdefault(word, []).append(i)
        # inverted index over the flattened (n_layers * n_units, k) table
        ids = index.ids[..., : self.k].reshape(-1).numpy()
        self._order = np.argsort(ids, kind="stable")  # postings: flat positions sorted by token id
        self._sorted = ids[self._order]

    def token_ids(self, word: str) -> list[int]:
        """Token ids that read as ``word`` (any case, with or without space markers)."""
        return self._word_ids.get(normalize_word(word), [])

    @staticmethod
    def keywords(query: str) -> list[str]:
        """A query split on commas and whitespace, normalized, without repeats."""
        words = [normalize_word(w) for w in re.split(r"[,\s]+", query or "")]
        return list(dict.fromkeys(w for w in words if w))

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Values whose top tokens contain the query's words, best first (at most ``limit``).

        ValueError for an empty query or one none of whose words is a token of the
        vocabulary; an empty list when the words are tokens but no value has them on top.
        """
        words = self.keywords(query)
        if not words:
            raise ValueError("The search is empty: type a word, e.g. 'football' or 'happy, joy'.")
        known = {w: self.token_ids(w) for w in words}
        if not any(known.values()):
            raise ValueError(
                f"No token of this vocabulary reads as {', '.join(map(repr, words))} "
                "(search matches whole tokens): try a shorter or more common word."
            )
        k, n_units = self.k, self.index.n_units
        per_word = []  # (value indices, weights, flat positions) per keyword, best hit per value
        for word, tok in known.items():
            if not tok:
                continue
            tok = np.asarray(tok)
            lo = np.searchsorted(self._sorted, tok, side="left")
            hi = np.searchsorted(self._sorted, tok, side="right")
            if not (hi > lo).any():
                continue
            pos = np.concatenate([self._order[a:b] for a, b in zip(lo, hi)])  # flat positions
            value, rank = pos // k, pos % k
            order = np.lexsort((rank, value))  # by value, best rank first
            value, rank = value[order], rank[order]
            first = np.r_[True, value[1:] != value[:-1]]
            per_word.append((value[first], 1.0 - rank[first] / k))
        if not per_word:
            return []
        values = np.concatenate([v for v, _ in per_word])
        weights = np.concatenate([w for _, w in per_word])
        uniq, inverse = np.unique(values, return_inverse=True)
        score = np.zeros(len(uniq))
        count = np.zeros(len(uniq), dtype=int)
        np.add.at(score, inverse, weights)
        np.add.at(count, inverse, 1)
        best = np.lexsort((-score, -count))[:limit]
        all_ids = {i for ids in known.values() for i in ids}
        hits = []
        for j in best:
            layer, unit = divmod(int(uniq[j]), n_units)
            row = self.index.ids[layer, unit, :k].tolist()
            matched = [(self.texts[t], r) for r, t in enumerate(row) if t in all_ids]
            label = self.annotations.get(value_name(layer, unit)) if self.annotations is not None else None
            hits.append(SearchHit(layer, unit, float(score[j]), int(count[j]), matched, label))
        return hits


# -- clustering -------------------------------------------------------------------------------
@dataclass
class Clusters:
    """Result of :func:`spherical_kmeans`: ``labels`` (N,), unit-norm ``centroids`` (K, d)."""

    labels: Tensor  # (N,) int64
    centroids: Tensor  # (K, d) float32, unit norm
    sizes: Tensor  # (K,) int64
    mean_cosine: float  # mean cosine of each point to its centroid
    n_iter: int
    seconds: float


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
        for a in range(0, n, chunk_size):
            sims = X[a : a + chunk_size] @ C.T  # (c, K)
            best[a : a + chunk_size], labels[a : a + chunk_size] = sims.max(dim=1)
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
    for a in range(0, n, chunk_size):  # final assignment to the final centroids
        sims = X[a : a + chunk_size] @ C.T
        best[a : a + chunk_size], labels[a : a + chunk_size] = sims.max(dim=1)
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
        return int(self.labels[layer, unit])


@torch.no_grad()
def cluster_values(view, tokenizer=None, n_clusters: int = 512, n_iter: int = 20, seed: int = 0,
                   n_tokens: int = 10) -> ValueClusters:
    """Spherical k-means over every FF value vector of ``view`` (n_layers * d_ff rows)."""
    cfg = view.cfg
    X = torch.cat([view.layers[l].ff_values.detach().float() for l in range(cfg.n_layers)])  # (L*d_ff, d)
    result = spherical_kmeans(X, n_clusters, n_iter=n_iter, seed=seed)
    top = (result.centroids @ view.W_U.detach().float()).topk(n_tokens, dim=1).indices  # (K, n_tokens)
    texts = vocab_texts(tokenizer, cfg.d_vocab)
    return ValueClusters(result, result.labels.reshape(cfg.n_layers, cfg.d_ff),
                         [[texts[i] for i in row] for row in top.tolist()])
