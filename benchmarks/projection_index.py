"""Projection-index build time against the bare matrix-product floor.

    python benchmarks/projection_index.py [--model smollm2-135m] [--group ff_values] [--repeats 2] [--device cpu]

The floor is the same chunked products ``rows @ W_U`` for every layer, without the top-k
and without storing anything: no index can be built faster on this machine with these
kernels. Runs alternate (floor, index, floor, index, ...) so that load from other processes
hits both alike; the best run of each is reported. Prints a line and writes JSON to
``benchmarks/results/projection_index.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from lmscope import ModelView, load_model
from lmscope.embedding.index import INDEX_GROUPS, ProjectionIndex, weights_fingerprint
from lmscope.embedding.projection import group_vectors

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def matmul_floor(view, group: str, chunk_size: int, device: torch.device) -> float:
    W_U = view.W_U.detach().to(device, torch.float32)
    sync(device)
    start = time.perf_counter()
    for layer in range(view.cfg.n_layers):
        rows = group_vectors(view, layer, group).detach()
        for s in range(0, rows.shape[0], chunk_size):
            out = rows[s : s + chunk_size].to(device, torch.float32) @ W_U
            del out
    sync(device)
    return time.perf_counter() - start


def build_time(view, group: str, k: int, chunk_size: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    ProjectionIndex.compute(view, k, group, chunk_size=chunk_size, device=device)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--group", default="ff_values", choices=list(INDEX_GROUPS))
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default=None,
                        help="a folder with config.json: time a random-weight model of that shape instead "
                             "(for machines without the model's weights; timings depend on shapes only)")
    parser.add_argument("--out", default=str(RESULTS / "projection_index.json"))
    args = parser.parse_args()

    if args.config:
        from transformers import AutoConfig, AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config)).eval()
        args.model = f"random weights shaped like {args.config}"
    else:
        model, _ = load_model(args.model)
    view = ModelView(model)
    device = torch.device(args.device)
    matmul_floor(view, args.group, args.chunk_size, device)  # warm-up (kernels, page cache)
    floors, builds = [], []
    for _ in range(args.repeats):
        floors.append(matmul_floor(view, args.group, args.chunk_size, device))
        builds.append(build_time(view, args.group, args.k, args.chunk_size, device))
    start = time.perf_counter()
    weights_fingerprint(view, args.group)
    fingerprint_s = time.perf_counter() - start
    cfg = view.cfg
    result = {
        "model": args.model,
        "group": args.group,
        "shape": f"{cfg.n_layers} layers x {cfg.d_ff} units x {cfg.d_vocab} tokens (d_model {cfg.d_model})",
        "k": args.k,
        "chunk_size": args.chunk_size,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "matmul_floor_s": min(floors),
        "index_build_s": min(builds),
        "ratio": min(builds) / min(floors),
        "of_which_fingerprint_s": fingerprint_s,
        "all_floor_s": floors,
        "all_build_s": builds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{args.model} {args.group} index on {result['device']}: build {result['index_build_s']:.2f} s, "
          f"matmul floor {result['matmul_floor_s']:.2f} s, ratio {result['ratio']:.2f} "
          f"(fingerprint {fingerprint_s:.2f} s) -> {out}")


if __name__ == "__main__":
    main()
