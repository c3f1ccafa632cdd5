"""A stand-in tokenizer for the tiny random models of the top-k tests (vocabulary 97)."""

from __future__ import annotations

import re
import zlib
from types import SimpleNamespace

import torch


class WordTokenizer:
    """One token per word or punctuation mark, with its leading space (' Paris', '.').

    Pieces get ids 3, 4, ... in the order first seen; once the vocabulary is full, a new piece
    shares the id its CRC-32 picks. ``decode`` returns the first piece of each id.
    """

    def __init__(self, vocab_size: int = 97, first_id: int = 3):
        self.vocab_size, self.first_id = vocab_size, first_id
        self.ids: dict[str, int] = {}
        self.pieces: dict[int, str] = {}

    def _id(self, piece: str) -> int:
        if piece not in self.ids:
            free = self.first_id + len(self.pieces)
            if free < self.vocab_size:
                self.ids[piece] = free
                self.pieces[free] = piece
            else:
                self.ids[piece] = self.first_id + zlib.crc32(piece.encode()) % (self.vocab_size - self.first_id)
        return self.ids[piece]

    def __call__(self, text: str, return_tensors: str | None = None, add_special_tokens: bool = True):
        ids = [self._id(p) for p in re.findall(r" ?\w+| ?[^\w\s]", text)]
        return SimpleNamespace(input_ids=torch.tensor([ids]) if return_tensors == "pt" else ids)

    def decode(self, ids) -> str:
        return "".join(self.pieces.get(int(i), f"<{int(i)}>") for i in ids)
