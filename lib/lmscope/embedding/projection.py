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
``A, B`` (d_vocab, d_head), found by :func:`lmscope.embedding.top_k.top_pairs` without
building the full matrix.

>>> proj = Projector(view, tokenizer)                     # doctest: +SKIP
>>> proj.read(layer=12, group="ff_values", index=34).tokens   # doctest: +SKIP
>>> proj.head_pairs(layer=5, head=3, circuit="vo").rows()     # doctest: +SKIP
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch

from lmscope.core.tensors import blas_matmul
from lmscope.core.tokens import token_texts
from lmscope.core.view import ModelView
from lmscope.embedding.top_k import top_entries, top_pairs

Tensor = torch.Tensor

#: parameter group -> how it touches the residual stream ("in": reads it, "out": writes to it)
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
def check_index(x, name: str, n: int, what: str) -> int:
    """``x`` as an int in ``0..n-1``: TypeError for a non-integer, IndexError naming ``what`` when out of range."""
    try:
        i = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {x!r}.") from None
    if not 0 <= i < n:
        raise IndexError(f"{name} {x} does not exist: {what} has {name.lower()}s 0..{n - 1}.")
    return i


# -- parameter vectors --------------------------------------------------------------------
def group_vectors(view: ModelView, layer: int, group: str) -> Tensor:
    """All vectors of one parameter group of a layer, each a row in d_model: (n, d_model).

    ``ff_keys``/``ff_gate_keys``/``ff_values``: (d_ff, d_model); ``ff_values`` are read as the model
    applies them (``LayerView.ff_values_applied``: ``v_i`` times the post-FF norm's gain in Gemma 2/3
    and OLMo 2, ``v_i`` itself elsewhere; ``W_O`` likewise through ``W_O_applied``). ``W_Q``: the columns of
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
        return lv.ff_values_applied
    if group == "ff_gate_keys":
        if lv.ff_gate_keys is None:
            raise ValueError(f"This {cfg.family} model has no gated MLP, so no 'ff_gate_keys'.")
        return lv.ff_gate_keys
    if group == "W_O":  # as applied, like ff_values: times the post-attention norm's gain where there is one
        return lv.W_O_applied.reshape(cfg.n_heads * cfg.d_head, cfg.d_model)
    w = getattr(lv, group)  # (n_heads, d_model, d_head), kv heads repeated for GQA
    if group in ("W_K", "W_V"):
        w = w[:: cfg.n_heads // cfg.n_kv_heads]  # (n_kv_heads, d_model, d_head)
    return w.transpose(1, 2).reshape(-1, cfg.d_model)


def n_vectors(view: ModelView, group: str) -> int:
    """How many vectors :func:`group_vectors` returns for ``group`` in one layer."""
    cfg = view.cfg
    if group.startswith("ff_"):
        return cfg.d_ff
    return (cfg.n_kv_heads if group in ("W_K", "W_V") else cfg.n_heads) * cfg.d_head


@torch.no_grad()
def pinv_wide(E: Tensor, max_condition: float = 1e10) -> Tensor:
    """``torch.linalg.pinv(E)`` (V, d) of a wide ``E`` (d, V), d << V, in float64, through the Gram matrix.

    ``E^+ = E^T (E E^T)^{-1}`` from the eigendecomposition of the (d, d) Gram matrix: several times
    faster than an SVD of the whole ``E`` and equal to it up to ~1e-12 (relative) for a well-conditioned
    ``E`` (SmolLM2's Gram matrix has condition ~8e3). When the Gram matrix's condition exceeds
    ``max_condition`` (rank-deficient or nearly so) it returns ``torch.linalg.pinv(E)`` itself.
    """
    E = E.detach().double()
    if E.ndim != 2 or E.shape[0] > E.shape[1]:
        raise ValueError(f"pinv_wide needs a wide matrix (d, V) with d <= V, got {tuple(E.shape)}.")
    lam, U = torch.linalg.eigh(blas_matmul(E, E.T))  # ascending eigenvalues (d,), eigenvectors (d, d)
    if not float(lam[0]) > float(lam[-1]) / max_condition:
        return torch.linalg.pinv(E)
    return blas_matmul(E.T, (U / lam) @ U.T)


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
    """Top token pairs of a |V| x |V| reading: ``row_ids``/``col_ids``/``scores`` (k,), best first.

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


# -- the projector ---------------------------------------------------------------------
class Projector:
    """Reads hidden states and parameters of one model through its vocabulary.

    ``reading`` chooses ``E'``: ``"transpose"`` (E^T, the paper's practice) or
    ``"pinv"`` (E^+). ``mask`` (bool, d_vocab) restricts every top-k to some tokens
    (see :mod:`lmscope.embedding.filters`); None keeps all.
    """

    def __init__(self, view: ModelView, tokenizer=None, *, reading: str = "transpose", mask: Tensor | None = None):
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
        return blas_matmul(vectors.detach().to(E.device, E.dtype), E)

    def logit_lens(self, hidden: Tensor) -> Tensor:
        """Hidden states (..., d_model) through the final norm and unembedding: (..., d_vocab)."""
        with torch.no_grad():
            return self.view.unembed(hidden.to(self.view.device, self.view.W_U.dtype)).float()

    def vector(self, layer: int, group: str, index: int) -> Tensor:
        """One parameter vector (d_model,): unit or subhead ``index`` of ``group`` in ``layer``."""
        vecs = group_vectors(self.view, layer, group)
        i = check_index(index, "Index", vecs.shape[0], f"group {group} of layer {layer}")
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
        h = check_index(head, "Head", self.view.cfg.n_heads, f"layer {layer}")
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
