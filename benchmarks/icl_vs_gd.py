"""Benchmark and learning-rate sweep for Study 4 (ICL vs GD, layer-causal finetuning).

    python benchmarks/icl_vs_gd.py --steps            # per-step GD vs LCGD time (loss on labels / all tokens)
    python benchmarks/icl_vs_gd.py --study quick      # main-table time for a notebook profile (quick | full | paper)
    python benchmarks/icl_vs_gd.py --sweep            # learning-rate sweep per sentence task (the paper's protocol)

Prints a summary and writes JSON to benchmarks/results/icl_vs_gd_<mode>.json.
``--threads`` sets torch's thread count (default 1: steadier timings on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lmscope import ModelView, load_model
from lmscope.core.profiles import settings
from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.profiles import PROFILES
from lmscope.icl.prompts import PromptBuilder
from lmscope.icl.runs import RUNS, run_study, step_seconds, sweep_lr
from lmscope.icl.text_tasks import TEXT_TASKS

RESULTS = Path(__file__).parent / "results"


def step_times(view, tok, task="wordnet_category", k=32, repeats=1) -> dict:
    """Median seconds of one SGD step's forward + backward, GD vs LCGD, interleaved to share the noise."""
    t = get_task(task)
    builder = PromptBuilder(t, tok)
    tokens = statistics.mean(len(builder.training_sequence(e)[0]) for e in t.demonstrations(k, 0))
    out = {}
    for loss_on in ("label", "all"):
        times = step_seconds(view, tok, t, k=k, loss_on=loss_on, repeats=repeats)
        gd, lc = statistics.median(times["gd"]), statistics.median(times["lcgd"])
        out[loss_on] = {"gd_s": gd, "lcgd_s": lc, "ratio": lc / gd, "n_steps": len(times["gd"]), "tokens": tokens}
        print(f"loss on {loss_on:5s}: GD {gd * 1000:.0f} ms/step, LCGD {lc * 1000:.0f} ms/step, ratio {lc / gd:.2f}")
    return out


def study_time(view, tok, profile: str) -> dict:
    p = settings(PROFILES, profile)
    t0 = time.perf_counter()
    results = run_study(view, tok, p["tasks"], k=p["k"], seeds=p["seeds"], n_test=p["n_test"], lr=p["lr"],
                        progress=print)
    seconds = time.perf_counter() - t0
    print(f"profile {profile}: {seconds:.0f} s for {len(p['tasks'])} tasks x {len(p['seeds'])} seeds x {p['n_test']} examples")
    return {"profile": profile, "seconds": seconds, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
            "accuracy": {n: {run: res.accuracy(run) for run in RUNS} for n, res in results.items()}}


def sweep(view, tok, lrs, k=32) -> dict:
    out = {}
    for name in TEXT_TASKS:
        rows = sweep_lr(view, tok, name, lrs, k=k, seed=0, n_eval=16)
        out[name] = rows
        for r in rows:
            print(f"{name:16s} {r['method']:5s} lr={r['lr']:<8g} acc={r['accuracy']:.3f} loss={r['final_loss']:.3g} {r['skipped'][:60]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", action="store_true")
    ap.add_argument("--study", choices=sorted(PROFILES))
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    view = ModelView(model)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "threads": args.threads, "torch": torch.__version__}
    jobs = [("steps", args.steps, lambda: step_times(view, tok)),
            (f"study_{args.study}", args.study, lambda: study_time(view, tok, args.study)),
            ("sweep", args.sweep, lambda: sweep(view, tok, args.lrs))]
    if not any(flag for _, flag, _ in jobs):
        ap.error("choose --steps, --study PROFILE or --sweep")
    for name, flag, fn in jobs:
        if flag:
            path = RESULTS / f"icl_vs_gd_{name}.json"
            path.write_text(json.dumps({**meta, "result": fn()}, indent=1, default=float))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
