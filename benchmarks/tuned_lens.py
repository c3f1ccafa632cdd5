"""Tuned-lens training budget for a model: time and held-out KL of each training recipe.

    python benchmarks/tuned_lens.py                       # SmolLM2: logit lens, least-squares starts, + KL steps
    python benchmarks/tuned_lens.py --recipes default     # only the default TunedLensConfig

Held-out text: lmscope.data.shakespeare.DEFAULT_PLAYS (no training play is among them), ``--eval``
blocks of 64 tokens. Prints a table (with the load average: the machine is shared) and writes JSON to
benchmarks/results/tuned_lens_<model>.json. ``--threads`` sets torch's thread count (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lmscope import ModelView, load_model
from lmscope.core.lens_stats import lens_stats
from lmscope.core.tuned_lens import LogitLens, TunedLens, TunedLensConfig
from lmscope.data.shakespeare import token_blocks

RESULTS = Path(__file__).parent / "results"
RECIPES = {
    "default": {},
    "lstsq-32+kl-4": {"fit_sequences": 32, "steps": 4},
    "lstsq-32": {"fit_sequences": 32, "steps": 0},
    "lstsq-64": {"fit_sequences": 64, "steps": 0},
    "lstsq-32+kl-16": {"fit_sequences": 32, "steps": 16},
    "identity+kl-16": {"init": "identity", "steps": 16},  # the authors' start, with a CPU-sized budget
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--eval", type=int, default=8, help="held-out blocks of 64 tokens")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    view = ModelView(model)
    held_out = token_blocks(tok, 64, args.eval)
    rows = []

    def record(name, lens, seconds, config=None):
        stats = lens_stats(view, lens, held_out)
        row = {"recipe": name, "train_seconds": seconds, "config": config,
               "kl_per_layer": stats.kl.tolist(), "mean_kl": stats.kl[:-1].mean().item(),
               "top1_agreement": stats.top1_agreement.tolist(),
               "mean_first_leading_layer": stats.mean_first_leading, "uniform_kl": stats.uniform_kl,
               "load_avg_1min": os.getloadavg()[0]}
        rows.append(row)
        print(f"{name:16s} train {seconds:7.1f} s  mean KL (layers 0..L-2) {row['mean_kl']:6.2f} nats "
              f"(uniform guess {stats.uniform_kl:.2f})  first leading layer {row['mean_first_leading_layer']:5.2f}  load {row['load_avg_1min']:.1f}",
              flush=True)
        write()

    def write():  # after every row: a long run leaves what it measured so far
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps({"model": view.name, "threads": args.threads, "eval_tokens": held_out.numel(),
                                   "rows": rows}, indent=1))

    out = RESULTS / f"tuned_lens_{view.name}.json"
    record("logit lens", LogitLens(view), 0.0)
    for name in args.recipes:
        config = TunedLensConfig(**RECIPES[name])
        start = time.perf_counter()
        lens = TunedLens.trained(view, tok, config)
        record(name, lens, time.perf_counter() - start, asdict(config))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
