"""Dictionary definitions with semantic categories: WordNet 3.0 noun glosses (Debian package ``wordnet``).

``/usr/share/wordnet/data.noun`` holds one synset a line: its lexicographer file number
(the category: ``05`` noun.animal, ``06`` noun.artifact, ``13`` noun.food, ``20`` noun.plant, ...),
its words, and after ``|`` its gloss (definition, then quoted examples). :func:`glosses` gives
``(first word, definition)`` pairs of one category, examples removed. Install with
``apt-get install wordnet`` (``make setup`` does).

>>> glosses("noun.animal")[0]                  # doctest: +SKIP
('animal', 'a living organism characterized by voluntary movement')
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
#: lexicographer file names of WordNet 3.0's noun categories by file number (lexnames)
NOUN_CATEGORIES = {
    "noun.act": 4, "noun.animal": 5, "noun.artifact": 6, "noun.attribute": 7, "noun.body": 8,
    "noun.cognition": 9, "noun.communication": 10, "noun.event": 11, "noun.feeling": 12, "noun.food": 13,
    "noun.group": 14, "noun.location": 15, "noun.motive": 16, "noun.object": 17, "noun.person": 18,
    "noun.phenomenon": 19, "noun.plant": 20, "noun.possession": 21, "noun.process": 22, "noun.quantity": 23,
    "noun.relation": 24, "noun.shape": 25, "noun.state": 26, "noun.substance": 27, "noun.time": 28,
}


class WordNetMissingError(RuntimeError):
    """The Debian package that ships WordNet's database is not installed."""


def _data_noun() -> Path:
    path = WORDNET_DIR / "data.noun"
    if not path.is_file():
        raise WordNetMissingError(
            f"No WordNet database at {path}: install the Debian package with `apt-get install wordnet` "
            "(`make setup` does)."
        )
    return path


@lru_cache(maxsize=1)
def _synsets() -> dict[int, tuple[tuple[str, str], ...]]:
    """Every noun synset's (first word, definition), by lexicographer file number; the file is read once."""
    out: dict[int, list[tuple[str, str]]] = {}
    with _data_noun().open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):  # the licence header
                continue
            head, _, gloss = line.partition("|")
            fields = head.split()
            if len(fields) < 5:
                continue
            definition = gloss.split(";")[0].strip()
            out.setdefault(int(fields[1]), []).append((fields[4].replace("_", " "), definition))
    return {k: tuple(v) for k, v in out.items()}


def glosses(category: str, min_words: int = 4, max_words: int = 25) -> list[tuple[str, str]]:
    """``(word, definition)`` of every synset of ``category`` whose definition has ``min_words``..``max_words`` words.

    File order; the word is the synset's first lemma (underscores as spaces); the definition is the
    gloss up to its first ``;`` (examples and further senses dropped).
    """
    if category not in NOUN_CATEGORIES:
        raise ValueError(f"Unknown WordNet category '{category}'; choose from {', '.join(NOUN_CATEGORIES)}.")
    return [(w, d) for w, d in _synsets().get(NOUN_CATEGORIES[category], ())
            if min_words <= len(d.split()) <= max_words]
