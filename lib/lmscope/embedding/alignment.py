"""Aligning two models that share a vocabulary, in embedding space (Dar et al., section 5.1).

Every parameter vector ``x`` of model 1 is read over the vocabulary as ``x E1`` and every
``y`` of model 2 as ``y E2`` (E: the unembedding, d_model x d_vocab). Their Pearson
correlation over the |V| vocabulary coordinates needs only d x d Gram matrices (the
kernel trick), never a |V|-dimensional vector:

    cov(x E1, y E2) = x C12 y^T,   C12 = E1 E2^T / |V| - mu1 mu2^T,   mu = E.mean(columns)

:func:`layer_similarity` turns these into an L1 x L2 matrix per parameter group,
:func:`match` finds the best one-to-one assignment (Hungarian, scipy), and
``space="raw"`` does the same on raw coordinates as the control.

A known answer to test this on: :func:`functional_copy` builds a model that computes the
same function as a Llama-style model but whose residual basis is rotated by a random
orthogonal matrix (norm gains folded first) and whose heads and FF units are permuted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from lmscope.core.view import ModelView
from lmscope.embedding.projection import group_vectors

Tensor = torch.Tensor

SPACES = ("embedding", "raw")
STATS = ("mean_abs", "best_match")
ROTATABLE = ("llama", "mistral", "qwen2")


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
        raise ValueError("The models do not share a vocabulary: same size, but their tokenizers map tokens differently.")


# -- correlations ---------------------------------------------------------------------------
@dataclass
class VocabGram:
    """The d x d statistics of two unembeddings that vocabulary correlations need."""

    C11: Tensor  # (d1, d1)
    C12: Tensor  # (d1, d2)
    C22: Tensor  # (d2, d2)

    @classmethod
    def of(cls, E1: Tensor, E2: Tensor) -> "VocabGram":
        """From unembeddings E1 (d1, V), E2 (d2, V); float64."""
        if E1.shape[1] != E2.shape[1]:
            raise ValueError(f"The models do not share a vocabulary: {E1.shape[1]} vs {E2.shape[1]} tokens.")
        E1, E2 = E1.detach().double(), E2.detach().double()
        V = E1.shape[1]
        m1, m2 = E1.mean(1), E2.mean(1)
        return cls(E1 @ E1.T / V - torch.outer(m1, m1), E1 @ E2.T / V - torch.outer(m1, m2),
                   E2 @ E2.T / V - torch.outer(m2, m2))


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
    """Correlations between the parameters of two models, in embedding or raw space."""

    def __init__(self, view_a: ModelView, view_b: ModelView, space: str = "embedding"):
        if space not in SPACES:
            raise ValueError(f"Unknown space '{space}': use 'embedding' or 'raw'.")
        check_shared_vocabulary(view_a, view_b)
        if space == "raw" and view_a.cfg.d_model != view_b.cfg.d_model:
            raise ValueError("Raw-space alignment needs models of the same d_model; use space='embedding'.")
        self.view_a, self.view_b, self.space = view_a, view_b, space
        self.gram = VocabGram.of(view_a.W_U, view_b.W_U) if space == "embedding" else None

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
                     seed: int = 0, layers_a=None, layers_b=None) -> np.ndarray:
    """An L_a x L_b matrix: how alike the parameter vectors of ``group`` are, layer by layer.

    ``stat="mean_abs"`` is the paper's mean |correlation| over all pairs of vectors;
    ``"best_match"`` averages, over vectors of layer a, the largest |correlation| with any
    vector of layer b (1 when layer b holds the same vectors in another order). ``n_sample``
    vectors of each layer of model a are used (all of model b), to bound the cost;
    ``layers_a``/``layers_b`` restrict the rows/columns to some layers (default all).
    """
    if stat not in STATS:
        raise ValueError(f"Unknown stat '{stat}': use one of {', '.join(STATS)}.")
    aligner = Aligner(view_a, view_b, space)
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
                group: str = "ff_values", space: str = "embedding") -> np.ndarray:
    """Which unit of ``layer_b`` is unit i of ``layer_a``: (n_units,), by Hungarian on |corr|."""
    return match(Aligner(view_a, view_b, space).correlation(layer_a, layer_b, group).abs().numpy())


def head_similarity(view_a: ModelView, view_b: ModelView, layer_a: int, layer_b: int,
                    space: str = "embedding", groups=("W_Q", "W_O")) -> np.ndarray:
    """H_a x H_b: mean |corr| between matching subheads (column c with column c) of two heads."""
    aligner = Aligner(view_a, view_b, space)
    da, db = view_a.cfg.d_head, view_b.cfg.d_head
    if da != db:
        raise ValueError(f"Head matching needs the same d_head, got {da} and {db}.")
    total = 0
    for group in groups:
        C = aligner.correlation(layer_a, layer_b, group).abs()  # (Ha*dh, Hb*dh)
        Ha, Hb = C.shape[0] // da, C.shape[1] // db
        C = C.reshape(Ha, da, Hb, db).diagonal(dim1=1, dim2=3)  # (Ha, Hb, dh)
        total = total + C.mean(-1)
    return (total / len(groups)).numpy()


# -- a functionally identical copy with a known answer ----------------------------------------
@dataclass
class CopyTruth:
    """How a :func:`functional_copy` relates to its original (new index -> old index)."""

    rotation: Tensor  # (d_model, d_model) orthogonal R: copy's residual = original's residual @ R
    head_perm: list[np.ndarray]  # per layer (n_heads,): copy head h is original head head_perm[h]
    kv_perm: list[np.ndarray]  # per layer (n_kv_heads,)
    ff_perm: list[np.ndarray]  # per layer (d_ff,): copy unit i is original unit ff_perm[i]

    @staticmethod
    def inverse(perm: np.ndarray) -> np.ndarray:
        inv = np.empty_like(perm)
        inv[perm] = np.arange(len(perm))
        return inv


def _set(linear: nn.Linear, weight: Tensor, bias: Tensor | None = None) -> None:
    linear.weight = nn.Parameter(weight.contiguous(), requires_grad=linear.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias.contiguous(), requires_grad=linear.bias.requires_grad)


@torch.no_grad()
def functional_copy(model: nn.Module, *, seed: int = 0, rotate: bool = True,
                    permute: bool = True) -> tuple[nn.Module, CopyTruth]:
    """A deep copy computing the same function, in a rotated basis with permuted heads and FF units.

    Llama-style models (RMSNorm, pre-norm): every RMSNorm gain is folded into the weights
    that read its output (q/k/v, gate/up, and the unembedding for the final norm, which
    unties a tied unembedding); then the residual basis is rotated by a random orthogonal
    R (RMSNorm without a gain commutes with it), key/value head groups are permuted together
    with their query heads, query heads within each group, and FF units in every layer.
    """
    view = ModelView(model)
    cfg = view.cfg
    if cfg.model_type not in ROTATABLE:
        raise ValueError(
            f"functional_copy supports RMSNorm pre-norm families ({', '.join(ROTATABLE)}), not "
            f"'{cfg.model_type}': a LayerNorm's centering does not commute with a rotation."
        )
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    new = copy.deepcopy(model)
    dtype = view.W_E.dtype
    d, dh, H, Hkv, rep = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads
    R = torch.eye(d, dtype=torch.float64)
    if rotate:
        Q, Rr = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        R = Q * torch.sign(torch.diagonal(Rr))  # Haar-distributed orthogonal
    Rd = R.to(dtype)
    ident = lambda n: np.arange(n)  # noqa: E731

    def rows(w: Tensor, perm: np.ndarray, block: int) -> Tensor:  # permute row blocks of (n*block, ...)
        return w.reshape(len(perm), block, *w.shape[1:])[torch.as_tensor(perm)].reshape(w.shape)

    inner = new.model
    inner.embed_tokens.weight = nn.Parameter(inner.embed_tokens.weight.detach() @ Rd)
    head_perms, kv_perms, ff_perms = [], [], []
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        kv_perm = rng.permutation(Hkv) if permute else ident(Hkv)
        within = [rng.permutation(rep) if permute else ident(rep) for _ in range(Hkv)]
        head_perm = np.array([kv_perm[gi] * rep + within[gi][r] for gi in range(Hkv) for r in range(rep)])
        ff_perm = rng.permutation(cfg.d_ff) if permute else ident(cfg.d_ff)
        g1 = layer.input_layernorm.weight.detach().clone()
        for proj, perm, n in ((attn.q_proj, head_perm, H), (attn.k_proj, kv_perm, Hkv), (attn.v_proj, kv_perm, Hkv)):
            w = rows(proj.weight.detach() * g1, perm, dh) @ Rd  # W diag(g) R, head blocks permuted
            b = rows(proj.bias.detach(), perm, dh) if proj.bias is not None else None
            _set(proj, w, b)
        wo = attn.o_proj.weight.detach()  # (d, H*dh)
        wo = rows(wo.T, head_perm, dh).T  # permute input columns by head
        _set(attn.o_proj, Rd.T @ wo, attn.o_proj.bias.detach() @ Rd if attn.o_proj.bias is not None else None)
        layer.input_layernorm.weight.fill_(1.0)
        g2 = layer.post_attention_layernorm.weight.detach().clone()
        for proj in (mlp.gate_proj, mlp.up_proj):
            _set(proj, (proj.weight.detach() * g2)[torch.as_tensor(ff_perm)] @ Rd)
        _set(mlp.down_proj, Rd.T @ mlp.down_proj.weight.detach()[:, torch.as_tensor(ff_perm)])
        layer.post_attention_layernorm.weight.fill_(1.0)
        head_perms.append(head_perm), kv_perms.append(kv_perm), ff_perms.append(ff_perm)
    gf = inner.norm.weight.detach().clone()
    new.lm_head.weight = nn.Parameter((new.lm_head.weight.detach() * gf) @ Rd)  # a new tensor: unties
    new.config.tie_word_embeddings = False
    inner.norm.weight.fill_(1.0)
    name = str(getattr(model.config, "name_or_path", "") or cfg.model_type).rstrip("/").split("/")[-1]
    new.config.name_or_path = f"{name}-rotated-{seed}"
    return new.eval(), CopyTruth(R, head_perms, kv_perms, ff_perms)
