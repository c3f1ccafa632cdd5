"""Greedy decoding with a KV cache, for one prompt and for a left-padded batch of prompts.

The loops here only run the model; :class:`lmscope.debugger.engine.LMDebugger` checks the input
and holds the interventions active around them (the hooks act on every forward call, the
cached steps included).

A batch is left-padded (:func:`left_pad`) so that every prompt's last token sits at the last
position; :func:`padded_forward` gives each row position ids that count its real tokens from 0,
so a padded row computes what the prompt alone would (up to float rounding).
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch

from lmscope.core.view import last_logits_kwargs

Tensor = torch.Tensor


def kv_cache_argument(model) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.x) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def check_generation_length(n_tokens: int, ids: Tensor, n_ctx: int | None, what: str) -> None:
    """ValueError unless ``n_tokens`` is a positive integer and ``ids`` (batch, pos) plus ``n_tokens``
    new tokens fit the context ``n_ctx``; ``what`` names the prompt in the message."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer, got {n_tokens!r}.")
    if n_ctx is not None and ids.shape[1] + n_tokens > n_ctx:
        raise ValueError(f"{what} plus {n_tokens} new tokens exceeds the context of {n_ctx}.")


def _kv_cache(output, argument: str):
    return output.get("cache", None) if argument == "cache" else output.get("past_key_values", None)


@torch.no_grad()
def greedy_tokens(model, ids: Tensor, n_tokens: int, eos: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[int]:
    """The ``n_tokens`` greedy next tokens after ``ids`` (1, pos), stopping after ``eos`` if given.

    ``progress(done, total)`` is called after every token.
    """
    argument = kv_cache_argument(model)
    new: list[int] = []
    out = model(input_ids=ids, use_cache=True, **last_logits_kwargs(model))
    for step in range(n_tokens):
        nxt = int(out.logits[0, -1].argmax())
        new.append(nxt)
        if progress is not None:
            progress(step + 1, n_tokens)
        if nxt == eos or step == n_tokens - 1:
            break
        out = model(input_ids=torch.tensor([[nxt]], device=ids.device), use_cache=True,
                    **{argument: _kv_cache(out, argument)})
    return new


def pad_token_id(tokenizer) -> int:
    """The id that fills the left of shorter prompts: the tokenizer's pad token, else its EOS, else 0."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None) or 0
    return int(pad)


def left_pad(rows: Sequence[Tensor], pad_id: int, device=None) -> tuple[Tensor, Tensor]:
    """Token id rows (each (pos_i,)) -> left-padded ``input_ids`` and ``attention_mask``, each (batch, pos)."""
    if not rows:
        raise ValueError("No prompts given.")
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), int(pad_id), dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), T), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = r
        mask[i, T - len(r):] = 1
    return ids, mask


def padded_forward(model, ids: Tensor, mask: Tensor, position_ids: Tensor | None = None, **kwargs):
    """The model on a left-padded batch: ``ids``, ``mask`` (batch, pos); positions count real tokens from 0."""
    if position_ids is None:
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, pos)
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kwargs)


@torch.no_grad()
def greedy_tokens_padded(model, ids: Tensor, mask: Tensor, n_tokens: int) -> list[list[int]]:
    """The ``n_tokens`` greedy next tokens of every row of a left-padded batch (no stop at EOS)."""
    argument = kv_cache_argument(model)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, pos)
    new = []
    out = padded_forward(model, ids, mask, position_ids=positions, use_cache=True, **last_logits_kwargs(model))
    for step in range(n_tokens):
        nxt = out.logits[:, -1].argmax(-1)  # (batch,)
        new.append(nxt)
        if step == n_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = padded_forward(model, nxt[:, None], mask, position_ids=positions, use_cache=True,
                             **{argument: _kv_cache(out, argument)})
    return torch.stack(new, dim=1).tolist()
