"""Find FF value vectors by the words they promote: keyword search over the projection index.

Every value ``L{layer}D{unit}`` is a "document" holding its top tokens
(from :class:`lmscope.embedding.index.ProjectionIndex`). A keyword matches every
token that reads as that word once the tokenizer's markers are dropped: a leading
space (byte-level ``Ġ``), sentencepiece's ``▁``, newlines, and case. So ``paris``
finds ``" Paris"``, ``"Paris"`` and ``"PARIS"``. A hit at rank ``r`` of a value's top
``k`` weighs ``1 - r / k``; a value's score sums, over the query's keywords, its best
hit per keyword, and values that match more keywords come first. An inverted index
(token id -> postings) makes a query a few array look-ups: in process, no server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from lmscope.core.tokens import decoded_vocab, vocab_texts
from lmscope.debugger.interventions import value_name

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
        self._sorted_ids = ids[self._order]

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
            lo = np.searchsorted(self._sorted_ids, tok, side="left")
            hi = np.searchsorted(self._sorted_ids, tok, side="right")
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
