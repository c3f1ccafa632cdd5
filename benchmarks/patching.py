"""Benchmark of activation patching: the whole (layer x position) grid of three components on a
20-token prompt pair, and attribution patching's time and error against it.

    .venv/bin/python benchmarks/patching.py [--model smollm2-135m] [--batch-size 128] [--no-suffix-runs]

Prints the numbers and writes benchmarks/results/patching.json. Target (issue 14): the grid of
30 layers x 20 positions x 3 components (1,800 patched runs) on SmolLM2 within 10 s on 2 cores.
The torch thread count and the load average are recorded: on a shared machine every timing is slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from lmscope import ModelView, load_model
from lmscope.debugger.patching import activation_patching, attribution_error, attribution_patching

RESULTS = Path(__file__).resolve().parent / "results"
CLEAN = "When Mary and John went to the store on a sunny afternoon in May, John gave the bag to"
CORRUPTED = "When Mary and John went to the store on a sunny afternoon in May, Mary gave the bag to"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-suffix-runs", action="store_true", help="rerun every position of every patched run")
    ap.add_argument("--no-skip", action="store_true", help="run cells whose activation did not change too")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    view = ModelView(model)
    clean = tok(CLEAN, return_tensors="pt").input_ids[0]
    corrupted = tok(CORRUPTED, return_tensors="pt").input_ids[0]
    n = min(len(clean), len(corrupted), 20)
    clean, corrupted = clean[-n:], corrupted[-n:]  # 20 tokens each, differing at the repeated name
    mary, john = tok(" Mary").input_ids[0], tok(" John").input_ids[0]
    kw = dict(target=mary, foil=john, metric="logit_diff", components=("resid_pre", "attn_out", "mlp_out"))

    activation_patching(view, clean[:4], corrupted[:4], **kw)  # warm-up
    t0 = time.perf_counter()
    real = activation_patching(view, clean, corrupted, batch_size=args.batch_size,
                               suffix_runs=not args.no_suffix_runs, skip_unchanged=not args.no_skip, **kw)
    t_real = time.perf_counter() - t0
    t0 = time.perf_counter()
    approx = attribution_patching(view, clean, corrupted, **kw)
    t_attr = time.perf_counter() - t0
    errors = attribution_error(real, approx)
    n_cells = sum(g.grid.numel() for g in real.values())
    n_runs = sum(g.n_runs for g in real.values())
    result = {
        "model": view.name, "n_tokens": n, "n_layers": view.cfg.n_layers, "components": list(real),
        "grid_cells": n_cells, "patched_runs": n_runs, "batch_size": args.batch_size,
        "suffix_runs": not args.no_suffix_runs, "skip_unchanged": not args.no_skip,
        "activation_patching_s": t_real, "attribution_patching_s": t_attr, "target_s": 10.0,
        "clean_logit_diff": real["resid_pre"].clean, "corrupted_logit_diff": real["resid_pre"].corrupted,
        "attribution_error_of_recovered_fraction": errors,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "machine": platform.processor() or platform.machine(),
    }
    print(f"{n_cells} cells ({view.cfg.n_layers} layers x {n} positions x {len(real)} components), "
          f"{n_runs} patched runs (the rest unchanged by the corruption): "
          f"{t_real:.1f} s (target 10 s); attribution patching {t_attr:.2f} s")
    for comp, e in errors.items():
        print(f"  {comp:10s} attribution vs real (recovered fraction): max |err| {e['max_abs_error']:.3f}, "
              f"mean {e['mean_abs_error']:.3f}, r = {e['correlation']:.3f}")
    print(f"torch threads {result['torch_threads']}, load average {result['load_average']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "patching.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
