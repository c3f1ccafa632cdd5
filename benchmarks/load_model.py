"""Cold and warm load time of the embedded model, and a 128-token forward pass.

    python benchmarks/load_model.py [--model smollm2-135m] [--out benchmarks/results/load_model.json]

Cold: a fresh cache folder, so the GGUF is dequantized and written as safetensors.
Warm: the cached safetensors are read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/load_model.json")
    args = parser.parse_args()

    from lmscope import load_model

    results: dict = {"model": args.model, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LMSCOPE_CACHE"] = tmp
        t = time.perf_counter()
        load_model(args.model)
        results["cold_load_s"] = time.perf_counter() - t
        warm = []
        for _ in range(3):
            t = time.perf_counter()
            model, tok = load_model(args.model)
            warm.append(time.perf_counter() - t)
        results["warm_load_s"] = statistics.median(warm)

    ids = torch.randint(100, model.config.vocab_size, (1, args.tokens))
    with torch.no_grad():
        model(input_ids=ids)  # warm-up
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - t)
    results[f"forward_{args.tokens}_tokens_s"] = statistics.median(times)

    for key, value in results.items():
        print(f"{key:>24}: {value:.3f}" if isinstance(value, float) else f"{key:>24}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
