"""Short real English sentences by topic: the Debian package ``fortunes`` (``fortune-mod``'s data files).

Each topic file in ``/usr/share/games/fortunes/`` (``computers``, ``politics``, ``science``, ...)
holds quotations and jokes separated by lines with a single ``%``. :func:`fortunes` reads
one topic's entries as one-line texts: attribution lines (``-- Author``) dropped, whitespace
collapsed, only entries of ``min_words`` to ``max_words`` words kept (short enough for
k = 32 demonstrations in a 2048-token prompt). Install with ``apt-get install fortunes``
(``make setup`` does).

>>> fortunes("science")[:1]                     # doctest: +SKIP
['The universe is a big place, perhaps the biggest.']
"""

from __future__ import annotations

import re
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")


class FortunesMissingError(RuntimeError):
    """The Debian package that ships the fortune files is not installed."""


def fortune_dir() -> Path:
    if not FORTUNE_DIR.is_dir():
        raise FortunesMissingError(
            f"No fortune files in {FORTUNE_DIR}: install the Debian package with `apt-get install fortunes` "
            "(`make setup` does)."
        )
    return FORTUNE_DIR


def topics() -> list[str]:
    """Topic files shipped (no ``.dat`` / ``.u8`` companions), sorted."""
    return sorted(p.name for p in fortune_dir().iterdir() if p.is_file() and "." not in p.name)


def _clean(entry: str) -> str:
    lines = [ln for ln in entry.splitlines() if not re.match(r"^\s*(--|~~|\u2014)", ln)]
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def fortunes(topic: str, min_words: int = 5, max_words: int = 30) -> list[str]:
    """The entries of one topic file as one-line texts of ``min_words``..``max_words`` words, file order."""
    path = fortune_dir() / topic
    if not path.is_file():
        raise ValueError(f"No fortune topic '{topic}'; topics: {', '.join(topics())}.")
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        line = _clean(entry)
        if line and min_words <= len(line.split()) <= max_words and "\ufffd" not in line:
            out.append(line)
    return list(dict.fromkeys(out))  # duplicates dropped, order kept
