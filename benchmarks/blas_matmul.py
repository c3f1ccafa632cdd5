"""torch's matmul against numpy's (OpenBLAS) on the products the embedding-space study runs.

    python benchmarks/blas_matmul.py              # 2 threads, float32; writes results/blas_matmul_cpu.json

Each shape (n, k, m) times ``a @ b`` with a (n, k), b (k, m) (or the transpose of an (m, k) matrix, as
``P @ Q.T`` and ``nn.Linear`` have it): the best of ``--reps`` runs after one
warm-up, for torch and for numpy on the same arrays. ``lmscope.core.tensors.blas_matmul`` sends the
study's large CPU products to numpy because of this table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {  # (n, k, m, b stored as the transpose of an (m, k) matrix)
    "1000 vectors read over Gemma 3's vocabulary (X E)": (1000, 640, 262144, False),
    "Gram of two sets of 1000 readings (P Q^T)": (1000, 262144, 1000, True),
    "256 residuals unembedded (Gemma 3, h U)": (256, 640, 262144, False),
    "256 positions through an FF layer (Gemma 3, x W^T)": (256, 640, 2048, True),
}


def best_of(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "blas_matmul_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, (n, k, m, transposed) in SHAPES.items():
        a = torch.randn(n, k, generator=g)
        b = torch.randn(m, k, generator=g).T if transposed else torch.randn(k, m, generator=g)
        an, bn = a.numpy(), b.numpy()
        t_torch = best_of(lambda: a @ b, args.reps)
        t_numpy = best_of(lambda: an @ bn, args.reps)
        rows.append(dict(product=name, n=n, k=k, m=m, b_transposed=transposed, torch_s=round(t_torch, 4), numpy_s=round(t_numpy, 4),
                         torch_over_numpy=round(t_torch / t_numpy, 2)))
        print(f"{name:55s} torch {t_torch:7.3f} s  numpy {t_numpy:7.3f} s  ratio {t_torch / t_numpy:.2f}", flush=True)
    blas = [c for c in torch.__config__.show().splitlines() if "Math Kernel" in c or "BLAS_INFO" in c]
    out = dict(threads=args.threads, processor=platform.processor() or platform.machine(),
               cpu=_cpu_name(), torch=torch.__version__, numpy=np.__version__, torch_blas=blas[:1], rows=rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
