"""Benchmark: one causal attention layer, forward + backward, top-k vs SDPA vs naive.

Shape (issue 5): batch 1, 12 heads, d_head 64, k = 128, causal; time and peak
memory per method, SDPA measured in the same run.

    python benchmarks/topk_attention.py                     # CPU, 1K..32K, fp32 (~6 min)
    python benchmarks/topk_attention.py --device cuda --out $OUT/topk_gpu.json

(``benchmarks/topk_attention.py`` runs :func:`main` of this module.) The chapter reads saved
results with :func:`saved_benchmarks`, measures small lengths with :func:`live_benchmark` when
there are none, and draws them with :func:`plot_benchmark`.

CPU: each (method, length) runs in a fresh subprocess: inputs, one warm-up
forward + backward (loads libraries and compiled kernels), ``reps`` timed
runs (median reported); then freed heap is returned to the OS, the peak-RSS
counter restarts and one more run measures memory. Memory is reported twice:
the process's peak resident set in that run (whole process: interpreter,
torch, and for top-k numba's runtime, about 0.2 GiB) and that peak above the
resident set just before it (the layer's own memory: saved tensors,
temporaries, gradients). CUDA: peak
allocated bytes (inputs included), fp32 with TF32 off, then bf16; plus
``torch.topk`` alone over a 64K x 64K x 12 score volume (timed chunk by
chunk). Needs only torch.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lmscope.topk.attention import topk_attention

H, D = 12, 64
_LIB_DIR = str(Path(__file__).resolve().parents[2])  # the folder holding the lmscope package
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def naive_attention(q, k, v):
    """Explicit causal softmax(QK^T)V with the full score matrix: (B, H, T, D)."""
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def run_method(method: str, q, k, v, topk: int, chunk: int | None):
    if method == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if method == "naive":
        return naive_attention(q, k, v)
    if method == "topk":
        return topk_attention(q, k, v, topk, chunk_size=chunk, causal=True)
    raise ValueError(f"unknown method {method!r}")


def make_inputs(T: int, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(1, H, T, D, generator=g, device=device, dtype=dtype).requires_grad_() for _ in range(3)]


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(method, T, dtype, device, topk, chunk, reps, q=None, k=None, v=None, warmup=True) -> float:
    """Median seconds of forward + backward over ``reps`` runs, after one warm-up run if ``warmup``."""
    if q is None:
        q, k, v = make_inputs(T, dtype, device)
    grad = torch.ones(1, H, T, D, device=device, dtype=dtype)
    times = []
    for i in range(reps + int(warmup)):
        for t in (q, k, v):
            t.grad = None
        _synchronize(device)
        t0 = time.perf_counter()
        run_method(method, q, k, v, topk, chunk).backward(grad)
        _synchronize(device)
        if i or not warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] if times else float("nan")


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gib() -> float:
    """Peak resident set of this process (VmHWM; unlike ru_maxrss it is not inherited across fork+exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # KiB -> GiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _restart_peak() -> float:
    """Return freed heap to the OS and restart the peak-RSS counter (Linux); the resident set now, GiB."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    return _rss_gib()


def single_cpu(method: str, T: int, dtype: str, topk: int, chunk: int | None, reps: int) -> dict:
    """Runs in its own process: median time of ``reps`` warm runs, then the peak memory of one more run."""
    q, k, v = make_inputs(T, DTYPES[dtype], "cpu")
    sec = time_fwd_bwd(method, T, DTYPES[dtype], "cpu", topk, chunk, reps, q, k, v)
    for t in (q, k, v):
        t.grad = None
    base = _restart_peak()
    time_fwd_bwd(method, T, DTYPES[dtype], "cpu", topk, chunk, 1, q, k, v, warmup=False)
    peak = _peak_rss_gib()
    return {"time_s": sec, "peak_gib": peak, "peak_above_base_gib": max(0.0, peak - base), "base_gib": base}


def bench_cpu(args) -> list[dict]:
    rows = []
    for T in args.lengths:
        for method in args.methods:
            if method == "naive" and 3 * H * T * T * 4 / 2**30 > args.naive_max_gib:
                rows.append({"method": method, "T": T, "dtype": "fp32", "skipped": "memory"})
                continue
            if args.in_process:  # no fresh process: quicker, but the whole-process peak includes the caller's memory
                rows.append({"method": method, "T": T, "dtype": "fp32",
                             **single_cpu(method, T, "fp32", args.k, args.chunk, args.reps)})
                print(_format_row(rows[-1]), flush=True)
                continue
            cmd = [sys.executable, "-m", "lmscope.topk.bench", "--single", f"{method},{T},fp32",
                   "--k", str(args.k), "--reps", str(args.reps)]
            if args.chunk:
                cmd += ["--chunk", str(args.chunk)]
            path = _LIB_DIR + os.pathsep + os.environ.get("PYTHONPATH", "")
            env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                rows.append({"method": method, "T": T, "dtype": "fp32", "error": res.stderr.strip()[-300:]})
            else:
                rows.append({"method": method, "T": T, "dtype": "fp32", **json.loads(res.stdout.strip().splitlines()[-1])})
            print(_format_row(rows[-1]), flush=True)
    return rows


def bench_cuda(args) -> list[dict]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    rows = []
    for dtype in args.dtypes:
        for T in args.lengths:
            for method in args.methods:
                row = {"method": method, "T": T, "dtype": dtype}
                q = k = v = None
                if method == "naive" and 3 * H * T * T * 4 / 2**30 > 0.5 * total:
                    rows.append({**row, "skipped": "memory"})
                    print(_format_row(rows[-1]), flush=True)
                    continue
                try:
                    q, k, v = make_inputs(T, DTYPES[dtype], "cuda")
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    sec = time_fwd_bwd(method, T, DTYPES[dtype], "cuda", args.k, args.chunk, args.reps, q, k, v)
                    row.update(time_s=sec, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of memory"
                del q, k, v
                torch.cuda.empty_cache()
                rows.append(row)
                print(_format_row(row), flush=True)
    rows.append(topk_alone_cuda(max(args.lengths), args.k))
    print(_format_row(rows[-1]), flush=True)
    return rows


def topk_alone_cuda(T: int, k: int, chunk: int = 512) -> dict:
    """torch.topk(k) alone over T x T x H fp32 scores (not causal), timed on one chunk and scaled."""
    s = torch.randn(H, chunk, T, device="cuda")
    torch.topk(s, k, dim=-1, sorted=False)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        torch.topk(s, k, dim=-1, sorted=False)
    torch.cuda.synchronize()
    per_chunk = (time.perf_counter() - t0) / 3
    return {"method": "torch.topk alone", "T": T, "dtype": "fp32", "time_s": per_chunk * T / chunk}


def _format_row(row: dict) -> str:
    head = f"{row['method']:>16} {row['dtype']:>5} T={row['T']:>6}"
    if "time_s" in row:
        mem = f"  peak {row['peak_gib']:.2f} GiB" if "peak_gib" in row else ""
        return f"{head}  {row['time_s'] * 1e3:9.1f} ms{mem}"
    return f"{head}  {row.get('skipped') or row.get('error')}"


def ratios(rows: list[dict]) -> list[dict]:
    """Top-k time and memory over SDPA's, per (dtype, T)."""
    by = {(r["method"], r["dtype"], r["T"]): r for r in rows if "time_s" in r}
    out = []
    for (m, dt, T), r in sorted(by.items(), key=lambda x: (x[0][1], x[0][2])):
        s = by.get(("sdpa", dt, T))
        if m == "topk" and s and "peak_gib" in r:
            out.append(
                {
                    "dtype": dt,
                    "T": T,
                    "time_ratio": r["time_s"] / s["time_s"],
                    "peak_ratio": r["peak_gib"] / s["peak_gib"],
                    **({"peak_above_base_ratio": r["peak_above_base_gib"] / max(s["peak_above_base_gib"], 1e-9)}
                       if "peak_above_base_gib" in r else {}),
                }
            )
    return out


def ratio_lines(result: dict) -> list[str]:
    """One line per (dtype, T) of ``result['ratios']``: top-k's time and memory over SDPA's."""
    lines = []
    for r in result["ratios"]:
        own = f", layer's own memory {r['peak_above_base_ratio']:.2f}x" if "peak_above_base_ratio" in r else ""
        lines.append(f"{r['dtype']} T={r['T']:>6}: top-k time {r['time_ratio']:.2f}x SDPA, "
                     f"peak memory {r['peak_ratio']:.2f}x{own}")
    return lines


# --------------------------------------------------------------------------- saved results
#: Result files the chapter looks for: the CPU run's default name and two names of GPU runs.
RESULT_NAMES = ("topk_attention_cpu.json", "topk_gpu.json", "topk_attention_cuda.json")


def result_folders() -> list[Path]:
    """Where saved results are looked for, in order: ``benchmarks/results`` of the checkout this package
    lives in (``lib/lmscope/topk/`` -> the checkout is three folders up; an editable install), then
    ``benchmarks/results`` of the working folder (where :func:`main` writes by default)."""
    checkout = Path(__file__).resolve().parents[3]
    return list(dict.fromkeys([checkout / "benchmarks" / "results", Path.cwd().resolve() / "benchmarks" / "results"]))


def find_benchmark(name: str, folders: list[Path] | None = None) -> Path | None:
    """The first ``folder / name`` that exists, over ``folders`` (default :func:`result_folders`), or None."""
    for folder in result_folders() if folders is None else folders:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def load_benchmark(path: str | Path) -> dict | None:
    """The JSON that :func:`main` wrote (``device``, ``shape``, ``rows``, ``ratios``), or None if absent."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def saved_benchmarks(names: tuple[str, ...] = RESULT_NAMES, folders: list[Path] | None = None) -> dict[str, dict]:
    """{file name: result} for every name in ``names`` that :func:`find_benchmark` finds."""
    found = {}
    for name in names:
        path = find_benchmark(name, folders)
        if path is not None:
            found[name] = load_benchmark(path)
    return found


def live_benchmark(lengths: list[int], reps: int = 1, extra_args: tuple[str, ...] = (),
                   in_process: bool = False) -> dict:
    """Run :func:`main` on CPU at ``lengths`` with ``reps`` timed runs; its JSON goes to a temporary file.
    ``in_process``: every run in this process (``--in-process``), not one fresh process each."""
    extra_args = (*extra_args, "--in-process") if in_process else tuple(extra_args)
    with tempfile.TemporaryDirectory() as folder:
        return main(["--lengths", ",".join(map(str, lengths)), "--reps", str(reps), *extra_args,
                     "--out", str(Path(folder) / "topk_attention_live.json")])


PANELS = (("time_s", "seconds (fwd+bwd)"), ("peak_gib", "peak memory (GiB)"),
          ("peak_above_base_gib", "layer's own memory (GiB)"))


def plot_benchmark(result: dict, methods: tuple[str, ...] = ("sdpa", "topk", "naive")):
    """Time and peak memory against length, log-log, one line per (method, dtype); a third panel with the
    layer's own memory when the rows have it (CPU runs). Returns the figure."""
    import matplotlib.pyplot as plt

    timed = [r for r in result["rows"] if "time_s" in r]
    panels = [p for p in PANELS if p[0] != "peak_above_base_gib" or any(p[0] in r for r in timed)]
    fig, ax = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    ax = ax[0]
    for dtype in sorted({r["dtype"] for r in timed}):
        for method in methods:
            rows = [r for r in timed if r["method"] == method and r["dtype"] == dtype]
            for a, (key, _) in zip(ax, panels):
                points = [(r["T"], r[key]) for r in rows if key in r]
                if points:
                    a.plot(*zip(*points), "o-", label=f"{method} {dtype}")
    for a, (_, ylabel) in zip(ax, panels):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("sequence length")
        a.set_ylabel(ylabel)
        a.legend(fontsize=7)
    fig.suptitle(result["device"])
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--methods", type=lambda s: s.split(","), default=["sdpa", "topk", "naive"])
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=["fp32", "bf16"])
    p.add_argument("--k", type=int, default=128)
    p.add_argument("--chunk", type=int, default=None, help="query chunk size (default: automatic)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--naive-max-gib", type=float, default=4.0, help="CPU: skip naive above this score memory")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--in-process", action="store_true",
                   help="CPU: run every (method, length) in this process instead of a fresh one each (quicker; "
                        "the whole-process peak then includes this process's other memory)")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:  # child process of the CPU benchmark
        method, T, dtype = args.single.split(",")
        result = single_cpu(method, int(T), dtype, args.k, args.chunk, args.reps or 2)
        print(json.dumps(result))
        return result
    if args.device == "cuda":
        args.lengths = args.lengths or [1024, 4096, 16384, 32768, 65536]
        args.reps = args.reps or 5
        rows = bench_cuda(args)
        device = torch.cuda.get_device_name(0)
    else:
        args.lengths = args.lengths or [1024, 2048, 4096, 8192, 16384, 32768]
        args.reps = args.reps or 2
        rows = bench_cpu(args)
        device = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    result = {
        "device": device,
        "torch": torch.__version__,
        "shape": {"batch": 1, "heads": H, "d_head": D, "k": args.k, "causal": True, "chunk": args.chunk},
        "in_process": bool(getattr(args, "in_process", False)),
        "rows": rows,
        "ratios": ratios(rows),
    }
    print("\ntop-k / SDPA:")
    for line in ratio_lines(result):
        print(" ", line)
    out = args.out or Path("benchmarks") / "results" / f"topk_attention_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
