"""Helpers shared by the debugger tests: hook counting, random prompts, a tokenizer of known words."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch


def n_hooks(model) -> int:
    """Forward and forward-pre hooks registered anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def random_ids(view, length: int = 7, seed: int = 0) -> torch.Tensor:
    """A random prompt of token ids (length,), avoiding the special ids 0-2."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, view.cfg.d_vocab, (length,), generator=g)


class WordTokenizer:
    """Decodes token id ``i`` to ``vocab[i]``; encodes text word by word (each `` word`` must be in ``vocab``).

    Enough of a tokenizer for the debugger's search, steering, app and display: calling it,
    ``len``, ``batch_decode``, ``decode``, ``eos_token_id`` / ``pad_token_id``.
    """

    eos_token_id = 2
    pad_token_id = 0

    def __init__(self, vocab: list[str]):
        self.vocab = list(vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, text: str, return_tensors=None, add_special_tokens: bool = True):
        ids = [self.vocab.index(word) for word in re.findall(r" ?\S+", text)]
        return SimpleNamespace(input_ids=torch.tensor([ids]) if return_tensors == "pt" else ids)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def batch_decode(self, seqs) -> list[str]:
        return [self.decode(s) for s in seqs]
