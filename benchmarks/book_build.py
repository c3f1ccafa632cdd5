"""Book build times: a build from an empty chapter cache, then an unchanged rebuild, then one touched chapter.

    .venv/bin/python benchmarks/book_build.py --profile quick [--model smollm2-135m --model gemma-3-270m]
        [--only 00_model ...] [--out benchmarks/results/book_build_quick.json] [--cold-only]

Prints and writes JSON: wall seconds of each build, per-chapter seconds and whether each chapter
executed (from the builder's ``_timings.json``), the load average before and after each build and the
CPU count. The
executed chapters go to a temporary folder, so ``book/chapters`` is left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("lmscope_book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed_build(book, models, profile, names, chapters: Path, output: Path) -> dict:
    load_before = os.getloadavg()  # the machine is shared: a busy one stretches every number
    start = time.perf_counter()
    book.build(models, profile, names=names, chapters=chapters, output=output)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "chapters": json.loads((chapters / "_timings.json").read_text()),
            "load_average_before": load_before, "load_average": os.getloadavg()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cold-only", action="store_true", help="skip the unchanged and touched rebuilds")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="book: %(message)s")
    book = _builder()
    models = args.models or ["smollm2-135m"]
    names = args.only or book.available_chapters()
    out = args.out or ROOT / "benchmarks" / "results" / f"book_build_{args.profile}.json"
    tmp = Path(tempfile.mkdtemp(prefix="lmscope-book-bench-"))
    try:
        chapters, output = tmp / "chapters", tmp / "html"
        record = {"profile": args.profile, "models": models, "chapters": names, "cpus": os.cpu_count()}
        record["cold"] = timed_build(book, models, args.profile, names, chapters, output)
        keys = [] if args.cold_only else sorted(chapters.glob(".*.key"))[:1]
        if not args.cold_only:
            record["unchanged"] = timed_build(book, models, args.profile, names, chapters, output)
        for key in keys:  # a changed notebook: its key no longer matches
            key.write_text("touched\n")
            record["touched"] = {"chapter": key.stem.lstrip("."),
                                 **timed_build(book, models, args.profile, names, chapters, output)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    for step in ("cold", "unchanged", "touched"):
        if step in record:
            ran = [c for c, t in record[step]["chapters"].items() if t.get("executed")]
            load = record[step]["load_average_before"][0], record[step]["load_average"][0]
            print(f"{step}: {record[step]['seconds']:.0f} s (load {load[0]:.1f} -> {load[1]:.1f}); "
                  f"executed: {', '.join(ran) or 'none'}")
            for chapter, t in record[step]["chapters"].items():
                if t.get("executed"):
                    print(f"  {chapter}: {t['seconds']:.0f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
