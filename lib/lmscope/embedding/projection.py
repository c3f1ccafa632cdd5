"""Reading vectors and parameters through the vocabulary (Dar et al., "Analyzing Transformers in Embedding Space").

``E`` is the unembedding ``W_U`` (d_model, d_vocab): a residual vector ``h`` gives
logits ``h @ E``. Since ``h . w = (h E)(E' w)`` for a right inverse ``E'`` (d_vocab,
d_model) of ``E``, every parameter that reads from or writes to the residual stream can
be read over vocabulary items:

=========================  ====================  ==========================
parameter                  reading (exact)       default reading ("transpose")
=========================  ====================  ==========================
written to the residual    ``v E``               ``v E``
(FF values, W_O rows)
read from the residual     ``k E'^T``            ``k E``
(FF keys, W_Q/W_K/W_V cols)
W_QK = W_Q W_K^T (a head)  ``E' W_QK E'^T``      ``E^T W_QK E``
W_VO = W_V W_O   (a head)  ``E' W_VO E``         ``E^T W_VO E``
=========================  ====================  ==========================

``reading="transpose"`` uses ``E' = E^T`` (what the paper uses in practice);
``reading="pinv"`` the pseudo-inverse ``E^+``. Parameters are read raw (no norm, no
bias); hidden states go through the final norm first (the logit lens).

A head's token pairs are the top entries of a |V| x |V| matrix ``A B^T`` with factors
``A, B`` (d_vocab, d_head); :func:`top_pairs` finds them a block of rows at a time and
never materialises the full matrix.

>>> proj = Projector(view, tokenizer)                     # doctest: +SKIP
>>> proj.read(layer=12, group="ff_values", index=34).tokens   # doctest: +SKIP
>>> proj.head_pairs(layer=5, head=3, circuit="vo").rows()     # doctest: +SKIP
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch

from lmscope.core.lens import token_text

Tensor = torch.Tensor

# parameter group -> how it touches the residual stream ("in": reads it, "out": writes to it)
GROUPS = {
    "ff_keys": "in",
    "ff_gate_keys": "in",
    "ff_values": "out",
    "W_Q": "in",
    "W_K": "in",
    "W_V": "in",
    "W_O": "out",
}
READINGS = ("transpose", "pinv")
CIRCUITS = ("qk", "vo")


# -- small checks ------------------------------------------------------------------------
def _index(x, name: str, n: int, what: str) -> int:
    try:
        i = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {x!r}.") from None
    if not 0 <= i < n:
        raise IndexError(f"{name} {x} does not exist: {what} has {name.lower()}s 0..{n - 1}.")
    return i


def check_k(k: int, n: int, what: str = "the vocabulary") -> int:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > n:
        raise ValueError(f"k={k} is larger than {what} ({n} entries).")
    return k


# -- parameter vectors --------------------------------------------------------------------
def group_vectors(view, layer: int, group: str) -> Tensor:
    """All vectors of one parameter group of a layer, each a row in d_model: (n, d_model).

    ``ff_keys``/``ff_gate_keys``/``ff_values``: (d_ff, d_model). ``W_Q``: the columns of
    every query head, (n_heads*d_head, d_model), row ``h*d_head + c`` is column ``c`` of
    head ``h`` (a "subhead"); ``W_K``/``W_V``: the same for the distinct key/value heads
    (n_kv_heads*d_head rows); ``W_O``: the rows of every head, (n_heads*d_head, d_model).
    """
    if group not in GROUPS:
        raise ValueError(f"Unknown parameter group '{group}': use one of {', '.join(GROUPS)}.")
    lv = view.layer(layer)
    cfg = view.cfg
    if group == "ff_keys":
        return lv.ff_keys
    if group == "ff_values":
        return lv.ff_values
    if group == "ff_gate_keys":
        if lv.ff_gate_keys is None:
            raise ValueError(f"This {cfg.family} model has no gated MLP, so no 'ff_gate_keys'.")
        return lv.ff_gate_keys
    if group == "W_O":
        return lv.W_O.reshape(cfg.n_heads * cfg.d_head, cfg.d_model)
    w = getattr(lv, group)  # (n_heads, d_model, d_head), kv heads repeated for GQA
    if group in ("W_K", "W_V"):
        w = w[:: cfg.n_heads // cfg.n_kv_heads]  # (n_kv_heads, d_model, d_head)
    return w.transpose(1, 2).reshape(-1, cfg.d_model)


def n_vectors(view, group: str) -> int:
    cfg = view.cfg
    if group.startswith("ff_"):
        return cfg.d_ff
    return (cfg.n_kv_heads if group in ("W_K", "W_V") else cfg.n_heads) * cfg.d_head


# -- token filters -----------------------------------------------------------------------
def token_mask(tokenizer, d_vocab: int | None = None, *, alphabetic: bool = False,
               drop_special: bool = True, ascii_only: bool = False) -> Tensor:
    """Boolean mask (d_vocab,) of the tokens to keep.

    ``alphabetic``: only tokens that are letters once the word-start marker (a space,
    ``Ġ`` or ``▁``) is stripped; ``ascii_only``: only ASCII tokens; ``drop_special``:
    drop the tokenizer's special tokens.
    """
    n = d_vocab or len(tokenizer)
    keep = torch.ones(n, dtype=torch.bool)
    if alphabetic or ascii_only:
        pieces = tokenizer.convert_ids_to_tokens(list(range(min(n, len(tokenizer)))))
        for i, piece in enumerate(pieces):
            word = (piece or "").lstrip("Ġ▁ ")
            if alphabetic and not word.isalpha():
                keep[i] = False
            if ascii_only and not word.isascii():
                keep[i] = False
        keep[len(pieces):] = False
    if drop_special:
        for i in getattr(tokenizer, "all_special_ids", []):
            if 0 <= i < n:
                keep[i] = False
    return keep


def token_texts(tokenizer, ids) -> list[str]:
    """Tokens as readable text (a leading space shown as ``␣``, newlines as ``\\n``)."""
    if tokenizer is None:
        return [str(int(i)) for i in ids]
    return [token_text(tokenizer, i) for i in ids]


# -- results ---------------------------------------------------------------------------
@dataclass
class TokenScores:
    """Top tokens of one reading: ``ids`` (k,), ``scores`` (k,), best first."""

    ids: Tensor
    scores: Tensor
    tokens: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        return [{"token": t, "id": int(i), "score": float(s)}
                for t, i, s in zip(self.tokens, self.ids, self.scores)]


@dataclass
class TokenPairs:
    """Top token pairs of a |V| x |V| reading: ``rows``/``cols``/``scores`` (k,), best first.

    For ``qk`` a row is a query token and a column a key token it attends to; for ``vo``
    a row is an attended token and a column the token its copy promotes in the output.
    """

    row_ids: Tensor
    col_ids: Tensor
    scores: Tensor
    row_tokens: list[str] = field(default_factory=list)
    col_tokens: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        return [{"row": a, "col": b, "score": float(s)}
                for a, b, s in zip(self.row_tokens, self.col_tokens, self.scores)]


# -- top-k helpers ---------------------------------------------------------------------
def top_entries(scores: Tensor, k: int, mask: Tensor | None = None, negative: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k of ``scores`` (..., d_vocab) over allowed tokens: (values, ids), each (..., k).

    ``negative`` ranks by ``-scores`` (the tokens a vector suppresses) and returns those
    negated scores.
    """
    s = -scores if negative else scores
    if mask is not None:
        n_allowed = int(mask.sum())
        check_k(k, n_allowed, "the number of allowed tokens")
        s = s.masked_fill(~mask.to(s.device), float("-inf"))
    else:
        check_k(k, s.shape[-1])
    return torch.topk(s, k, dim=-1)


@torch.no_grad()
def top_pairs(A: Tensor, B: Tensor, k: int, *, row_mask: Tensor | None = None,
              col_mask: Tensor | None = None, drop_diagonal: bool = False,
              negative: bool = False, chunk_size: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k entries of ``M = A @ B.T`` without building M: (scores, rows, cols), each (k,).

    ``A`` is (n_rows, r), ``B`` (n_cols, r). Rows are visited in blocks of
    ``chunk_size``, largest ``||A_i||`` first; each block's top-k merges into a running
    top-k, and the search stops once ``||A_i|| * max_j ||B_j||`` (a bound on any later
    entry) falls below the current k-th score. Peak extra memory: the two factors, one
    (chunk_size, n_cols) block and O(k). ``row_mask``/``col_mask`` (bool) restrict the
    tokens; ``drop_diagonal`` skips entries with row == col (e.g. a token with itself).
    """
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"top_pairs needs factors (n, r) and (m, r), got {tuple(A.shape)} and {tuple(B.shape)}.")
    if negative:
        A = -A
    rows = torch.arange(A.shape[0]) if row_mask is None else row_mask.nonzero().squeeze(1)
    cols = torch.arange(B.shape[0]) if col_mask is None else col_mask.nonzero().squeeze(1)
    A, B = A[rows.to(A.device)], B[cols.to(B.device)]
    n_pairs = len(rows) * len(cols) - (int(torch.isin(rows, cols).sum()) if drop_diagonal else 0)
    check_k(k, n_pairs, "the number of allowed token pairs")
    norms = A.norm(dim=1)
    order = torch.argsort(norms, descending=True)
    b_max = float(B.norm(dim=1).max())
    best_s = torch.full((0,), float("-inf"), dtype=A.dtype, device=A.device)
    best_r = torch.zeros(0, dtype=torch.long, device=A.device)
    best_c = torch.zeros(0, dtype=torch.long, device=A.device)
    cols_dev = cols.to(A.device)
    for start in range(0, len(order), chunk_size):
        block = order[start : start + chunk_size]
        if len(best_s) == k and float(norms[block[0]]) * b_max < float(best_s[-1]):
            break  # no later row can beat the current k-th entry
        s = A[block] @ B.T  # (c, n_cols)
        if drop_diagonal:
            same = rows.to(A.device)[block][:, None] == cols_dev[None, :]
            s = s.masked_fill(same, float("-inf"))
        flat_s = s.reshape(-1)
        if len(best_s) == k:  # only entries above the current k-th can enter: skip the full top-k
            cand = (flat_s > best_s[-1]).nonzero().squeeze(1)
            vals, pick = torch.topk(flat_s[cand], min(k, len(cand)))
            flat = cand[pick]
        else:
            vals, flat = torch.topk(flat_s, min(k, flat_s.numel()))
        r, c = block[flat // s.shape[1]], flat % s.shape[1]
        merged_s = torch.cat([best_s, vals])
        keep = torch.topk(merged_s, min(k, len(merged_s))).indices
        best_s, best_r, best_c = merged_s[keep], torch.cat([best_r, r])[keep], torch.cat([best_c, c])[keep]
    finite = torch.isfinite(best_s)
    best_s, best_r, best_c = best_s[finite], best_r[finite], best_c[finite]
    scores = -best_s if negative else best_s
    return scores, rows[best_r.cpu()], cols[best_c.cpu()]


# -- the projector ---------------------------------------------------------------------
class Projector:
    """Reads hidden states and parameters of one model through its vocabulary.

    ``reading`` chooses ``E'``: ``"transpose"`` (E^T, the paper's practice) or
    ``"pinv"`` (E^+). ``mask`` (bool, d_vocab) restricts every top-k to some tokens
    (see :func:`token_mask`); None keeps all.
    """

    def __init__(self, view, tokenizer=None, *, reading: str = "transpose", mask: Tensor | None = None):
        if reading not in READINGS:
            raise ValueError(f"Unknown reading '{reading}': use 'transpose' (E^T) or 'pinv' (E^+).")
        self.view, self.tokenizer, self.reading = view, tokenizer, reading
        if mask is not None and mask.shape != (view.cfg.d_vocab,):
            raise ValueError(f"mask must have shape ({view.cfg.d_vocab},), got {tuple(mask.shape)}.")
        self.mask = mask
        self.E = view.W_U.detach().float()  # (d_model, d_vocab)
        self._E_in: Tensor | None = None

    @property
    def E_in(self) -> Tensor:
        """``E'^T`` (d_model, d_vocab): how vectors that read from the residual are projected."""
        if self._E_in is None:
            self._E_in = self.E if self.reading == "transpose" else torch.linalg.pinv(self.E).T
        return self._E_in

    # -- whole readings (d_vocab scores) --
    def project(self, vectors: Tensor, side: str = "out") -> Tensor:
        """Scores over the vocabulary of vectors (..., d_model) -> (..., d_vocab).

        ``side="out"``: vectors written to the residual (``v E``); ``"in"``: vectors that
        read it (``k E'^T``).
        """
        if side not in ("in", "out"):
            raise ValueError(f"side must be 'in' or 'out', got {side!r}.")
        E = self.E if side == "out" else self.E_in
        return vectors.detach().to(E.device, E.dtype) @ E

    def logit_lens(self, hidden: Tensor) -> Tensor:
        """Hidden states (..., d_model) through the final norm and unembedding: (..., d_vocab)."""
        with torch.no_grad():
            return self.view.unembed(hidden.to(self.view.device, self.view.W_U.dtype)).float()

    def vector(self, layer: int, group: str, index: int) -> Tensor:
        """One parameter vector (d_model,): unit or subhead ``index`` of ``group`` in ``layer``."""
        vecs = group_vectors(self.view, layer, group)
        i = _index(index, "Index", vecs.shape[0], f"group {group} of layer {layer}")
        return vecs[i]

    # -- top tokens --
    def top(self, scores: Tensor, k: int = 20, negative: bool = False) -> TokenScores:
        """The top-k tokens of one vocabulary reading (d_vocab,)."""
        vals, ids = top_entries(scores, k, self.mask, negative)
        return TokenScores(ids.cpu(), vals.cpu(), token_texts(self.tokenizer, ids))

    def read(self, layer: int, group: str, index: int, k: int = 20, negative: bool = False) -> TokenScores:
        """Top tokens of a parameter vector (FF key/value, subhead column of W_Q/W_K/W_V, row of W_O)."""
        return self.top(self.project(self.vector(layer, group, index), GROUPS[group]), k, negative)

    def read_hidden(self, hidden: Tensor, k: int = 20) -> TokenScores:
        """Top tokens of one hidden state (d_model,) through the logit lens."""
        return self.top(self.logit_lens(hidden), k)

    # -- heads as |V| x |V| matrices --
    def head_factors(self, layer: int, head: int, circuit: str = "qk") -> tuple[Tensor, Tensor]:
        """Factors (A, B), each (d_vocab, d_head), with the head's vocabulary matrix = A @ B.T.

        ``qk``: E'^T-side reading of W_Q W_K^T on both sides; ``vo``: W_V read on the input
        side, W_O on the output side (``E' W_V W_O E``).
        """
        if circuit not in CIRCUITS:
            raise ValueError(f"Unknown circuit '{circuit}': use 'qk' or 'vo'.")
        lv = self.view.layer(layer)
        h = _index(head, "Head", self.view.cfg.n_heads, f"layer {layer}")
        a, b = lv.W_QK(h) if circuit == "qk" else lv.W_VO(h)  # each (d_model, d_head)
        E_a = self.E_in
        E_b = self.E_in if circuit == "qk" else self.E
        return E_a.T @ a.detach().float(), E_b.T @ b.detach().float()  # (d_vocab, d_head) each

    def head_pairs(self, layer: int, head: int, circuit: str = "qk", k: int = 50, *,
                   drop_identical: bool = False, negative: bool = False, chunk_size: int = 1024) -> TokenPairs:
        """Top-k token pairs of a head's W_QK or W_VO read in embedding space."""
        A, B = self.head_factors(layer, head, circuit)
        scores, r, c = top_pairs(A, B, k, row_mask=self.mask, col_mask=self.mask,
                                 drop_diagonal=drop_identical, negative=negative, chunk_size=chunk_size)
        return TokenPairs(r, c, scores.cpu(), token_texts(self.tokenizer, r), token_texts(self.tokenizer, c))


# -- keep-k: E^T against E^+ (appendix A of the paper) -------------------------------------
def keep_k(x: Tensor, k: int) -> Tensor:
    """Zero all but the k largest-magnitude entries of each row of ``x`` (n, m)."""
    check_k(k, x.shape[-1], "the number of coordinates")
    idx = x.abs().topk(k, dim=-1).indices
    return torch.zeros_like(x).scatter_(-1, idx, x.gather(-1, idx))


def _cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


@torch.no_grad()
def keep_k_similarity(X: Tensor, E: Tensor, ks, reading: str = "transpose") -> list[float]:
    """How well sparse vocabulary readings keep the geometry of vectors ``X`` (n, d).

    The reading of ``X`` is ``P = X E`` (transpose) or ``X (E^+)^T`` (pinv), (n, d_vocab).
    For each k the Gram matrix ``keep_k(P) keep_k(P)^T`` is compared with ``X X^T`` by
    cosine similarity (1 = same up to scale). Returns one number per k.
    """
    if reading not in READINGS:
        raise ValueError(f"Unknown reading '{reading}': use 'transpose' or 'pinv'.")
    X, E = X.detach().float(), E.detach().float()
    P = X @ (E if reading == "transpose" else torch.linalg.pinv(E).T)  # (n, d_vocab)
    G = X.double() @ X.double().T
    out = []
    for k in ks:
        S = keep_k(P, int(k))
        S = S.double()
        out.append(_cosine(S @ S.T, G))
    return out


# -- finding readable units ------------------------------------------------------------------
@torch.no_grad()
def coherent_units(proj: Projector, layer: int, group: str = "ff_values", k: int = 10, n: int = 5,
                   chunk_size: int = 512) -> list[tuple[int, float]]:
    """The ``n`` vectors of a group whose top-``k`` tokens are most alike: [(index, coherence)].

    Coherence is the mean pairwise cosine similarity of the top tokens' input embeddings
    (``W_E`` rows), a cheap proxy for "the tokens share a meaning". Uses ``proj.mask``.
    """
    vecs = group_vectors(proj.view, layer, group)
    W_E = proj.view.W_E.detach().float()
    W_E = W_E / W_E.norm(dim=1, keepdim=True).clamp_min(1e-12)
    scores = []
    for start in range(0, vecs.shape[0], chunk_size):
        reading = proj.project(vecs[start : start + chunk_size], GROUPS[group])  # (c, V)
        _, ids = top_entries(reading, k, proj.mask)  # (c, k)
        e = W_E[ids]  # (c, k, d)
        sim = e @ e.transpose(1, 2)  # (c, k, k)
        scores.append((sim.sum((1, 2)) - k) / (k * (k - 1)))
    scores = torch.cat(scores)
    top = scores.topk(n)
    return [(int(i), float(s)) for s, i in zip(top.values, top.indices)]


@torch.no_grad()
def hub_tokens(proj: Projector, layers=None, group: str = "ff_values", k: int = 50,
               factor: float = 10.0) -> Tensor:
    """Tokens in the top-k of far more vectors than chance: a bool mask (d_vocab,).

    Some tokens (often word fragments never predicted, with outsized unembedding norms)
    top the reading of almost any vector and hide what a vector is specific about. A token
    is a hub when it appears in the top-k of ``group`` vectors (over ``layers``, default
    every fifth) more than ``factor`` times as often as a uniform share ``k / d_vocab``.
    Use ``proj.mask & ~hub_tokens(proj)`` to read without them.
    """
    view = proj.view
    layers = range(0, view.cfg.n_layers, 5) if layers is None else layers
    counts = torch.zeros(view.cfg.d_vocab)
    n = 0
    for layer in layers:
        vecs = group_vectors(view, layer, group)
        for start in range(0, vecs.shape[0], 512):
            ids = proj.project(vecs[start : start + 512], GROUPS[group]).topk(k, dim=-1).indices
            counts += torch.bincount(ids.flatten().cpu(), minlength=view.cfg.d_vocab)
            n += ids.shape[0]
    return counts > factor * n * k / view.cfg.d_vocab


def large_norm_tokens(view, quantile: float = 0.95) -> Tensor:
    """Tokens whose unembedding column has a norm above ``quantile`` of all: a bool mask (d_vocab,).

    In models with tied embeddings, word fragments that are never predicted (``␣strugg``,
    ``␣interpre``) keep outsized norms and win raw readings of unrelated vectors.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}.")
    norms = view.W_U.detach().float().norm(dim=0)
    return norms > torch.quantile(norms, quantile)
