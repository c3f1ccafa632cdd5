"""Benchmark of the LM-Debugger study: trace, search, projection index and clustering times.

    .venv/bin/python benchmarks/debugger.py [--model smollm2-135m] [--rebuild-index] [--repeats 10]

Prints a table and writes benchmarks/results/debugger.json. Targets (issue 4): a full trace
of a 20-token prompt (all layers, top-10 sub-updates with their tokens) under 0.5 s after
load; a keyword search under 20 ms. The machine's load average is recorded with the
numbers: other processes on a shared machine slow every timing down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from lmscope import ModelView, load_model
from lmscope.debugger.clusters import cluster_values
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.search import ValueSearch
from lmscope.embedding.index import ProjectionIndex

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_20 = "The history of the old city is long and full of surprises, and the people who live there today"
QUERIES = ["football", "happy, joy, love", "Paris", "king queen", "terrible, awful", "music", "water", "computer"]


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rebuild-index", action="store_true", help="time a fresh index computation too")
    ap.add_argument("--clusters", type=int, nargs="*", default=[512, 1024])
    args = ap.parse_args()

    res: dict = {"model": args.model, "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
                 "load_average_start": os.getloadavg()}
    t0 = time.perf_counter()
    model, tok = load_model(args.model)
    view = ModelView(model)
    res["load_model_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = ProjectionIndex.build(view, k=50)
    res["index_build_or_cache_s"] = time.perf_counter() - t0
    if args.rebuild_index:
        t0 = time.perf_counter()
        ProjectionIndex.compute(view, k=50)
        res["index_compute_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dbg = LMDebugger(view, tok, index=index, n_updates=10)
    search = ValueSearch(index, tok)
    res["debugger_and_search_setup_s"] = time.perf_counter() - t0

    ids = dbg.encode(PROMPT_20)
    res["trace_prompt_tokens"] = int(ids.shape[1])
    dbg.trace(ids)  # warm-up
    with torch.no_grad():
        fwd = timed(lambda: model(input_ids=ids), args.repeats)
    tr = timed(lambda: dbg.trace(ids), args.repeats)
    res["forward_only_median_s"] = statistics.median(fwd)
    res["trace_median_s"] = statistics.median(tr)
    res["trace_min_s"] = min(tr)

    search.search(QUERIES[0])
    per_query = []
    for q in QUERIES:
        per_query += timed(lambda: search.search(q), args.repeats)
    res["search_median_ms"] = statistics.median(per_query) * 1000
    res["search_max_ms"] = max(per_query) * 1000

    res["clustering"] = []
    for k in args.clusters:
        vc = cluster_values(view, tok, n_clusters=k)
        res["clustering"].append({"n_clusters": k, "seconds": vc.clusters.seconds, "iterations": vc.clusters.n_iter,
                                  "mean_cosine": vc.clusters.mean_cosine})
    res["load_average_end"] = os.getloadavg()

    print(f"model {args.model}: load {res['load_model_s']:.1f} s; index (build or cache) {res['index_build_or_cache_s']:.1f} s"
          + (f"; fresh index compute {res['index_compute_s']:.1f} s" if "index_compute_s" in res else ""))
    print(f"trace of {res['trace_prompt_tokens']} tokens: median {res['trace_median_s'] * 1000:.0f} ms "
          f"(min {res['trace_min_s'] * 1000:.0f} ms; bare forward {res['forward_only_median_s'] * 1000:.0f} ms)  target < 500 ms")
    print(f"keyword search: median {res['search_median_ms']:.2f} ms, max {res['search_max_ms']:.2f} ms  target < 20 ms")
    for c in res["clustering"]:
        print(f"clustering {c['n_clusters']} clusters: {c['seconds']:.1f} s ({c['iterations']} iterations)")
    print(f"load average: start {res['load_average_start']}, end {res['load_average_end']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "debugger.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {RESULTS / 'debugger.json'}")


if __name__ == "__main__":
    main()
