"""Aligning two models with different vocabularies, over the token strings they share (beyond Dar et al.).

The paper aligns models that share one vocabulary. Two independently trained models with their
own tokenizers (SmolLM2: byte-level BPE, 49,152 ids; Gemma 3: SentencePiece, 262,144 ids) still
share many token *strings*. :func:`token_bytes` turns every id into the bytes it stands for
(byte-level ``Ġ`` and SentencePiece ``▁`` both become a space, ``<0xNN>`` a byte; special tokens
none), :func:`shared_strings` keeps the strings that are exactly one id in each model, in one
common order. Restricted to those columns, ``E_a[:, ids_a]`` (d_a, n) and ``E_b[:, ids_b]``
(d_b, n) index the same n coordinates, so the paper's kernel-trick correlations
(:class:`lmscope.embedding.alignment.VocabGram`) apply unchanged, even for d_a != d_b.

Raw-space alignment is not defined here (576 vs 640 coordinates with no common meaning). The
control is the same computation over ``shared.shuffled(seed)``, model b's ids in a random order:
every marginal statistic is kept, only the string correspondence is broken. Across different
depths the summary is the relative-depth order of the paper's Hungarian layer matching
(:func:`depth_rank`), also after dividing out each layer's overall level (:func:`levels_removed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from lmscope.core.tokens import _byte_decoder
from lmscope.core.view import ModelView
from lmscope.embedding.alignment import Aligner, VocabGram, match, matched_correlation
from lmscope.embedding.projection import group_vectors, n_vectors

Tensor = torch.Tensor
SCHEMES = ("auto", "byte_level", "sentencepiece")

#: run sizes by profile (read with ``lmscope.core.profiles.settings(PROFILES, profile)``):
#: ``groups`` aligned; ``n_units`` vectors sampled per layer and side for the layer x layer matrix;
#: ``every`` use every n-th layer of each model; ``unit_pairs`` depth-matched layer pairs whose FF
#: values are matched unit by unit (Hungarian), ``unit_sample`` units of model a in each (all of b);
#: ``shuffles`` shuffled-order controls; ``n_perm`` random layer orders for :func:`depth_p_value`;
#: ``lens_texts`` Shakespeare snippets for :mod:`lmscope.embedding.cross_lens` (not an alignment argument).
PROFILES = {
    "quick": dict(groups=("ff_values", "W_O"), n_units=128, every=1, unit_pairs=3, unit_sample=256, shuffles=1,
                  n_perm=200, lens_texts=8),
    "full": dict(groups=("ff_keys", "ff_values", "W_Q", "W_K", "W_V", "W_O"), n_units=256, every=1,
                 unit_pairs=5, unit_sample=512, shuffles=2, n_perm=1000, lens_texts=48),
}


# -- the shared-string map --------------------------------------------------------------------
def tokenizer_scheme(tokenizer) -> str:
    """'byte_level' when the tokenizer's decoder is byte-level BPE, else 'sentencepiece' (▁ for a space)."""
    decoder = repr(getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None))
    return "byte_level" if "ByteLevel" in decoder else "sentencepiece"


def piece_bytes(piece: str, scheme: str) -> bytes:
    """The bytes one raw vocabulary entry stands for under ``scheme`` ('byte_level' or 'sentencepiece')."""
    if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
        return bytes([int(piece[3:5], 16)])
    if scheme == "byte_level":
        table = _byte_decoder()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        return piece.encode("utf-8")
    return piece.replace("\u2581", " ").encode("utf-8")


def token_bytes(tokenizer, d_vocab: int | None = None, scheme: str = "auto") -> list[bytes | None]:
    """What each id stands for, as bytes: a list of ``d_vocab`` entries (None: no string).

    Special tokens stand for none; other added tokens (Gemma's ``\\n``, ``<table>``) for their text
    as written; a ``<0xNN>`` byte token for none when a regular token has the same bytes (the
    tokenizer never writes it then).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown scheme '{scheme}': use one of {', '.join(SCHEMES)}.")
    scheme = tokenizer_scheme(tokenizer) if scheme == "auto" else scheme
    n = len(tokenizer) if d_vocab is None else min(d_vocab, len(tokenizer))
    added = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    special = {i for i, tok in added.items() if getattr(tok, "special", True)} | set(tokenizer.all_special_ids or [])
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    out = [None if (i in special or not isinstance(p, str) or not p) else
           added[i].content.encode("utf-8") if i in added else piece_bytes(p, scheme) for i, p in enumerate(pieces)]
    fallback = {i for i, p in enumerate(pieces) if out[i] is not None and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", p)}
    regular = {out[i] for i in range(n) if out[i] is not None and i not in fallback}
    out = [None if i in fallback and b in regular else b for i, b in enumerate(out)]
    return out + [None] * ((d_vocab or n) - n)


@dataclass
class SharedStrings:
    """Token strings that are exactly one id in each vocabulary: ``ids_a[i]`` and ``ids_b[i]`` stand for ``strings[i]``."""

    ids_a: Tensor  # (n,) long
    ids_b: Tensor  # (n,) long
    strings: list[bytes]
    unique_a: int  # strings that are one id in model a
    unique_b: int

    @property
    def count(self) -> int:
        return len(self.strings)

    def shuffled(self, seed: int) -> "SharedStrings":
        """The control: model b's ids in a random order (each string now paired with another's id)."""
        perm = torch.randperm(self.count, generator=torch.Generator().manual_seed(seed))
        return SharedStrings(self.ids_a, self.ids_b[perm], self.strings, self.unique_a, self.unique_b)


def _unique(strings: list[bytes | None]) -> dict[bytes, int]:  # string -> its id, for strings of one id only
    seen: dict[bytes, int] = {}
    dup: set[bytes] = set()
    for i, s in enumerate(strings):
        if s is not None:
            dup.update([s] if s in seen else [])
            seen[s] = i
    return {s: i for s, i in seen.items() if s not in dup}


def shared_strings(strings_a: list[bytes | None], strings_b: list[bytes | None]) -> SharedStrings:
    """The strings that occur exactly once in each list (lists from :func:`token_bytes`), in model a's id order."""
    ua, ub = _unique(strings_a), _unique(strings_b)
    common = sorted((ua[s], s) for s in ua.keys() & ub.keys())
    if not common:
        raise ValueError("The two vocabularies share no token string: nothing to align over.")
    ids_a = torch.tensor([i for i, _ in common], dtype=torch.long)
    ids_b = torch.tensor([ub[s] for _, s in common], dtype=torch.long)
    return SharedStrings(ids_a, ids_b, [s for _, s in common], len(ua), len(ub))


def shared_vocabulary(tokenizer_a, tokenizer_b, d_vocab_a: int | None = None,
                      d_vocab_b: int | None = None) -> SharedStrings:
    """:func:`shared_strings` of two tokenizers (ids up to each model's ``d_vocab``)."""
    return shared_strings(token_bytes(tokenizer_a, d_vocab_a), token_bytes(tokenizer_b, d_vocab_b))


# -- correlations over the shared strings ------------------------------------------------------
def _centred(E: Tensor) -> Tensor:
    """E (d, n) minus its mean over the n columns, float32 unless already float64 (tiny test models)."""
    E = E.detach()
    E = E if E.dtype == torch.float64 else E.float()
    return E - E.mean(1, keepdim=True)


class CrossAligner(Aligner):
    """:class:`Aligner` in embedding space over shared strings: column i of both readings is ``strings[i]``.

    ``E_a[:, shared.ids_a]`` (d_a, n) and ``E_b[:, shared.ids_b]`` (d_b, n), each centred over the n
    strings, give the Gram statistics (products in float32 for float32 models, kept in float64);
    ``prepared``/``correlation`` are inherited. ``like``: an aligner of the same two models whose
    C11 and C22 are reused (a shuffled control changes C12 only).
    """

    def __init__(self, view_a: ModelView, view_b: ModelView, shared: SharedStrings,
                 like: "CrossAligner | None" = None):
        for view, ids, side in ((view_a, shared.ids_a, "a"), (view_b, shared.ids_b, "b")):
            if int(ids.max()) >= view.cfg.d_vocab:
                raise ValueError(f"shared.ids_{side} reaches id {int(ids.max())}, but model {side} has "
                                 f"{view.cfg.d_vocab} tokens: build the map from this model's tokenizer.")
        self.view_a, self.view_b, self.space = view_a, view_b, "embedding"
        with torch.no_grad():
            Ea = _centred(view_a.W_U[:, shared.ids_a])  # (d_a, n), restricted before any copy
            Eb = _centred(view_b.W_U[:, shared.ids_b])  # (d_b, n)
            n = Ea.shape[1]
            C12 = (Ea @ Eb.T).double() / n
            if like is None:
                C11, C22 = (Ea @ Ea.T).double() / n, (Eb @ Eb.T).double() / n
            else:
                C11, C22 = like.gram.C11, like.gram.C22
        self.gram = VocabGram(C11, C12, C22)


def _layers(view: ModelView, every: int) -> list[int]:
    """Every ``every``-th layer, and always the last."""
    L = view.cfg.n_layers
    return sorted(set(range(0, L, max(1, every))) | {L - 1})


def _rows(n: int, k: int | None, g: torch.Generator) -> Tensor | None:  # k of n rows at random, or all
    return None if k is None or k >= n else torch.randperm(n, generator=g)[:k]


def cross_layer_similarity(aligner: CrossAligner, group: str, layers_a, layers_b, n_units: int | None = 128,
                           seed: int = 0) -> np.ndarray:
    """(len(layers_a), len(layers_b)): the paper's mean |corr| between the vectors of ``group`` in two layers.

    ``n_units`` vectors of each layer, sampled on both sides (the same rows in every layer of one
    model), estimate the mean over all pairs; None: all vectors.
    """
    g = torch.Generator().manual_seed(seed)
    rows_a = _rows(n_vectors(aligner.view_a, group), n_units, g)
    rows_b = _rows(n_vectors(aligner.view_b, group), n_units, g)
    dtype = torch.float32 if aligner.view_a.W_U.dtype != torch.float64 else torch.float64  # float32: 2x faster
    prep_b = [aligner.prepared("b", l, group, rows_b).to(dtype) for l in layers_b]  # each (n_b, d_b)
    out = np.zeros((len(layers_a), len(layers_b)))
    for i, la in enumerate(layers_a):
        Xa = aligner.prepared("a", la, group, rows_a).to(dtype)  # (n_a, d_b)
        for j, Xb in enumerate(prep_b):
            out[i, j] = float((Xa @ Xb.T).abs().mean())
    return out


def depth_rank(similarity) -> float:
    """Spearman correlation between the two layer indices of the Hungarian-matched pairs (1: depth order kept).

    ``similarity`` (La, Lb): :func:`~lmscope.embedding.alignment.match` pairs min(La, Lb) layers one
    to one, maximising the summed similarity (the paper's layer matching); 0 for a constant matrix.
    """
    S = np.asarray(similarity, dtype=float)
    if np.ptp(S) == 0:
        return 0.0
    rows, cols = linear_sum_assignment(S, maximize=True)
    if len(rows) < 3:
        return 0.0
    return float(spearmanr(rows, cols).statistic)


def depth_error(similarity) -> float:
    """Mean |relative depth of a row's best column - the row's relative depth| (0: on the diagonal)."""
    S = np.asarray(similarity, dtype=float)
    ra = np.arange(S.shape[0]) / max(S.shape[0] - 1, 1)
    rb = S.argmax(1) / max(S.shape[1] - 1, 1)
    return float(np.abs(ra - rb).mean())


def double_centred(similarity) -> np.ndarray:
    """``S`` minus its row and column means (plus the grand mean): what is left after each layer's overall level."""
    S = np.asarray(similarity, dtype=float)
    return S - S.mean(0, keepdims=True) - S.mean(1, keepdims=True) + S.mean()


def levels_removed(similarity) -> np.ndarray:
    """:func:`double_centred` ``log S``: ``S`` with every row's and column's overall factor divided out.

    Mean |corr| in embedding space is close to a product ``r_i c_j`` of how much each layer's
    vectors lie along the unembeddings' shared dominant directions (:func:`rank1_share`); the
    residual is where a specific layer pairing could show.
    """
    S = np.asarray(similarity, dtype=float)
    return double_centred(np.log(np.clip(S, 1e-12, None)))


def rank1_share(similarity) -> float:
    """Share of ``S``'s squared Frobenius norm in its first singular component (1: a pure product of levels)."""
    sv = np.linalg.svd(np.asarray(similarity, dtype=float), compute_uv=False)
    return float(sv[0] ** 2 / (sv ** 2).sum())


def depth_p_value(similarity, n: int = 1000, seed: int = 0) -> float:
    """How often :func:`depth_rank` of ``S`` with its columns in a random order is at least the real one."""
    S = np.asarray(similarity, dtype=float)
    rng = np.random.default_rng(seed)
    real = depth_rank(S)
    hits = sum(depth_rank(S[:, rng.permutation(S.shape[1])]) >= real for _ in range(n))
    return (1 + hits) / (1 + n)


def unit_match(aligner: CrossAligner, layer_a: int, layer_b: int, group: str = "ff_values",
               n_units: int | None = None, seed: int = 0) -> tuple[float, np.ndarray]:
    """Hungarian matching of ``n_units`` sampled vectors of ``layer_a`` to all of ``layer_b``.

    Returns (mean |corr| of the matched pairs, the matched |corr| values (n,)).
    """
    g = torch.Generator().manual_seed(seed)
    rows = _rows(n_vectors(aligner.view_a, group), n_units, g)
    C = (aligner.prepared("a", layer_a, group, rows) @ aligner.prepared("b", layer_b, group).T).abs().numpy()
    m = match(C)
    return matched_correlation(C), C[np.arange(len(m)), m]


# -- the whole experiment ----------------------------------------------------------------------
@dataclass
class CrossVocabAlignment:
    """Layer x layer matrices (real and shuffled control) per group, and unit matches at depth-matched pairs."""

    n_shared: int
    layers_a: list[int]
    layers_b: list[int]
    sims: dict = field(default_factory=dict)  # group -> (La, Lb) mean |corr| over the true string map
    controls: dict = field(default_factory=dict)  # group -> list of (La, Lb), one per shuffle
    #: (layer_a, layer_b at the same relative depth, matched |corr|, same over shuffled strings,
    #:  layer_b' at the mirrored depth, matched |corr| there)
    units: list = field(default_factory=list)
    n_perm: int = 1000  # random layer orders behind each p value

    def summary(self, n_perm: int | None = None) -> list[dict]:
        """Per group and matrix (the paper's mean |corr|, and :func:`levels_removed`): depth structure vs controls.

        ``depth rank``: :func:`depth_rank` (Hungarian layer matching, Spearman of the matched
        indices); ``p``: :func:`depth_p_value` over ``n_perm`` random layer orders of model b;
        ``depth error``: :func:`depth_error` of each layer's best partner; each beside the mean over
        the shuffled-string controls.
        """
        n_perm = self.n_perm if n_perm is None else n_perm
        if getattr(self, "_summary", (None,))[0] == n_perm:
            return self._summary[1]
        out = []
        for g, S in self.sims.items():
            for name, f in (("mean |corr|", np.asarray), ("levels removed", levels_removed)):
                M, C = f(S), [f(c) for c in self.controls[g]]
                out.append({"group": g, "matrix": name, "depth rank": depth_rank(M),
                            "depth rank (shuffled)": float(np.mean([depth_rank(c) for c in C])),
                            "p (layer order)": depth_p_value(M, n_perm),
                            "depth error": depth_error(M),
                            "depth error (shuffled)": float(np.mean([depth_error(c) for c in C])),
                            "mean |corr|": float(S.mean()), "mean |corr| (shuffled)": float(np.mean(self.controls[g])),
                            "rank-1 share": rank1_share(S)})
        self._summary = (n_perm, out)
        return out

    def headline(self, n_perm: int | None = None) -> dict:
        """Numbers for :func:`lmscope.core.results.save_results` (pairs are [real, shuffled control])."""
        out = {"shared strings": self.n_shared}
        for row in self.summary(n_perm):
            if row["matrix"] == "mean |corr|":
                g = row["group"]
                out[f"{g}: mean |corr| (shuffled)"] = [row["mean |corr|"], row["mean |corr| (shuffled)"]]
                out[f"{g}: depth rank corr (shuffled)"] = [row["depth rank"], row["depth rank (shuffled)"]]
                out[f"{g}: depth rank p"] = row["p (layer order)"]
        if self.units:
            out["FF units matched |corr| (shuffled)"] = [float(np.mean([u[2] for u in self.units])),
                                                         float(np.mean([u[3] for u in self.units]))]
            out["FF units matched |corr| at mirrored depth"] = float(np.mean([u[5] for u in self.units]))
        return out


def relative_partner(layer_a: int, n_a: int, n_b: int) -> int:
    """The layer of model b at the same relative depth as ``layer_a`` of model a."""
    return int(round(layer_a * (n_b - 1) / max(n_a - 1, 1)))


def cross_vocab_alignment(view_a: ModelView, view_b: ModelView, shared: SharedStrings, *, groups=("ff_values",),
                          n_units: int | None = 128, every: int = 1, unit_pairs: int = 3,
                          unit_sample: int | None = 256, shuffles: int = 1, n_perm: int = 1000,
                          seed: int = 0) -> CrossVocabAlignment:
    """Align two models over ``shared`` strings: layer matrices per group, each beside ``shuffles`` controls.

    Unit matching (FF values, Hungarian) runs at ``unit_pairs`` layers of model a spread over its
    depth, each against the layer of model b at the same relative depth (real and shuffled) and,
    as a depth control, the layer of b at the mirrored depth.
    """
    if shuffles < 1:
        raise ValueError("shuffles must be at least 1: the shuffled order is the only chance level here.")
    real = CrossAligner(view_a, view_b, shared)
    ctrl = [CrossAligner(view_a, view_b, shared.shuffled(seed + 1 + k), like=real) for k in range(shuffles)]
    la, lb = _layers(view_a, every), _layers(view_b, every)
    out = CrossVocabAlignment(shared.count, la, lb, n_perm=n_perm)
    for group in groups:
        group_vectors(view_a, 0, group)  # a clear error for an unknown group before any work
        out.sims[group] = cross_layer_similarity(real, group, la, lb, n_units, seed)
        out.controls[group] = [cross_layer_similarity(c, group, la, lb, n_units, seed) for c in ctrl]
    La, Lb = view_a.cfg.n_layers, view_b.cfg.n_layers
    picks = sorted(set(np.linspace(0, La - 1, unit_pairs).round().astype(int).tolist())) if unit_pairs else []
    for a in picks:
        b = relative_partner(a, La, Lb)
        m_real, _ = unit_match(real, a, b, "ff_values", unit_sample, seed)
        m_ctrl, _ = unit_match(ctrl[0], a, b, "ff_values", unit_sample, seed)
        far = relative_partner(La - 1 - a, La, Lb)
        m_far, _ = unit_match(real, a, far, "ff_values", unit_sample, seed)
        out.units.append((a, b, m_real, m_ctrl, far, m_far))
    return out
