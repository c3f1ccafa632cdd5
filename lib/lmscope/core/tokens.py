"""Tokens as readable text: the one place that turns token ids into display strings.

A token is decoded on its own and its invisible characters are made visible: a space as ``␣``,
a newline as ``\\n``. Without a tokenizer a token shows as ``<id>``.
"""

from __future__ import annotations

from typing import Iterable

_VOCAB: dict[int, tuple[object, list[str]]] = {}  # id(tokenizer) -> (tokenizer, decoded vocabulary)


def readable(text: str) -> str:
    """Decoded token text with spaces shown as ``␣`` and newlines as ``\\n``."""
    return text.replace(" ", "\u2423").replace("\n", "\\n")


def token_text(tokenizer, token_id: int) -> str:
    """One token as readable text (``<id>`` without a tokenizer)."""
    if tokenizer is None:
        return f"<{int(token_id)}>"
    return readable(tokenizer.decode([int(token_id)]))


def token_texts(tokenizer, ids: Iterable[int]) -> list[str]:
    """Tokens as readable text, one string per id."""
    return [token_text(tokenizer, i) for i in ids]


def decoded_vocab(tokenizer, d_vocab: int) -> list[str]:
    """Every token id decoded on its own, as plain text (cached per tokenizer); ``<id>`` for rows without a token."""
    if tokenizer is None:
        return [f"<{i}>" for i in range(d_vocab)]
    cached = _VOCAB.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer and len(cached[1]) >= d_vocab:
        return cached[1] if len(cached[1]) == d_vocab else cached[1][:d_vocab]
    n = min(d_vocab, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    texts += [f"<{i}>" for i in range(n, d_vocab)]  # padded embedding rows without a token
    _VOCAB[id(tokenizer)] = (tokenizer, texts)
    return texts


def vocab_texts(tokenizer, d_vocab: int) -> list[str]:
    """Every token id's readable text: ``vocab_texts(tok, V)[i] == token_text(tok, i)``."""
    return [readable(t) for t in decoded_vocab(tokenizer, d_vocab)]
