"""Debugger sessions as JSON files, and exports of traces, attributions and patching grids (JSON, CSV).

A :class:`Session` holds what a user built up: the model's name (``view.name``), the prompt, the
traced position, the interventions, the names given to values and the last trace. It saves to a
JSON file with a format tag and version; :func:`load_session` checks both, the model and every
field before it returns, so a file of another model, of a newer format or a damaged one raises a
:class:`SessionError` (a ``ValueError``) and the caller's current session stays as it was.

>>> save_session(Session("smollm2-135m", "The capital of France is", -1), "s.json")  # doctest: +SKIP
>>> load_session("s.json", model="smollm2-135m").prompt                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmscope.debugger.interventions import MODES, Intervention, parse_value_name
from lmscope.debugger.records import HeadUpdate, LayerTrace, SubUpdate, Trace

FORMAT = "lmscope-debugger-session"
VERSION = 1


class SessionError(ValueError):
    """A session file that cannot be loaded (another model, a newer format, damaged)."""


@dataclass
class Session:
    """The state of one debugging session."""

    model: str
    prompt: str
    position: int = -1
    interventions: list[Intervention] = field(default_factory=list)
    value_names: dict[str, str] = field(default_factory=dict)
    trace: Trace | None = None


# -- records <-> plain dicts ------------------------------------------------------------------
def trace_to_dict(trace: Trace) -> dict:
    """A :class:`Trace` as JSON-ready dicts and lists."""
    return asdict(trace)


def _lens(rows) -> list[tuple[str, float]]:
    return [(str(t), float(p)) for t, p in rows]


def trace_from_dict(data: dict) -> Trace:
    """The :class:`Trace` that :func:`trace_to_dict` wrote; KeyError/TypeError/ValueError if malformed."""
    layers = [LayerTrace(int(lt["layer"]), _lens(lt["before_attn"]), _lens(lt["after_attn"]), _lens(lt["before_ff"]),
                         _lens(lt["after_ff"]),
                         [SubUpdate(int(u["layer"]), int(u["unit"]), float(u["coeff"]), float(u["score"]),
                                    [str(t) for t in u["tokens"]], u.get("annotation")) for u in lt["ff_updates"]],
                         [HeadUpdate(int(h["layer"]), int(h["head"]), float(h["norm"]), [str(t) for t in h["tokens"]])
                          for h in lt["heads"]])
              for lt in data["layers"]]
    return Trace([str(t) for t in data["tokens"]], int(data["position"]), layers, _lens(data["prediction"]),
                 [_intervention(iv) for iv in data.get("interventions", [])])


def _intervention(d: dict) -> Intervention:
    mode = d["mode"]
    if mode not in MODES:
        raise ValueError(f"unknown intervention mode {mode!r}")
    value = d.get("value")
    if value is not None and not math.isfinite(float(value)):
        raise ValueError(f"intervention value {value!r} is not finite")
    return Intervention(int(d["layer"]), int(d["unit"]), mode, None if value is None else float(value),
                        bool(d.get("enabled", True)))


# -- sessions ------------------------------------------------------------------------------------
def session_to_dict(session: Session) -> dict:
    return {"format": FORMAT, "version": VERSION, "model": session.model, "prompt": session.prompt,
            "position": session.position, "interventions": [asdict(iv) for iv in session.interventions],
            "value_names": dict(session.value_names),
            "trace": None if session.trace is None else trace_to_dict(session.trace)}


def save_session(session: Session, path: str | Path) -> Path:
    """Write ``session`` as JSON to ``path`` (written to a temporary file first, then moved)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(session_to_dict(session), indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def load_session(path: str | Path, model: str | None = None, n_layers: int | None = None,
                 d_ff: int | None = None) -> Session:
    """Read a session file; SessionError naming the problem and the fix if it does not fit.

    ``model`` (``view.name``) and the sizes, when given, must match the file's.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionError(f"No session file at {path}: check the path.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SessionError(f"The session file {path} is damaged ({err}); nothing was loaded.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionError(f"{path} is not an lmscope debugger session file; nothing was loaded.")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SessionError(f"{path} has session format version {version!r}, newer than this lmscope's "
                           f"{VERSION}: update lmscope to load it.")
    if model is not None and data.get("model") != model:
        raise SessionError(f"{path} is a session of model {data.get('model')!r}, not of {model!r}: "
                           f"load {data.get('model')!r} to use it.")
    try:
        interventions = [_intervention(d) for d in data["interventions"]]
        for iv in interventions:
            parse_value_name(iv.name, n_layers, d_ff)
        names = {str(k): str(v) for k, v in dict(data.get("value_names") or {}).items()}
        for name in names:
            parse_value_name(name, n_layers, d_ff)
        trace = None if data.get("trace") is None else trace_from_dict(data["trace"])
        prompt, position = data["prompt"], data["position"]
        if not isinstance(prompt, str) or isinstance(position, bool) or not isinstance(position, int):
            raise ValueError("prompt must be text and position an integer")
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise SessionError(f"The session file {path} is damaged ({type(err).__name__}: {err}); "
                           "nothing was loaded.") from None
    return Session(str(data["model"]), prompt, position, interventions, names, trace)


# -- exports -------------------------------------------------------------------------------------
def _write_rows(rows: list[dict], path: Path) -> Path:
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    elif path.suffix.lower() == ".csv":
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise ValueError(f"Cannot export to {path.name}: use a file name ending in .json or .csv.")
    return path


def trace_rows(trace: Trace) -> list[dict]:
    """One row per (layer, top sub-update) of a trace, with the layer's logit-lens top token."""
    rows = []
    for lt in trace.layers:
        top = lt.after_ff[0] if lt.after_ff else ("", float("nan"))
        for rank, u in enumerate(lt.ff_updates):
            rows.append({"layer": lt.layer, "position": trace.position, "lens_after_ff": top[0],
                         "lens_probability": top[1], "rank": rank, "value": u.name, "coeff": u.coeff,
                         "score": u.score, "top_tokens": " ".join(u.tokens[:5]), "annotation": u.annotation})
    return rows


def export(thing, path: str | Path) -> Path:
    """Write a :class:`Trace`, an :class:`~lmscope.debugger.dla.Attribution`, a
    :class:`~lmscope.debugger.patching.PatchGrid` or a dict of grids as ``.json`` or ``.csv`` rows.
    A trace's JSON is the whole record (:func:`trace_to_dict`)."""
    path = Path(path)
    if isinstance(thing, Trace):
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(trace_to_dict(thing), indent=1, ensure_ascii=False), encoding="utf-8")
            return path
        return _write_rows(trace_rows(thing), path)
    if isinstance(thing, dict):
        return _write_rows([r for grid in thing.values() for r in grid.rows()], path)
    if hasattr(thing, "rows"):
        return _write_rows(thing.rows(), path)
    raise ValueError(f"Cannot export a {type(thing).__name__}: give a Trace, an Attribution or patching grids.")
