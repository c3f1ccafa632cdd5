"""The projection index: the top-k vocabulary tokens of every FF value (or key) of a model.

Each FF unit ``i`` of layer ``l`` has a value vector ``v`` (a row of the output
projection) and a key ``k`` (a row of the input projection). Read through the
unembedding ``W_U`` (d_model, d_vocab) they score every token: ``v @ W_U``. The
index keeps the ``k`` best tokens and their scores for every unit of every layer,
computed in chunks (one reused buffer of ``chunk_size`` x d_vocab scores, at most
:data:`SCORE_BUFFER_BYTES` by default, so a 262,144-token vocabulary stays small) and
cached on disk as safetensors, keyed by the model's name (``view.name``) and a hash
of the weights that were projected.

>>> index = ProjectionIndex.build(view, k=50)                   # doctest: +SKIP
>>> ids, scores = index.top_tokens(layer=12, unit=34)          # doctest: +SKIP

``group`` names the vectors as :data:`lmscope.embedding.projection.GROUPS` does:
``"ff_values"`` (the default), ``"ff_keys"`` or ``"ff_gate_keys"`` (gated MLPs only).
``build`` reads the cache when it holds this index and writes it otherwise; ``load``
only reads (and says how to build when there is nothing to read); ``compute``
never touches the disk. The whole tables are ``index.ids`` and ``index.scores``,
each (n_layers, n_units, k), best token first.

Parameters are projected raw, as in Dar et al. (no final norm, biases ignored);
``negative=True`` indexes the negated direction (the tokens a unit suppresses).
"""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import safetensors.torch
import torch

from lmscope.core.models import cache_dir, save_safetensors
from lmscope.core.view import ModelView
from lmscope.embedding.projection import group_vectors
from lmscope.embedding.top_k import check_k

Tensor = torch.Tensor

#: the parameter groups an index can hold: one vector per FF unit
INDEX_GROUPS = ("ff_values", "ff_keys", "ff_gate_keys")
FORMAT_VERSION = "2"  # 2: the group is stored under "group" with the projection's names
#: the default score buffer's size: 512 units for vocabularies up to 131,072 tokens, 256 for Gemma's 262,144
SCORE_BUFFER_BYTES = 2**28


def default_chunk_size(d_vocab: int) -> int:
    """Units scored at once: a (chunk, d_vocab) float32 buffer within :data:`SCORE_BUFFER_BYTES`, 16..512."""
    return max(16, min(512, SCORE_BUFFER_BYTES // (4 * d_vocab)))


def check_group(view: ModelView, group: str) -> None:
    """ValueError unless ``group`` is one of :data:`INDEX_GROUPS` that ``view``'s model has."""
    if group not in INDEX_GROUPS:
        raise ValueError(f"Unknown index group '{group}': use one of {', '.join(INDEX_GROUPS)}.")
    if group == "ff_gate_keys" and not view.cfg.gated:
        raise ValueError(
            f"group='ff_gate_keys' needs a gated MLP; this {view.cfg.family} model has none. "
            "Use 'ff_keys' or 'ff_values'."
        )


def weights_fingerprint(view: ModelView, group: str) -> str:
    """A hash of exactly what the index projects: ``W_U`` and every layer's ``group`` vectors."""
    h = hashlib.blake2b(digest_size=12)
    tensors = [view.W_U] + [group_vectors(view, l, group) for l in range(view.cfg.n_layers)]
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        for rows in t.detach().split(64):  # row-major bytes of the whole tensor, without copying it whole
            h.update(rows.to("cpu", torch.float32).contiguous().numpy().data)
    return h.hexdigest()


def blocked_topk(scores: Tensor, k: int, block: int = 32) -> tuple[Tensor, Tensor]:
    """Exact row-wise top-k of ``scores`` (n, m), sorted: (values, indices), each (n, k).

    Splits each row into blocks of ``block`` columns and keeps only the k blocks with the
    largest maxima: every true top-k entry lies in one of them (a block outside holds no
    entry above the k-th block maximum, and those k blocks hold k such entries). Then one
    small top-k over k*block candidates. Faster than a full-row top-k on GPUs (and no slower
    on CPUs) when m >> k*block; otherwise it falls back to ``torch.topk``.
    """
    n, m = scores.shape
    if m < 4 * k * block:
        return torch.topk(scores, k, dim=1)
    main = (m // block) * block
    maxima = scores[:, :main].reshape(n, m // block, block).amax(dim=2)  # (n, n_blocks)
    if main < m:
        maxima = torch.cat([maxima, scores[:, main:].amax(dim=1, keepdim=True)], dim=1)
    blocks = maxima.topk(k, dim=1, sorted=False).indices  # (n, k)
    cand = (blocks[:, :, None] * block + torch.arange(block, device=scores.device)).reshape(n, k * block)
    valid = cand < m
    vals = scores.gather(1, cand.clamp(max=m - 1))
    if not bool(valid.all()):
        vals = vals.masked_fill(~valid, float("-inf"))
    top = vals.topk(k, dim=1)
    return top.values, cand.gather(1, top.indices)


def _as_int(x) -> int | None:
    """An integer index from int, numpy or 0-d tensor input; None for anything else."""
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


@dataclass
class ProjectionIndex:
    """Top-k tokens of every FF unit of one group: ``ids``/``scores`` (n_layers, n_units, k)."""

    ids: Tensor  # (n_layers, n_units, k) int64 token ids, best first
    scores: Tensor  # (n_layers, n_units, k) float32 scores (logit contributions), descending
    group: str = "ff_values"
    negative: bool = False
    model_name: str = ""
    fingerprint: str = ""

    # -- sizes and look-ups --------------------------------------------------------
    @property
    def k(self) -> int:
        return self.ids.shape[2]

    @property
    def n_layers(self) -> int:
        return self.ids.shape[0]

    @property
    def n_units(self) -> int:
        return self.ids.shape[1]

    def _check(self, layer, unit=None) -> tuple[int, int | None]:
        i = _as_int(layer)
        if i is None or not 0 <= i < self.n_layers:
            raise IndexError(f"Layer {layer!r} does not exist: the index has layers 0..{self.n_layers - 1}.")
        j = None
        if unit is not None:
            j = _as_int(unit)
            if j is None or not 0 <= j < self.n_units:
                raise IndexError(f"Unit {unit!r} does not exist: layer {i} has units 0..{self.n_units - 1}.")
        return i, j

    def top_tokens(self, layer: int, unit: int, k: int | None = None) -> tuple[Tensor, Tensor]:
        """Token ids (k,) and scores (k,) of unit ``unit`` of layer ``layer``, best first."""
        layer, unit = self._check(layer, unit)
        k = self.k if k is None else k
        if not 1 <= k <= self.k:
            raise ValueError(f"k={k} is out of range: this index holds the top {self.k} tokens per unit.")
        return self.ids[layer, unit, :k], self.scores[layer, unit, :k]

    def layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """All units of one layer: ids and scores, each (n_units, k)."""
        layer, _ = self._check(layer)
        return self.ids[layer], self.scores[layer]

    def units_with_token(self, token_id: int, max_rank: int | None = None) -> Tensor:
        """Every (layer, unit, rank) whose top tokens contain ``token_id``: (n_hits, 3), by rank then layer."""
        ids = self.ids if max_rank is None else self.ids[..., :max_rank]
        hits = (ids == int(token_id)).nonzero()  # (n_hits, 3): layer, unit, rank
        order = torch.argsort(hits[:, 2] * self.n_layers * self.n_units + hits[:, 0] * self.n_units + hits[:, 1])
        return hits[order]

    # -- building ------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        view: ModelView,
        k: int = 50,
        group: str = "ff_values",
        *,
        negative: bool = False,
        chunk_size: int | None = None,
        device: str | torch.device | None = None,
        progress: Callable[[int, int], None] | None = None,
        fingerprint: str = "",
    ) -> "ProjectionIndex":
        """Compute the index in memory (no cache): ``chunk_size`` units at a time.

        Peak extra memory is one reused (chunk_size, d_vocab) float32 buffer of scores
        (default size :func:`default_chunk_size`) plus ``W_U`` in float32 on ``device``
        (default: the model's; no copy when it is float32 there already).
        ``progress(done, total)`` is called after every layer.
        """
        check_group(view, group)
        check_k(k, view.cfg.d_vocab)
        chunk_size = default_chunk_size(view.cfg.d_vocab) if chunk_size is None else chunk_size
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
        device = torch.device(device) if device is not None else view.device
        W_U = view.W_U.detach().to(device, torch.float32)  # (d_model, d_vocab)
        sign = -1.0 if negative else 1.0  # (-v) @ W_U == -(v @ W_U) exactly, without a negated copy of W_U
        n_layers, n_units = view.cfg.n_layers, view.cfg.d_ff
        buffer = torch.empty(min(chunk_size, n_units), W_U.shape[1], dtype=torch.float32, device=device)
        ids = torch.empty(n_layers, n_units, k, dtype=torch.int64, device=device)  # moved to CPU at the end
        scores = torch.empty(n_layers, n_units, k, dtype=torch.float32, device=device)
        for layer in range(n_layers):
            rows = group_vectors(view, layer, group).detach()  # (d_ff, d_model)
            for start in range(0, n_units, chunk_size):
                chunk = rows[start : start + chunk_size].to(device, torch.float32) * sign  # (c, d_model)
                chunk_scores = buffer[: chunk.shape[0]]
                torch.matmul(chunk, W_U, out=chunk_scores)  # (c, d_vocab)
                values, indices = blocked_topk(chunk_scores, k)  # (c, k)
                ids[layer, start : start + chunk.shape[0]] = indices
                scores[layer, start : start + chunk.shape[0]] = values
            if progress is not None:
                progress(layer + 1, n_layers)
        return cls(ids=ids.cpu(), scores=scores.cpu(), group=group, negative=negative,
                   model_name=view.name, fingerprint=fingerprint)

    @classmethod
    def build(
        cls,
        view: ModelView,
        k: int = 50,
        group: str = "ff_values",
        *,
        negative: bool = False,
        cache: bool = True,
        chunk_size: int | None = None,
        device: str | torch.device | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> "ProjectionIndex":
        """The index of ``view``: read from the cache if there, else computed (and cached if ``cache``)."""
        check_group(view, group)
        check_k(k, view.cfg.d_vocab)
        fingerprint = weights_fingerprint(view, group)
        path = cls.cache_path(view, k, group, negative=negative, fingerprint=fingerprint) if cache else None
        if path is not None and path.exists():
            return cls.from_file(path)
        index = cls.compute(view, k, group, negative=negative, chunk_size=chunk_size,
                            device=device, progress=progress, fingerprint=fingerprint)
        if path is not None:
            index.save(path)
        return index

    @classmethod
    def load(cls, view: ModelView, k: int = 50, group: str = "ff_values", *,
             negative: bool = False) -> "ProjectionIndex":
        """The cached index of ``view``; FileNotFoundError (saying how to build it) when absent."""
        check_group(view, group)
        check_k(k, view.cfg.d_vocab)
        path = cls.cache_path(view, k, group, negative=negative)
        if not path.exists():
            raise FileNotFoundError(
                f"No cached {group} index (k={k}) for model '{view.name}' with these weights at "
                f"{path}. Build it with ProjectionIndex.build(view, k={k}, group={group!r})."
            )
        return cls.from_file(path)

    # -- files ---------------------------------------------------------------------
    @staticmethod
    def cache_path(view: ModelView, k: int = 50, group: str = "ff_values", *, negative: bool = False,
                   fingerprint: str | None = None) -> Path:
        """``cache_dir()/projection_index/<view.name>-<weights hash>/<group>[-neg]-k<k>.safetensors``."""
        fingerprint = fingerprint or weights_fingerprint(view, group)
        folder = cache_dir() / "projection_index" / f"{view.name}-{fingerprint}"
        return folder / f"{group}{'-neg' if negative else ''}-k{k}.safetensors"

    def save(self, path: str | Path) -> Path:
        """Write ``ids`` (int32) and ``scores`` (float32) as safetensors, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "group": self.group,
            "negative": json.dumps(self.negative),
            "model_name": self.model_name,
            "fingerprint": self.fingerprint,
        }
        tensors = {"ids": self.ids.to(torch.int32).contiguous(), "scores": self.scores.float().contiguous()}
        return save_safetensors(path, tensors, meta)

    @classmethod
    def from_file(cls, path: str | Path) -> "ProjectionIndex":
        """Read an index written by :meth:`save`."""
        path = Path(path)
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            ids, scores = f.get_tensor("ids").long(), f.get_tensor("scores")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a projection index of format {FORMAT_VERSION}; rebuild it.")
        return cls(ids=ids, scores=scores, group=meta["group"], negative=json.loads(meta["negative"]),
                   model_name=meta.get("model_name", ""), fingerprint=meta.get("fingerprint", ""))
