"""Top-k attention over sequence length and k together: loss by position, dropped mass, the first token.

The paper tested top-k attention trained from scratch (Long Range Arena) and top-k feed-forward
zero-shot; top-k *attention* dropped into a pretrained LM is this chapter's own, stricter test.
This module measures it along both axes at once:

* :func:`token_nll` — per-token next-token loss (N, T-1) of whatever mode the model runs in;
* :func:`position_bins` — that loss averaged over doubling position ranges [1, 2), [2, 4), ...
  (a query at position t has t + 1 keys, so top-k is exact for t < k: the bins show where it starts
  to cost);
* :func:`keep_first_topk` — top-k that always keeps key 0 (the "attention sink") plus the k - 1
  best other keys, through ``attn_scores`` edits (same budget k);
* :func:`dropped_mass` — the softmax mass of the *dense* model that top-k would drop, per layer;
* :func:`length_sweep` — all of it over {length: blocks}, one row per (length, mode, k);
  ``python -m lmscope.topk.lengths`` runs it and writes JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from lmscope.core.hooks import hook_names
from lmscope.core.view import ModelView
from lmscope.topk.dropin import use_topk_attention
from lmscope.topk.perplexity import next_token_logits

Tensor = torch.Tensor

#: File name of the saved sweep (``{model}`` is ``view.name``), looked up like the speed benchmark's.
RESULT_NAME = "topk_length_sweep_{model}.json"


@torch.no_grad()
def token_nll(view: ModelView, blocks: Tensor, batch_size: int = 1) -> Tensor:
    """Next-token negative log-likelihood of every position of ``blocks`` (N, T): (N, T-1), float32."""
    out = []
    for i in range(0, blocks.shape[0], batch_size):
        ids = blocks[i : i + batch_size].to(view.device)  # (b, T)
        logp = torch.log_softmax(next_token_logits(view, ids), -1)  # (b, T-1, V)
        out.append(-logp.gather(-1, ids[:, 1:, None])[..., 0].cpu())
    return torch.cat(out)


def position_bins(nll: Tensor) -> list[dict]:
    """Mean loss over query positions [1, 2), [2, 4), [4, 8), ... of ``nll`` (N, T-1) (entry j predicts
    token j + 1 from the query at position j): [{'start', 'stop', 'count', 'nll'}] (stop exclusive)."""
    T = nll.shape[1]
    rows, start = [], 0
    while start < T:
        stop = min(T, max(1, 2 * start))
        part = nll[:, start:stop]
        rows.append({"start": start, "stop": stop, "count": part.numel(), "nll": float(part.mean())})
        start = stop
    return rows


def keep_first_scores(scores: Tensor, k: int) -> Tensor:
    """Pre-softmax scores (..., Tk) with key 0 and the k - 1 highest other keys kept, the rest set to the
    dtype's minimum (ties with the (k-1)-th kept). ``k >= Tk`` returns ``scores`` unchanged."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k >= scores.shape[-1]:
        return scores
    neg = torch.finfo(scores.dtype).min
    rest = scores[..., 1:]
    if k == 1:
        kept = torch.full_like(rest, neg)
    else:
        kth = torch.topk(rest, k - 1, dim=-1).values[..., -1:]
        kept = rest.masked_fill(rest < kth, neg)
    return torch.cat([scores[..., :1], kept], dim=-1)


@contextlib.contextmanager
def keep_first_topk(view: ModelView, k: int) -> Iterator[None]:
    """Inside: every layer attends to key 0 and its k - 1 best other keys (scored eager attention;
    (T, T) scores per head, so meant for lengths up to a few thousand)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    names = hook_names("attn_scores", range(view.cfg.n_layers))
    with view.overwrite({n: (lambda s: keep_first_scores(s, k)) for n in names}):
        yield


@torch.no_grad()
def dropped_mass(view: ModelView, blocks: Tensor, ks: Iterable[int]) -> dict[int, list[float]]:
    """{k: per layer, the dense model's softmax mass outside each query's top k keys}, averaged over
    heads, queries (all positions; those with at most k keys drop nothing) and blocks (N, T)."""
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    n = view.cfg.n_layers
    sums = {k: [0.0] * n for k in ks}
    counts = [0] * n

    def recorder(layer: int) -> Callable[[Tensor], None]:
        def record(scores: Tensor) -> None:  # (B, H, Tq, Tk), mask included
            p = torch.softmax(scores, -1, dtype=torch.promote_types(scores.dtype, torch.float32))
            top = torch.topk(p, min(max(ks), p.shape[-1]), dim=-1).values.cumsum(-1)  # (B, H, Tq, kmax)
            for k in ks:
                kept = top[..., min(k, top.shape[-1]) - 1]
                sums[k][layer] += float((1 - kept).clamp_min(0).sum())
            counts[layer] += kept.numel()

        return record

    names = hook_names("attn_scores", range(n))
    with view.overwrite({name: recorder(layer) for layer, name in enumerate(names)}):
        for i in range(blocks.shape[0]):
            view.model(input_ids=blocks[i : i + 1].to(view.device), **view.last_logits_only())
    return {k: [s / c for s, c in zip(sums[k], counts)] for k in ks}


def _row(length, blocks, mode, k, nll, seconds) -> dict:
    mean = float(nll.mean())
    return {"length": length, "n_blocks": blocks.shape[0], "mode": mode, "k": k,
            "fraction": None if k is None else k / length, "nll": mean, "ppl": math.exp(mean),
            "bins": position_bins(nll), "seconds": seconds}


def length_sweep(
    view: ModelView,
    blocks_by_length: dict[int, Tensor],
    ks: Iterable[int],
    first_ks: Iterable[int] = (),
    first_max_len: int = 2048,
    mass_ks: Iterable[int] = (),
    mass_max_len: int = 2048,
    on_row: Callable[[dict], None] | None = None,
    loss: bool = True,
) -> list[dict]:
    """Rows over lengths (each {length: blocks (N, length)}): dense, top-k attention per k in ``ks``,
    keep-first top-k per k in ``first_ks`` (lengths <= ``first_max_len``), and one ``'dropped mass'``
    row per k in ``mass_ks`` (lengths <= ``mass_max_len``, 'per_layer' and 'mass' = their mean).

    Loss rows: {'length', 'n_blocks', 'mode' ('dense' | 'attention' | 'attention+first'), 'k',
    'fraction' (k / length), 'nll', 'ppl', 'bins' (:func:`position_bins`), 'seconds'}.
    ``on_row(row)`` is called after each row (e.g. to save partial results); ``loss=False`` gives
    only the dropped-mass rows (to add them to a saved sweep without repeating its loss rows).
    """
    rows: list[dict] = []

    def add(row):
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for length, blocks in blocks_by_length.items():
        if blocks.shape[1] != length:
            raise ValueError(f"blocks for length {length} have shape {tuple(blocks.shape)}; need (N, {length})")
        plans = [("dense", None, contextlib.nullcontext)] if loss else []
        plans += [("attention", k, lambda k=k: use_topk_attention(view, k)) for k in ks] if loss else []
        if length <= first_max_len and loss:
            plans += [("attention+first", k, lambda k=k: keep_first_topk(view, k)) for k in first_ks]
        for mode, k, switch in plans:
            t0 = time.time()
            with switch():
                nll = token_nll(view, blocks)
            add(_row(length, blocks, mode, k, nll, time.time() - t0))
        if length <= mass_max_len and list(mass_ks):
            t0 = time.time()
            mass = dropped_mass(view, blocks, mass_ks)
            for k, per_layer in mass.items():
                add({"length": length, "n_blocks": blocks.shape[0], "mode": "dropped mass", "k": k,
                     "fraction": k / length, "mass": sum(per_layer) / len(per_layer), "per_layer": per_layer,
                     "seconds": time.time() - t0})
    return rows


def relative_change(rows: list[dict], length: int, k: int, mode: str = "attention") -> float | None:
    """Perplexity of (``length``, ``mode``, ``k``) over the dense one at that length, minus 1; None if absent."""
    dense = [r for r in rows if r["length"] == length and r["mode"] == "dense"]
    hit = [r for r in rows if r["length"] == length and r["mode"] == mode and r["k"] == k]
    return hit[0]["ppl"] / dense[0]["ppl"] - 1 if dense and hit else None


def main(argv=None) -> dict:
    """Run the sweep on the embedded model over the held-out text and write its JSON (after every row)."""
    from lmscope.core.models import load_model
    from lmscope.data import shakespeare

    p = argparse.ArgumentParser(description="top-k attention: loss over sequence length and k")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lengths", type=ints, default=[512, 2048, 8192])
    p.add_argument("--tokens", type=int, default=8192, help="tokens scored per length (blocks = tokens / length)")
    p.add_argument("--ks", type=ints, default=[16, 64, 256])
    p.add_argument("--first-ks", type=ints, default=[64])
    p.add_argument("--mass-ks", type=ints, default=[16, 64, 256])
    p.add_argument("--max-eager", type=int, default=2048, help="longest length for the scored-eager runs")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--append", action="store_true", help="add to the rows already in --out")
    p.add_argument("--mass-only", action="store_true", help="only the dropped-mass rows (no loss rows)")
    args = p.parse_args(argv)
    model, tok = load_model(args.model)
    view = ModelView(model)
    out = args.out or Path("benchmarks") / "results" / RESULT_NAME.format(model=view.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": view.name, "text": "Shakespeare (lmscope.data.shakespeare), consecutive blocks",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": []}
    if args.append and out.is_file():
        result["rows"] = json.loads(out.read_text())["rows"]

    def save(row):
        result["rows"].append(row)
        out.write_text(json.dumps(result, indent=1))
        extra = f"ppl {row['ppl']:.2f}" if "ppl" in row else f"dropped mass {row['mass']:.4f}"
        print(f"T={row['length']:>5} {row['mode']:>16} k={row['k']}: {extra} ({row['seconds']:.0f} s)", flush=True)

    blocks = {L: shakespeare.token_blocks(tok, L, max(1, args.tokens // L)) for L in args.lengths}
    length_sweep(view, blocks, args.ks, args.first_ks, args.max_eager, args.mass_ks, args.max_eager, on_row=save,
                 loss=not args.mass_only)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
