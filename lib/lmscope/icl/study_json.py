"""Study results as JSON and back: :class:`SeedResult` / :class:`TaskResult` with every array exact.

An array is stored as ``{"dtype", "shape", "data"}`` (a flat list), so dtypes, shapes (empty ones
included) and float values survive a round trip bit for bit; ``nan`` is written as JSON's ``NaN``.
:mod:`lmscope.icl.study` builds a whole chapter's run file from these.

>>> task_from(json.loads(json.dumps(task_json(result)))).summary("sim_aou", "gd")   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from lmscope.icl.metrics import SeedResult, TaskResult

def _array(a) -> dict | None:
    if a is None:
        return None
    a = np.asarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}


def _unarray(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.asarray(d["data"], dtype=d["dtype"]).reshape(d["shape"])


_ARRAY_DICTS = ("correct", "sim_aou", "sim_am_delta", "sim_am", "update_norm", "attn_change")


def _seed_json(s: SeedResult) -> dict:
    out = {"task": s.task, "seed": s.seed, "k": s.k, "lr": s.lr, "random_sim_aou": _array(s.random_sim_aou),
           "losses": {m: [float(x) for x in v] for m, v in s.losses.items()}, "skipped": dict(s.skipped),
           "seconds": {m: float(v) for m, v in s.seconds.items()}}
    out |= {name: {m: _array(v) for m, v in getattr(s, name).items()} for name in _ARRAY_DICTS}
    return out


def _seed_from(d: dict) -> SeedResult:
    s = SeedResult(d["task"], d["seed"], d["k"], d["lr"], {m: _unarray(v) for m, v in d["correct"].items()})
    for name in _ARRAY_DICTS[1:]:
        setattr(s, name, {m: _unarray(v) for m, v in d[name].items()})
    s.random_sim_aou = _unarray(d["random_sim_aou"])
    s.losses, s.skipped, s.seconds = d["losses"], d["skipped"], d["seconds"]
    return s


def task_json(r: TaskResult) -> dict:
    """``r`` as a JSON-ready dict (every seed, every array)."""
    return {"task": r.task, "k": r.k, "n_examples": r.n_examples, "seeds": [_seed_json(s) for s in r.seeds]}


def task_from(d: dict) -> TaskResult:
    """The :class:`TaskResult` of a :func:`task_json` dict."""
    return TaskResult(d["task"], d["k"], [_seed_from(s) for s in d["seeds"]], d["n_examples"])


def results_json(results: dict[str, TaskResult]) -> dict:
    """``{task: TaskResult}`` as ``{task: task_json(...)}``."""
    return {name: task_json(r) for name, r in results.items()}


def results_from(d: dict) -> dict[str, TaskResult]:
    """The ``{task: TaskResult}`` of a :func:`results_json` dict."""
    return {name: task_from(r) for name, r in d.items()}
