"""Labelled sentiment texts: one the project builds itself, and loaders for other data.

The built-in set fills review templates ("My verdict on the film: {word}.") with words of
the VADER sentiment lexicon (``vader_lexicon.txt``, shipped inside the ``vaderSentiment``
PyPI package, MIT licence): words rated at least ``min_strength`` (on VADER's -4..4
scale) are positive (label 1) or negative (label 0). The train/test split is by word and
fixed: a word goes to test when a hash of it says so, so no test word is seen in
training and the split never depends on ordering or on a random seed.

For people with their own data or a hub: :func:`load_csv`, :func:`load_jsonl` and
:func:`load_hf` (Hugging Face ``datasets``, e.g. ``imdb`` or ``sst2``) return the same
:class:`LabelledTexts`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

TEMPLATES = (
    "My verdict on the film: {word}.",
    "In one word, the movie was {word}.",
    "The critics called the show {word}.",
    "Honestly, the book felt {word}.",
    "Review of the restaurant: {word}.",
    "I would describe the concert as {word}.",
)
LABEL_NAMES = ("negative", "positive")
_LABEL_WORDS = {"negative": 0, "neg": 0, "0": 0, "positive": 1, "pos": 1, "1": 1}


@dataclass
class LabelledTexts:
    """Texts with integer labels (0 negative, 1 positive)."""

    texts: list[str]
    labels: list[int]

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, n: int | None, seed: int = 0) -> "LabelledTexts":
        """At most ``n`` examples, a seeded sample balanced by label when possible (all if None)."""
        if n is None or n >= len(self):
            return self
        rng = random.Random(seed)
        by_label: dict[int, list[int]] = {}
        for i, y in enumerate(self.labels):
            by_label.setdefault(y, []).append(i)
        chosen: list[int] = []
        for idx in by_label.values():
            rng.shuffle(idx)
        per = max(1, n // len(by_label))
        for idx in by_label.values():
            chosen += idx[:per]
        rest = [i for i in range(len(self)) if i not in set(chosen)]
        rng.shuffle(rest)
        chosen = sorted((chosen + rest)[:n])
        return LabelledTexts([self.texts[i] for i in chosen], [self.labels[i] for i in chosen])


def check_nonempty(data: LabelledTexts, what: str = "dataset") -> LabelledTexts:
    if len(data) == 0:
        raise ValueError(f"The {what} is empty: it has no labelled texts.")
    if len(set(data.labels)) < 2:
        raise ValueError(f"The {what} has only one label ({data.labels[0]}); a classifier needs both classes.")
    return data


def vader_lexicon() -> dict[str, float]:
    """word -> mean sentiment rating (-4..4), read from the lexicon file the vaderSentiment package ships."""
    try:
        text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("The sentiment lexicon comes with the 'vaderSentiment' package: "
                                  "pip install vaderSentiment (the project's dependencies include it).") from err
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return out


def _in_test(word: str, test_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big")
    return h / 2**32 < test_fraction


def sentiment_words(min_strength: float = 2.0) -> dict[str, int]:
    """Alphabetic lexicon words rated at least ``min_strength`` away from neutral: word -> label."""
    return {w: int(s > 0) for w, s in sorted(vader_lexicon().items())
            if abs(s) >= min_strength and w.isalpha() and w.islower() and len(w) > 2}


def build_sentiment_set(min_strength: float = 2.0, test_fraction: float = 0.3,
                        templates=TEMPLATES) -> tuple[LabelledTexts, LabelledTexts]:
    """The built-in set: ``(train, test)``, every lexicon word in every template, split by word."""
    train, test = LabelledTexts([], []), LabelledTexts([], [])
    for word, label in sentiment_words(min_strength).items():
        part = test if _in_test(word, test_fraction) else train
        for template in templates:
            part.texts.append(template.format(word=word))
            part.labels.append(label)
    return check_nonempty(train, "training set"), check_nonempty(test, "test set")


def _label(value, where: str) -> int:
    key = str(value).strip().lower()
    if key not in _LABEL_WORDS:
        raise ValueError(f"Unknown label {value!r} in {where}: use 0/1 or negative/positive.")
    return _LABEL_WORDS[key]


def load_csv(path: str | Path, text_column: str = "text", label_column: str = "label") -> LabelledTexts:
    """A CSV file with a header row naming ``text_column`` and ``label_column``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {text_column, label_column} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} has no column(s) {sorted(missing)}; its columns are {reader.fieldnames}.")
        rows = list(reader)
    data = LabelledTexts([r[text_column] for r in rows], [_label(r[label_column], str(path)) for r in rows])
    return check_nonempty(data, f"file {path}")


def load_jsonl(path: str | Path, text_field: str = "text", label_field: str = "label") -> LabelledTexts:
    """A JSON-lines file, one object per line with ``text_field`` and ``label_field``."""
    path = Path(path)
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if text_field not in obj or label_field not in obj:
            raise ValueError(f"{path}:{n} lacks '{text_field}' or '{label_field}'.")
        texts.append(obj[text_field])
        labels.append(_label(obj[label_field], f"{path}:{n}"))
    return check_nonempty(LabelledTexts(texts, labels), f"file {path}")


def load_hf(name: str = "imdb", split: str = "test", text_field: str | None = None,
            label_field: str = "label", n: int | None = None, seed: int = 0) -> LabelledTexts:
    """A Hugging Face dataset (needs the ``datasets`` package and a hub): e.g. ``imdb``, ``sst2``."""
    try:
        import datasets
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("load_hf needs the 'datasets' package (pip install datasets) and "
                                  "access to the Hugging Face hub; use load_csv/load_jsonl offline.") from err
    ds = datasets.load_dataset(name, split=split)
    columns = list(ds.column_names)
    text_field = text_field or next((c for c in ("text", "sentence", "review") if c in columns), None)
    if text_field is None or text_field not in columns or label_field not in columns:
        raise ValueError(f"Dataset '{name}' has columns {columns}; pass text_field= and label_field=.")
    data = LabelledTexts(list(ds[text_field]), [_label(y, name) for y in ds[label_field]])
    return check_nonempty(data, f"dataset {name}/{split}").take(n, seed)
