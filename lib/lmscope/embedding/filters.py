"""Which tokens a reading should show, and which units read well.

Raw vocabulary readings of a model with tied embeddings are dominated by a few tokens: word
fragments that are never predicted keep outsized unembedding norms (:func:`large_norm_tokens`)
and top the reading of almost any vector (:func:`hub_tokens`). :func:`reading_mask` is the
chapter's recipe: drop both, keep alphabetic, non-special tokens (:func:`token_mask`), and say
what was dropped. :func:`coherent_units` ranks the vectors of a group by how alike their top
tokens are. Every mask is a bool tensor (d_vocab,), True for a token to keep (or, for the
hub and large-norm masks, for a token found).

>>> dropped = reading_mask(Projector(view, tokenizer))   # doctest: +SKIP
>>> proj = Projector(view, tokenizer, mask=dropped.keep)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.core.tokens import token_texts
from lmscope.core.view import ModelView
from lmscope.embedding.projection import GROUPS, Projector, group_vectors
from lmscope.embedding.top_k import top_entries

Tensor = torch.Tensor


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


def large_norm_tokens(view: ModelView, quantile: float = 0.95) -> Tensor:
    """Tokens whose unembedding column has a norm above ``quantile`` of all: a bool mask (d_vocab,).

    In models with tied embeddings, word fragments that are never predicted (``␣strugg``,
    ``␣interpre``) keep outsized norms and win raw readings of unrelated vectors.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}.")
    norms = view.W_U.detach().float().norm(dim=0)
    return norms > torch.quantile(norms, quantile)


def index_tops(proj: Projector, index, layer: int, group: str, k: int) -> Tensor | None:
    """The unmasked top-``k`` ids (n, k) of ``layer``'s ``group`` vectors read from a
    :class:`lmscope.embedding.index.ProjectionIndex` of the same model, or None when
    ``index`` is None or does not hold this reading (another group, ``negative``, fewer than
    ``k`` tokens, or an ``E'`` that is not ``E``). The index scores ``v @ W_U`` in the same
    chunks as :meth:`Projector.project`, so its top tokens are the projection's.
    """
    if index is None or index.group != group or index.negative or index.k < k:
        return None
    if GROUPS[group] == "in" and proj.reading != "transpose":
        return None
    if index.n_layers != proj.view.cfg.n_layers or index.n_units != proj.view.cfg.d_ff:
        raise ValueError(f"The index ({index.n_layers} layers x {index.n_units} units) is not of this model "
                         f"({proj.view.cfg.n_layers} x {proj.view.cfg.d_ff}): build it with "
                         "ProjectionIndex.build(view).")
    return index.ids[layer, :, :k]


@torch.no_grad()
def hub_tokens(proj: Projector, layers=None, group: str = "ff_values", k: int = 50,
               factor: float = 10.0, index=None) -> Tensor:
    """Tokens in the top-k of far more vectors than chance: a bool mask (d_vocab,).

    Some tokens (often word fragments never predicted, with outsized unembedding norms)
    top the reading of almost any vector and hide what a vector is specific about. A token
    is a hub when it appears in the top-k of ``group`` vectors (over ``layers``, default
    every fifth) more than ``factor`` times as often as a uniform share ``k / d_vocab``.
    ``proj.mask`` is not used: the count runs over the whole vocabulary. ``index``: a
    ``ProjectionIndex`` of the model whose top tokens are read instead of projecting again.
    """
    view = proj.view
    layers = range(0, view.cfg.n_layers, 5) if layers is None else layers
    counts = torch.zeros(view.cfg.d_vocab)
    n = 0
    for layer in layers:
        ids = index_tops(proj, index, layer, group, k)
        if ids is not None:
            counts += torch.bincount(ids.flatten().cpu(), minlength=view.cfg.d_vocab)
            n += ids.shape[0]
            continue
        vecs = group_vectors(view, layer, group)
        for start in range(0, vecs.shape[0], 512):
            ids = proj.project(vecs[start : start + 512], GROUPS[group]).topk(k, dim=-1).indices
            counts += torch.bincount(ids.flatten().cpu(), minlength=view.cfg.d_vocab)
            n += ids.shape[0]
    return counts > factor * n * k / view.cfg.d_vocab


@dataclass
class ReadingMask:
    """The tokens a reading keeps (``keep``) and what was dropped, each a bool mask (d_vocab,).

    ``large_norm``: the tokens of largest unembedding norm; ``hubs``: hub tokens that are not
    already large-norm ones; ``words``: the alphabetic, non-special tokens.
    ``keep = words & ~hubs & ~large_norm``.
    """

    keep: Tensor
    large_norm: Tensor
    hubs: Tensor
    words: Tensor

    def examples(self, tokenizer, which: str, n: int = 10) -> list[str]:
        """Up to ``n`` random tokens of a dropped set (``"large_norm"`` or ``"hubs"``), as text.

        Draws from torch's global random generator (seed it for a fixed sample).
        """
        if which not in ("large_norm", "hubs"):
            raise ValueError(f"which must be 'large_norm' or 'hubs', got {which!r}.")
        mask = getattr(self, which)
        draw = torch.rand(mask.shape[0])  # (d_vocab,)
        n = min(n, int(mask.sum()))
        if n == 0:
            return []
        _, ids = top_entries(mask.float() * draw, n)
        return token_texts(tokenizer, ids)


@torch.no_grad()
def reading_mask(proj: Projector, k: int = 50, *, quantile: float = 0.95, hub_factor: float = 10.0,
                 hub_layers=None, index=None) -> ReadingMask:
    """The chapter's token filter: drop large-norm tokens, hub tokens and non-words.

    Large-norm tokens: :func:`large_norm_tokens` at ``quantile``; hub tokens:
    :func:`hub_tokens` of the FF values' top-``k`` (``hub_layers``, ``hub_factor``);
    words: alphabetic, non-special tokens of ``proj.tokenizer`` (:func:`token_mask`).
    ``index``: a ``ProjectionIndex`` of the model, read instead of projecting the FF values again.
    ``Projector(view, tokenizer, mask=reading_mask(proj).keep)`` then reads without them.
    """
    if proj.tokenizer is None:
        raise ValueError("reading_mask needs a Projector with a tokenizer (to tell words from other tokens).")
    view = proj.view
    large = large_norm_tokens(view, quantile)
    hubs = hub_tokens(proj, hub_layers, k=k, factor=hub_factor, index=index) & ~large
    words = token_mask(proj.tokenizer, view.cfg.d_vocab, alphabetic=True)
    return ReadingMask(keep=words & ~hubs & ~large, large_norm=large, hubs=hubs, words=words)


@torch.no_grad()
def coherent_units(proj: Projector, layer: int, group: str = "ff_values", k: int = 10, n: int = 5,
                   chunk_size: int = 512, index=None) -> list[tuple[int, float]]:
    """The ``n`` vectors of a group whose top-``k`` tokens are most alike: [(index, coherence)].

    Coherence is the mean pairwise cosine similarity of the top tokens' input embeddings
    (``W_E`` rows), a cheap proxy for "the tokens share a meaning". Uses ``proj.mask``.
    ``index``: a ``ProjectionIndex`` of the model; a unit's masked top-``k`` are then the first
    ``k`` allowed tokens of its indexed top tokens (projected again only for the units with
    fewer than ``k`` allowed there), the same tokens as a full reading.
    """
    vecs = group_vectors(proj.view, layer, group)
    W_E = proj.view.W_E.detach()  # (d_vocab, d_model)
    indexed = index_tops(proj, index, layer, group, index.k) if index is not None and index.k >= k else None
    if indexed is not None:
        top_ids = _first_allowed(indexed, k, proj.mask)  # (n_vectors, k), -1 where too few are allowed
        short = (top_ids[:, 0] < 0).nonzero().squeeze(1)
        for start in range(0, len(short), chunk_size):  # those are read in full, a chunk at a time
            rows = short[start : start + chunk_size]
            top_ids[rows] = top_entries(proj.project(vecs[rows], GROUPS[group]), k, proj.mask, overwrite=True)[1]
    scores = []
    for start in range(0, vecs.shape[0], chunk_size):
        if indexed is not None:
            ids = top_ids[start : start + chunk_size]
        else:
            reading = proj.project(vecs[start : start + chunk_size], GROUPS[group])  # (c, V)
            ids = top_entries(reading, k, proj.mask, overwrite=True)[1]  # (c, k)
        e = W_E[ids].float()  # (c, k, d): only these rows are scaled to unit norm
        e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sim = e @ e.transpose(1, 2)  # (c, k, k)
        scores.append((sim.sum((1, 2)) - k) / (k * (k - 1)))
    scores = torch.cat(scores)
    top = scores.topk(n)
    return [(int(i), float(s)) for s, i in zip(top.values, top.indices)]


def _first_allowed(ids: Tensor, k: int, mask: Tensor | None) -> Tensor:
    """The first ``k`` ids (n, k) of each row of ranked ``ids`` (n, m) that ``mask`` allows; rows with
    fewer than ``k`` allowed come back as -1."""
    if mask is None:
        return ids[:, :k].clone()
    allowed = mask.to(ids.device)[ids]  # (n, m)
    order = torch.argsort((~allowed).to(torch.int8), dim=1, stable=True)[:, :k]  # allowed first, in rank order
    out = ids.gather(1, order)
    out[allowed.sum(1) < k] = -1
    return out
