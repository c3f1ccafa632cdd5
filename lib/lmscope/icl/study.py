"""Chapter 04's whole study as one call, and its result saved as JSON and read back.

:func:`run_chapter_study` runs, for one model and one profile's run sizes
(:mod:`lmscope.icl.profiles`), every part the chapter shows: the learning-rate choice on
validation examples, the main table (:func:`lmscope.icl.runs.run_study` on the sentence tasks),
the built-in word tasks, the untrained control, the ablation (one factor changed per cell, plus the
second model's paper cell) and the per-step GD / LCGD times. It returns a :class:`StudyRun`.

:func:`save_study` / :func:`load_study` write and read it as JSON (every array with its dtype and
shape, so a loaded run gives the same tables as the original). The full profile costs an hour or
more on a CPU, so ``benchmarks/icl_study.py`` runs it once and the chapter reads the file when
:func:`mismatch` finds nothing that differs from what the chapter asks for.

>>> run = run_chapter_study(view, tok, settings(PROFILES, "quick"))        # doctest: +SKIP
>>> save_study(run, "study.json"); load_study("study.json").cells[0].label  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lmscope.core.view import ModelView
from lmscope.icl.ablation import Cell, ablation, choose_lrs
from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.metrics import TaskResult
from lmscope.icl.runs import run_study, run_task, step_seconds, untrained_model
from lmscope.icl.study_json import results_from, results_json, task_from, task_json
from lmscope.icl.tasks import Task

FORMAT_VERSION = 1
#: File name of a saved run in ``benchmarks/results/`` (``{model}``: the chapter's model parameter).
RESULT_NAME = "icl_study_{model}_{profile}.json"
#: The parts of a study, in the order :func:`run_chapter_study` runs them (the second model last: the
#: costliest part to cut when time is short), and the run sizes each part reads.
PARTS = ("lr", "main", "ablation", "control", "words", "steps", "second_model")
PART_SIZES = {"lr": ("lr", "lr_grid", "lr_n_eval", "ablation_task", "k"), "main": ("tasks", "k", "seeds", "n_test"),
              "ablation": ("ablation_task", "ablation_factors", "ablation_seeds", "ablation_n_test", "k"),
              "control": ("control_tasks", "control_n_test", "tasks", "seeds", "k"),
              "words": ("word_tasks", "word_seeds", "word_n_test", "k"), "steps": ("tasks", "k"),
              "second_model": ("second_model", "ablation_task", "ablation_seeds", "ablation_n_test", "k")}


# Run sizes that choose items a part runs one by one (kept partial results of other items stay valid).
_PER_ITEM = ("tasks", "word_tasks", "ablation_factors")


class StudyFileError(ValueError):
    """A saved study that cannot be read: damaged, not a study, or written by a newer format."""


@dataclass
class StudyRun:
    """Everything chapter 04 reads: results are ``{task: TaskResult}``, ``cells`` the ablation's."""

    model: str
    profile: str
    sizes: dict  # the run sizes as plain JSON (tasks by name)
    lr_choice: tuple[float, ...] = ()
    best_rate: float = math.nan
    sweep_rows: list[dict] = field(default_factory=list)
    results: dict[str, TaskResult] = field(default_factory=dict)
    word_results: dict[str, TaskResult] = field(default_factory=dict)
    control: dict[str, TaskResult] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    second_note: str = "not run (profile)"
    step: dict[str, list[float]] = field(default_factory=dict)  # "gd" / "lcgd" -> seconds per step
    step_task: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # part -> seconds
    meta: dict = field(default_factory=dict)  # date, commit, threads, dropped, parts done, total seconds

    @property
    def complete(self) -> bool:
        return all(p in self.meta.get("parts", ()) for p in PARTS)


def plain_sizes(sizes: dict) -> dict:
    """Run sizes as JSON holds them: tasks by name, tuples as lists (what a saved run is compared on)."""

    def plain(v):
        if isinstance(v, Task):
            return v.name
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {key: plain(value) for key, value in sizes.items()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _names(tasks) -> list[str]:
    return [t.name if isinstance(t, Task) else get_task(t).name for t in tasks]


def run_chapter_study(
    view: ModelView,
    tokenizer,
    sizes: dict,
    *,
    second_model=None,
    lr: float | None = None,
    profile: str = "",
    model: str | None = None,
    progress: Callable[[str], None] | None = print,
    resume: StudyRun | None = None,
    on_part: Callable[[StudyRun], None] | None = None,
    dropped: dict[str, str] | None = None,
) -> StudyRun:
    """Every part of chapter 04 on ``view`` with run sizes ``sizes`` (``settings(PROFILES, profile)``).

    ``second_model``: the model factor's model, a name for :func:`lmscope.load_model` or a loaded
    ``(view, tokenizer)`` pair; None: ``sizes["second_model"]`` (None there: skipped). ``lr``: one
    rate for everything instead of the choice on validation examples. ``model`` / ``profile``: the
    names recorded (default ``view.name``). ``resume``: a partial run whose finished parts are kept;
    ``on_part(run)`` is called after every part, task and ablation cell (to save progress;
    ``meta["partial"]`` names the parts half done). ``dropped``: {run size: why}
    for sizes cut from what the profile asks (recorded in ``meta["dropped"]``, see :func:`mismatch`).
    """
    say = progress or (lambda msg: None)
    start = time.perf_counter()
    run = resume or StudyRun(model or view.name, profile, plain_sizes(sizes))
    run.meta.setdefault("parts", [])
    if resume is not None:
        new = plain_sizes(sizes)
        changed = [(p, key) for p in run.meta["parts"] for key in PART_SIZES[p] if run.sizes.get(key) != new.get(key)]
        if changed:
            raise ValueError(f"resume: run sizes {sorted({key for _, key in changed})} changed, but the finished "
                             f"parts {sorted({p for p, _ in changed})} read them; start a new run instead.")
        run.sizes = new
    run.meta.setdefault("dropped", {}).update(dropped or {})
    run.meta.setdefault("commit", _git_commit())  # the code's commit when the run started
    run.meta.setdefault("started", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if resume is not None:
        run.meta.setdefault("resumed_at_commits", []).append(_git_commit())
    previous_total = run.meta.get("total_seconds", 0.0)
    task_names, k, seeds = list(sizes["tasks"]), int(sizes["k"]), tuple(sizes["seeds"])
    names = _names(task_names)

    partial = run.meta.setdefault("partial", {})  # part -> the sizes its kept partial results were run with
    keyed = lambda p: {key: run.sizes.get(key) for key in PART_SIZES[p] if key not in _PER_ITEM}  # noqa: E731
    for p in [p for p, kept in partial.items() if kept != keyed(p)]:
        say(f"{p}: run sizes changed, its partial results are dropped")
        del partial[p]
        {"main": run.results, "words": run.word_results}.get(p, {}).clear()
        run.cells = [] if p == "ablation" else run.cells

    def save() -> None:
        run.meta["total_seconds"] = previous_total + time.perf_counter() - start
        if on_part is not None:
            on_part(run)

    def checkpoint(name: str) -> None:  # a part's results so far, with the sizes they hold for
        partial[name] = keyed(name)
        save()

    def part(name: str, fn: Callable[[], None]) -> None:
        if name in run.meta["parts"]:
            say(f"{name}: kept from the saved partial run")
            return
        t0, before = time.perf_counter(), run.seconds.get(name + "_partial", 0.0)  # earlier processes' share
        fn()
        run.seconds[name] = before + time.perf_counter() - t0
        run.seconds.pop(name + "_partial", None)
        run.meta["parts"].append(name)
        partial.pop(name, None)
        say(f"[{name}: {run.seconds[name]:.0f} s]")
        save()

    def each_task(name: str, store: dict, tasks, **kwargs) -> None:
        """run_task for every task not in ``store`` yet, a checkpoint after each."""
        for n in [n for n in store if n not in _names(tasks)]:
            del store[n]  # a task cut from the list since
        for t, n in zip(tasks, _names(tasks)):
            if n in store:
                say(f"{name}: {n} kept from the saved partial run")
                continue
            t0 = time.perf_counter()
            store[n] = run_task(view, tokenizer, t, k=k, lr=run.best_rate, progress=say, **kwargs)
            run.seconds[name + "_partial"] = run.seconds.get(name + "_partial", 0.0) + time.perf_counter() - t0
            checkpoint(name)

    def choose() -> None:
        if lr is not None:
            run.lr_choice, run.best_rate, run.sweep_rows = (float(lr),), float(lr), []
        elif sizes["lr_grid"]:
            run.lr_choice, run.best_rate, run.sweep_rows = choose_lrs(
                view, tokenizer, sizes["ablation_task"], sizes["lr_grid"], k=k, n_eval=sizes["lr_n_eval"])
        else:
            run.lr_choice, run.best_rate, run.sweep_rows = (float(sizes["lr"]),), float(sizes["lr"]), []
        say(f"learning rate {run.best_rate:g} (the three of the ablation: {run.lr_choice})")

    def main() -> None:
        each_task("main", run.results, task_names, seeds=seeds, n_test=sizes["n_test"])

    def cells() -> None:
        ab_task, ab_seeds = sizes["ablation_task"], tuple(sizes["ablation_seeds"])
        base = run.results.get(_names([ab_task])[0])
        if base is not None and set(ab_seeds) <= set(seeds) and sizes["ablation_n_test"] == sizes["n_test"]:
            if ab_seeds != seeds:  # the paper cell is the main table's run of those seeds
                base = TaskResult(base.task, base.k, [s for s in base.seeds if s.seed in ab_seeds], base.n_examples)
        else:
            base = None
        three = len(run.lr_choice) == 3
        common = dict(seeds=ab_seeds, n_test=sizes["ablation_n_test"], k=k, progress=say)
        lrs = run.lr_choice if three else (run.best_rate,)
        if not run.cells:
            run.cells = ablation(view, tokenizer, ab_task, lrs, run.best_rate, factors=(), baseline=base, **common)
        factors = [f for f in sizes["ablation_factors"] if f != "lr" or three]
        run.cells = [c for c in run.cells if c.factor == "paper" or c.factor in factors]
        for f in factors:
            if f in {c.factor for c in run.cells}:
                say(f"ablation: {f} kept from the saved partial run")
                continue
            t0 = time.perf_counter()
            run.cells += ablation(view, tokenizer, ab_task, lrs, run.best_rate, factors=(f,),
                                  baseline=run.cells[0].result, **common)[1:]
            run.seconds["ablation_partial"] = run.seconds.get("ablation_partial", 0.0) + time.perf_counter() - t0
            checkpoint("ablation")

    def second() -> None:
        other = sizes.get("second_model") if second_model is None else second_model
        if not other:
            why = run.meta["dropped"].get("second_model")
            run.second_note = f"dropped from this run: {why}" if why else "not run (profile)"
            return
        try:
            if isinstance(other, str):
                from lmscope.core.models import load_model

                lm2, tok2 = load_model(other)
                view2 = ModelView(lm2)
            else:
                view2, tok2 = other
            run.cells = [c for c in run.cells if c.model != view2.name] + ablation(
                view2, tok2, sizes["ablation_task"], (run.best_rate,), run.best_rate,
                seeds=sizes["ablation_seeds"], n_test=sizes["ablation_n_test"], factors=(), k=k, progress=say)
            run.second_note = f"{view2.name}: the paper cell, same learning rate"
        except Exception as err:  # a missing optional model is reported, not fatal
            run.second_note = f"{other} not loadable here: {err}"
        say(f"model factor: {run.second_note}")

    def controls() -> None:
        wanted = set(_names(sizes["control_tasks"]))
        chosen = [t for t, n in zip(task_names, names) if n in wanted] or task_names[:1]
        random_view = untrained_model(view, seed=0)
        run.control = run_study(random_view, tokenizer, chosen, k=k, seeds=seeds[:1], lr=run.best_rate,
                                n_test=sizes["control_n_test"], progress=say)

    def words() -> None:
        each_task("words", run.word_results, list(sizes["word_tasks"]), seeds=sizes["word_seeds"],
                  n_test=sizes["word_n_test"])

    def steps() -> None:
        task0 = get_task(task_names[0])
        run.step = step_seconds(view, tokenizer, task0, k=min(k, 8))
        run.step_task = task0.name

    for name, fn in zip(PARTS, (choose, main, cells, controls, words, steps, second)):
        part(name, fn)
    run.meta.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), threads=torch.get_num_threads(), torch=torch.__version__,
                    total_seconds=previous_total + time.perf_counter() - start)
    return run


# -- JSON --------------------------------------------------------------------------------------------


def study_json(run: StudyRun) -> dict:
    """The run as a JSON-ready dict; an ablation cell that reuses a main-table result points to it."""

    def cell(c: Cell) -> dict:
        same = [n for n, r in run.results.items() if r is c.result]
        result = {"same_as": same[0]} if same else task_json(c.result)
        return {"factor": c.factor, "value": c.value, "model": c.model, "result": result}

    return {"format": "lmscope.icl.study", "version": FORMAT_VERSION, "model": run.model, "profile": run.profile,
            "sizes": run.sizes, "meta": run.meta, "lr_choice": list(run.lr_choice), "best_rate": run.best_rate,
            "sweep_rows": run.sweep_rows, "results": results_json(run.results),
            "word_results": results_json(run.word_results), "control": results_json(run.control),
            "cells": [cell(c) for c in run.cells], "second_note": run.second_note, "step": run.step,
            "step_task": run.step_task, "seconds": run.seconds}


def study_from(d: dict) -> StudyRun:
    """The :class:`StudyRun` of a dict that :func:`study_json` wrote."""
    results = results_from(d["results"])
    cells = [Cell(c["factor"], c["value"], c["model"],
                  results[c["result"]["same_as"]] if "same_as" in c["result"] else task_from(c["result"]))
             for c in d["cells"]]
    return StudyRun(d["model"], d["profile"], d["sizes"], tuple(d["lr_choice"]), d["best_rate"], d["sweep_rows"],
                    results, results_from(d["word_results"]), results_from(d["control"]), cells, d["second_note"],
                    d["step"], d["step_task"], d["seconds"], d["meta"])


def save_study(run: StudyRun, path: str | Path) -> Path:
    """Write ``run`` as JSON at ``path`` (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(study_json(run)))
    tmp.replace(path)
    return path


def load_study(path: str | Path) -> StudyRun:
    """The :class:`StudyRun` saved at ``path``; :class:`StudyFileError` if damaged or of a newer format."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyFileError(f"{path}: not a readable study file ({err}); run benchmarks/icl_study.py again.") from err
    if not isinstance(d, dict) or d.get("format") != "lmscope.icl.study":
        raise StudyFileError(f"{path}: not a study file of lmscope.icl.study (no 'format' field naming it).")
    version = d.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StudyFileError(f"{path}: format version {version!r}, newer than this library's {FORMAT_VERSION}; "
                             "update lmscope or run benchmarks/icl_study.py again.")
    try:
        return study_from(d)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise StudyFileError(f"{path}: damaged study file ({type(err).__name__}: {err}); "
                             "run benchmarks/icl_study.py again.") from err


def mismatch(run: StudyRun, model: str, profile: str, sizes: dict) -> str | None:
    """Why ``run`` is not what the chapter asks for (one line), or None when it matches.

    Model, profile and every run size must agree, and the run must be complete; a size the run
    recorded as dropped (``meta["dropped"]``, e.g. the second model for time) is allowed to differ,
    and the chapter says so.
    """
    if not run.complete:
        return f"the saved run is incomplete (parts done: {', '.join(run.meta.get('parts', [])) or 'none'})"
    if (run.model, run.profile) != (model, profile):
        return f"it is of model {run.model!r}, profile {run.profile!r}; the chapter asks for {model!r}, {profile!r}"
    dropped = run.meta.get("dropped", {})
    wanted = plain_sizes(sizes)
    differ = [key for key in sorted(set(wanted) | set(run.sizes))
              if key not in dropped and wanted.get(key) != run.sizes.get(key)]
    if differ:
        return "its run sizes differ: " + "; ".join(f"{key} {run.sizes.get(key)!r} (chapter: {wanted.get(key)!r})"
                                                     for key in differ)
    return None


def result_path(model: str, profile: str, folder: str | Path | None = None) -> Path:
    """Where the saved run of ``model`` and ``profile`` lives: ``benchmarks/results`` of this checkout."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[3] / "benchmarks" / "results"
    return folder / RESULT_NAME.format(model=str(model).replace("/", "_"), profile=profile)


def chapter_study(view: ModelView, tokenizer, sizes: dict, model: str, profile: str, saved: bool = True,
                  lr: float | None = None, folder: str | Path | None = None,
                  progress: Callable[[str], None] | None = print) -> tuple[StudyRun, str]:
    """The chapter's study and one line saying where it came from: the saved run or a live one.

    The saved run (:func:`result_path`) is read when ``saved`` is true, the profile is not
    ``"quick"`` (the test build runs every part live), no single ``lr`` was set, the file exists
    and :func:`mismatch` finds nothing; otherwise the study runs live. A damaged or newer-format
    file raises :class:`StudyFileError`.
    """
    path = result_path(model, profile, folder)
    why = ("saved=False" if not saved else "the quick profile always runs live" if profile == "quick"
           else "a learning rate was set" if lr is not None else f"no saved run at {path}" if not path.is_file()
           else None)
    if why is None:
        run = load_study(path)
        why = mismatch(run, model, profile, sizes)
        if why is None:
            m = run.meta
            dropped = "; ".join(f"{key}: {reason}" for key, reason in m.get("dropped", {}).items())
            return run, (f"Read the saved run {path.name} (run {m.get('date')}, commit {m.get('commit')}, "
                         f"{m.get('total_seconds', math.nan) / 60:.1f} min on {m.get('threads')} thread(s))"
                         + (f"; dropped from it: {dropped}" if dropped else "") + ".")
        why = f"saved run {path.name} not used: {why}"
    t0 = time.perf_counter()
    run = run_chapter_study(view, tokenizer, sizes, lr=lr, profile=profile, model=model, progress=progress)
    return run, f"Ran live ({why}): {(time.perf_counter() - t0) / 60:.1f} min."
