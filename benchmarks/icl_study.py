"""Chapter 04's whole study for one model and profile, saved for the chapter to read.

    OMP_NUM_THREADS=1 python benchmarks/icl_study.py --model smollm2-135m --profile full
    python benchmarks/icl_study.py --estimate                   # per-step times and a run-time estimate only
    python benchmarks/icl_study.py --set second_model=null      # cut a run size (recorded as dropped)
    python benchmarks/icl_study.py --resume                     # continue a partial run from its JSON

Runs :func:`lmscope.icl.study.run_chapter_study` with the profile's run sizes and writes
``benchmarks/results/icl_study_<model>_<profile>.json`` after every part (``meta.parts`` says which
are done; a partial file is not read by the chapter). ``--set KEY=JSON`` replaces a run size and
records it in ``meta.dropped`` with the profile's value and ``--why KEY=TEXT``, so the chapter says what
was cut. Tasks and ablation cells are saved one by one, so a resumed run with fewer of them keeps those done.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lmscope import ModelView, load_model
from lmscope.core.profiles import settings
from lmscope.icl.ablation import CHANGED
from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.profiles import PROFILES
from lmscope.icl.runs import step_seconds
from lmscope.icl.study import load_study, result_path, run_chapter_study, save_study


def finetune_runs(sizes: dict, lr_given: bool = False) -> dict[str, int]:
    """SGD steps (each one GD and one LCGD step) per part on the main model, and on the second model."""
    k, n_ab = sizes["k"], len(sizes["ablation_seeds"])
    same = set(sizes["ablation_seeds"]) <= set(sizes["seeds"]) and sizes["ablation_n_test"] == sizes["n_test"]
    grid = sizes["lr_grid"] if sizes["lr_grid"] and not lr_given else ()
    per_factor = {"loss_on": k, "k": CHANGED["k"], "read_at": k, "lr": 2 * k if grid else 0, "readout": k}
    return {"lr": len(grid) * k,
            "main": len(sizes["tasks"]) * len(sizes["seeds"]) * k,
            "ablation": n_ab * ((0 if same else k) + sum(per_factor[f] for f in sizes["ablation_factors"])),
            "second_model": n_ab * k if sizes["second_model"] else 0,
            "control": k,
            "words": len(sizes["word_tasks"]) * len(sizes["word_seeds"]) * k}


def estimate(view, tok, sizes: dict, n: int = 4) -> dict:
    """Median seconds of a GD and an LCGD step on the first task, and the study's finetuning time from them."""
    times = step_seconds(view, tok, get_task(sizes["tasks"][0]), k=n)
    gd, lc = (sorted(times[m])[len(times[m]) // 2] for m in ("gd", "lcgd"))
    steps = finetune_runs(sizes)
    main_steps = sum(v for p, v in steps.items() if p != "second_model")
    print(f"one step: GD {gd:.2f} s, LCGD {lc:.2f} s (median of {n}); steps per part: {steps}")
    print(f"finetuning on {view.name}: {main_steps} steps x {gd + lc:.2f} s = {main_steps * (gd + lc) / 60:.0f} min "
          f"(records and the learning-rate evaluation come on top); the second model: {steps['second_model']} "
          "steps at its own cost")
    return {"gd_s": gd, "lcgd_s": lc, "steps": steps, "minutes": main_steps * (gd + lc) / 60}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--profile", default="full", choices=sorted(PROFILES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="replace a run size")
    ap.add_argument("--why", action="append", default=[], metavar="KEY=TEXT",
                    help="the reason recorded for --set KEY (default: to finish within the session's time)")
    ap.add_argument("--estimate", action="store_true", help="print per-step times and an estimate, then stop")
    ap.add_argument("--resume", action="store_true", help="keep the finished parts of a partial run's JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile_sizes = settings(PROFILES, args.profile)
    sizes, dropped = dict(profile_sizes), {}
    why = dict(item.partition("=")[::2] for item in args.why)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in sizes:
            ap.error(f"--set {item}: no run size {key!r}; the profile has {', '.join(sizes)}")
        sizes[key] = json.loads(value)
        dropped[key] = (f"{sizes[key]!r} instead of the profile's {profile_sizes[key]!r}: "
                        + why.get(key, "to finish within the session's time"))
    lm, tok = load_model(args.model)
    view = ModelView(lm)
    if args.estimate:
        estimate(view, tok, sizes)
        return
    out = result_path(args.model, args.profile)
    resume = load_study(out) if args.resume and out.is_file() else None
    if resume is not None:
        print(f"resuming {out.name}: parts done {resume.meta.get('parts')}")
    print(f"{args.model} ({view.name}), profile {args.profile}, {torch.get_num_threads()} thread(s); "
          f"dropped: {dropped or 'nothing'}", flush=True)
    say = lambda msg: print(time.strftime("%H:%M:%S ") + msg, flush=True)  # noqa: E731

    def save(run):
        save_study(run, out)
        say(f"saved {out.name} (parts {run.meta['parts']}, {run.meta['total_seconds'] / 60:.1f} min so far)")

    run = run_chapter_study(view, tok, sizes, profile=args.profile, model=args.model, progress=say, resume=resume,
                            on_part=save, dropped=dropped)
    save_study(run, out)
    print(f"done: {run.meta['total_seconds'] / 60:.1f} min; per part (s): "
          + ", ".join(f"{p} {s:.0f}" for p, s in run.seconds.items()) + f"; wrote {out}")


if __name__ == "__main__":
    main()
