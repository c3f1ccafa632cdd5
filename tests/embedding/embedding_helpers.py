"""Test helpers shared by the embedding study's tests (tests/conftest.py holds the model fixtures)."""

import numpy as np
import torch

from lmscope import ModelView
from lmscope.embedding.functional_copy import functional_copy

from conftest import VOCAB, make_tiny_model

N_SPECIAL = 3  # ids 0..2 (pad, bos, eos) stand for no string


def strings_a() -> list[bytes | None]:
    """The token strings of the tiny models: ``None`` for the specials, else ``b"w<id>"``."""
    return [None] * N_SPECIAL + [f"w{i}".encode() for i in range(N_SPECIAL, VOCAB)]


def vocab_permuted_copy(seed: int = 5):
    """A tiny llama ``a`` and a rotated, unit-permuted copy ``b`` of it whose embedding and unembedding
    rows are permuted: b's id j is a's id ``perm[j]``. Returns (a, b, truth, perm)."""
    model = make_tiny_model("llama")
    a = ModelView(model)
    copy, truth = functional_copy(a, seed=seed)
    b = ModelView(copy)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(VOCAB))
    with torch.no_grad():
        for path in (b.family.embed, b.family.unembed):
            w = copy.get_submodule(path).weight
            w.copy_(w[perm])
    return a, b, truth, perm
