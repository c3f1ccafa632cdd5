"""Switch a Hugging Face model to top-k attention or top-k feed-forward, temporarily.

* :func:`use_topk_attention` runs the model with :func:`lmscope.topk.attention.topk_attention`
  inside a ``with`` block, through the top-k implementation of :mod:`lmscope.core.attention`
  (registered in transformers' ``AttentionInterface``); the model's own implementation comes
  back afterwards, also on error. Works for every family whose attention calls the interface.
* :func:`topk_feedforward` keeps, per token and FF layer, only the k FF coefficients m_i with the
  largest |m_i| (the FF as a key-value memory, Geva et al.; Gupta et al. 2021), through the
  ``ff_coeffs`` overwrite hook of :class:`lmscope.core.view.ModelView`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from lmscope.core.attention import TOPK, use_attention
from lmscope.core.hooks import hook_name
from lmscope.core.tensors import keep_largest_abs
from lmscope.core.view import ModelView


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@contextlib.contextmanager
def use_topk_attention(view: ModelView, topk: int, chunk_size: int | None = None) -> Iterator[ModelView]:
    """Run ``view``'s model with top-k attention inside the block; restore its attention after.

    >>> with use_topk_attention(view, topk=32):   # doctest: +SKIP
    ...     logits = view.model(input_ids).logits
    """
    _check_positive("topk", topk)
    if chunk_size is not None:
        _check_positive("chunk_size", chunk_size)
    with use_attention(view, TOPK, topk=topk, chunk_size=chunk_size):
        yield view


@contextlib.contextmanager
def topk_feedforward(view: ModelView, k: int, layers: list[int] | None = None) -> Iterator[None]:
    """Keep only the k largest |m_i| per token in the FF layers (all, or ``layers``) inside the block."""
    _check_positive("k", k)
    layers = list(range(view.cfg.n_layers)) if layers is None else layers
    with view.overwrite({hook_name(layer, "ff_coeffs"): (lambda m: keep_largest_abs(m, k)) for layer in layers}):
        yield
