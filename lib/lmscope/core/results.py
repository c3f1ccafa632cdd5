"""Each chapter's headline numbers, one small JSON file per (model, chapter), for the two-model chapter.

A chapter ends with ``save_results("01_embedding_space", view.name, {...})``; the chapter that
compares models reads them all back with :func:`load_results`. The folder is
``$LMSCOPE_RESULTS`` (the book builder sets it) or ``cache_dir()/results``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lmscope.core.models import cache_dir


def results_dir() -> Path:
    """``$LMSCOPE_RESULTS`` or ``cache_dir()/results``, created if missing."""
    path = Path(os.environ.get("LMSCOPE_RESULTS") or cache_dir() / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value):
    """Numbers, strings, lists and dicts as JSON can hold them (numpy and torch scalars become floats)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, int):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def save_results(chapter: str, model: str, numbers: dict, directory: str | Path | None = None) -> Path:
    """Write ``numbers`` (names -> numbers or short strings) as ``<dir>/<model>/<chapter>.json``."""
    folder = Path(directory) if directory is not None else results_dir()
    path = folder / model / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chapter": chapter, "model": model, "numbers": _plain(numbers)}, indent=1))
    return path


def load_results(directory: str | Path | None = None) -> dict[str, dict[str, dict]]:
    """Every saved file as ``{model: {chapter: numbers}}``; models and chapters in sorted order."""
    folder = Path(directory) if directory is not None else results_dir()
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(folder.glob("*/*.json")):
        record = json.loads(path.read_text())
        out.setdefault(record["model"], {})[record["chapter"]] = record["numbers"]
    return out
