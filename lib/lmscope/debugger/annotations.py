"""Names for value vectors ("L12D34 = sports"), kept in a JSON file in the cache folder.

One file, ``cache_dir()/annotations.json``, maps a model name (:attr:`lmscope.core.view.ModelView.name`,
e.g. ``smollm2-135m``) to ``{value name: label}``; every change is written at once (atomically),
so names survive a restart.

>>> notes = Annotations.for_model(view)      # doctest: +SKIP
>>> notes.set("L12D34", "sports")            # doctest: +SKIP
>>> notes.add("L3D7 = negation")             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from lmscope.core.models import cache_dir
from lmscope.debugger.interventions import parse_value_name, value_name

FILE_NAME = "annotations.json"


class Annotations:
    """Labels of one model's value vectors, stored in ``path`` under ``model``."""

    def __init__(self, model: str, path: str | Path | None = None, n_layers: int | None = None,
                 d_ff: int | None = None):
        self.model = model
        self.path = Path(path) if path is not None else cache_dir() / FILE_NAME
        self.n_layers, self.d_ff = n_layers, d_ff
        self._labels: dict[str, str] = self._read().get(model, {})

    @classmethod
    def for_model(cls, view, path: str | Path | None = None) -> "Annotations":
        """The labels of the viewed model (keyed by ``view.name``), range-checked against its sizes."""
        return cls(view.name, path, view.cfg.n_layers, view.cfg.d_ff)

    # -- reading and writing -------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot read the annotations file {self.path}: {err}. Fix or remove it.") from None
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        data = self._read()  # keep other models' names and concurrent edits of other models
        data[self.model] = dict(sorted(self._labels.items()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, ensure_ascii=False)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- the labels -----------------------------------------------------------------------
    def _canonical(self, name: str) -> str:
        return value_name(*parse_value_name(name, self.n_layers, self.d_ff))

    def get(self, name: str) -> str | None:
        """The label of a value (``'L12D34'``), or None."""
        try:
            return self._labels.get(self._canonical(name))
        except (ValueError, IndexError):
            return None

    def set(self, name: str, label: str) -> None:
        """Name a value; an empty label removes the name. Saved at once."""
        key = self._canonical(name)
        label = (label or "").strip()
        if label:
            self._labels[key] = label
        else:
            self._labels.pop(key, None)
        self._write()

    def add(self, text: str) -> tuple[str, str]:
        """Parse and save ``"L12D34 = sports"``; returns ``(name, label)``."""
        if "=" not in text:
            raise ValueError(f"Write an annotation as 'L12D34 = label', got {text!r}.")
        name, label = (part.strip() for part in text.split("=", 1))
        if not label:
            raise ValueError(f"The annotation {text!r} has no label after '='.")
        self.set(name, label)
        return self._canonical(name), label

    def remove(self, name: str) -> None:
        self.set(name, "")

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._labels.items(), key=lambda kv: parse_value_name(kv[0]))

    def search(self, word: str) -> list[str]:
        """Value names whose label contains ``word`` (case-insensitive)."""
        word = word.strip().lower()
        return [n for n, label in self.items() if word and word in label.lower()]

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None
