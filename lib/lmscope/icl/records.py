"""What one run of the model records for one test prompt: attention outputs and scores at the read position.

The paper's code (``fs_eval.py``) appends the first label option's token to the query and reads
every record at that token (position -1 of option 0's row): the attention block's output
(before the residual add) and the pre-softmax scores of that position over the query keys
(everything after BOS and the demonstrations: template, test input and the label token itself).
Options:

* ``read_at``: ``"label"`` (the paper's) or ``"last"`` (the last prompt token, before any label);
* ``keys``: ``"query"`` (the paper's: from ``prompt.query_start`` up to the read position,
  inclusive) or ``"input"`` (only the test input's tokens).

For post-norm families (Gemma 2/3, OLMo 2) ``attn_out`` is the attention sub-block's raw output
(the sum of the heads); what reaches the residual is the post-attention norm of it.

>>> rec = record_run(view, builder.prompt(example, demos))     # doctest: +SKIP
>>> rec.attn_out.shape, rec.scores.shape                       # (n_layers, d_model), (n_layers, n_heads, n_keys)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.core.hooks import hook_name
from lmscope.core.view import ModelView
from lmscope.icl.prompts import Prompt, option_logprobs

Tensor = torch.Tensor
READ_POSITIONS = ("label", "last")
KEY_SETS = ("query", "input")


@dataclass
class RunRecord:
    """What one run records for one test example."""

    attn_out: Tensor  # (n_layers, d_model) attention block output at the read position
    scores: Tensor  # (n_layers, n_heads, n_keys) pre-softmax scores of the read position over the key set
    logprobs: Tensor  # (n_options,) mean label log-probability per option
    answer: int  # index of the right option

    @property
    def prediction(self) -> int:
        return int(self.logprobs.argmax())

    @property
    def correct(self) -> bool:
        return self.prediction == self.answer


def check_reading(read_at: str, keys: str) -> None:
    if read_at not in READ_POSITIONS:
        raise ValueError(f"read_at must be one of {READ_POSITIONS} ('label': the paper's), got {read_at!r}.")
    if keys not in KEY_SETS:
        raise ValueError(f"keys must be one of {KEY_SETS} ('query': the paper's), got {keys!r}.")


def read_position(prompt: Prompt, read_at: str = "label") -> int:
    """Where records are read: the appended first option's first token, or the last prompt token."""
    return len(prompt.ids) if read_at == "label" else prompt.last


def key_span(prompt: Prompt, read_at: str = "label", keys: str = "query") -> tuple[int, int]:
    """[start, end) of the key positions whose scores are recorded."""
    check_reading(read_at, keys)
    return (prompt.query_start, read_position(prompt, read_at) + 1) if keys == "query" else prompt.input_span


def _rows(prompt: Prompt, read_at: str) -> list[list[int]]:
    """Token rows of one batch: one per option (prompt + option), or one row when every option is one token."""
    options = prompt.options
    if all(len(o) == 1 for o in options):
        return [prompt.ids + (options[0] if read_at == "label" else [])]
    return [prompt.ids + o for o in options]


def _rows_tensor(rows: list[list[int]], device) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [rows[0][0]] * (width - len(r)) for r in rows], device=device)


def _forward_records(view: ModelView, prompt: Prompt, rows: Tensor, offset: int, cache, hooks: bool,
                     read_at: str, keys: str) -> RunRecord:
    """One forward of ``rows`` (B, T_new) whose first token sits at absolute position ``offset`` (after a cache)."""
    P, total = len(prompt.ids), offset + rows.shape[1]
    n, pos = view.cfg.n_layers, read_position(prompt, read_at) - offset
    s, e = key_span(prompt, read_at, keys)
    attn_out: list[Tensor | None] = [None] * n
    scores: list[Tensor | None] = [None] * n

    def take_out(l):
        def f(t):  # (B, T_new, d_model)
            attn_out[l] = t[0, pos].detach().float().clone()

        return f

    def take_scores(l):
        def f(t):  # (B, H, T_new, T_k); keys counted from the end (a sliding-window cache may be shorter)
            tk = t.shape[-1]
            scores[l] = t[0, :, pos, tk - (total - s) : tk - (total - e)].detach().float().clone()

        return f

    edits = {}
    if hooks:
        for l in range(n):
            edits[hook_name(l, "attn_out")] = take_out(l)
            edits[hook_name(l, "attn_scores")] = take_scores(l)
    keep = total - P + 1  # logits of positions P-1 .. total-1
    extra = {} if cache is None else {"cache": cache, "use_cache": True}  # transformers 5.x: ``cache``
    with view.overwrite(edits):
        try:
            logits = view.model(input_ids=rows, logits_to_keep=keep, **extra).logits
        except TypeError:
            logits = view.model(input_ids=rows, **extra).logits[:, P - 1 - offset :]
    logprobs = option_logprobs(logits, P, prompt.options)
    empty = torch.empty(0)
    return RunRecord(
        torch.stack(attn_out) if hooks else empty, torch.stack(scores) if hooks else empty, logprobs.cpu(),
        prompt.answer,
    )


@torch.no_grad()
def record_run(view: ModelView, prompt: Prompt, hooks: bool = True, read_at: str = "label",
               keys: str = "query") -> RunRecord:
    """Run the model on ``prompt`` (+ each option), recording per layer what the metrics need.

    Row 0 holds the first option, so the read position (its first token, or the last prompt
    token) is in row 0; right padding never reaches it under causal attention. ``hooks=False``:
    option scores only.
    """
    check_reading(read_at, keys)
    return _forward_records(view, prompt, _rows_tensor(_rows(prompt, read_at), view.device), 0, None, hooks,
                            read_at, keys)


@torch.no_grad()
def record_runs(view: ModelView, prompts: list[Prompt], hooks: bool = True, read_at: str = "label",
                keys: str = "query", min_prefix: int = 32) -> list[RunRecord]:
    """:func:`record_run` of many prompts that share one context (BOS + the same demonstrations).

    The shared context runs once and its key-value cache is reused for every query, so ICL with
    k = 32 costs about as much as zero-shot per example; records equal :func:`record_run`'s (tested).
    Prompts whose contexts differ, or contexts shorter than ``min_prefix`` tokens, run whole.
    """
    import copy

    check_reading(read_at, keys)
    if not prompts:
        return []
    c = prompts[0].query_start
    prefix = prompts[0].ids[:c]
    if c < min_prefix or any(p.query_start != c or p.ids[:c] != prefix for p in prompts):
        return [record_run(view, p, hooks, read_at, keys) for p in prompts]
    out = view.model(input_ids=torch.tensor([prefix], device=view.device), use_cache=True, logits_to_keep=1)
    shared = out.cache
    records = []
    for p in prompts:
        rows = _rows(p, read_at)
        cache = copy.deepcopy(shared)
        if len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
        records.append(_forward_records(view, p, _rows_tensor([r[c:] for r in rows], view.device), c, cache, hooks,
                                        read_at, keys))
    return records
