"""Tokens as readable text: the one place that turns token ids into display strings.

A token is decoded on its own and its invisible characters are made visible: a space as ``␣``,
a newline as ``\\n``. A token that is only part of a UTF-8 character (byte-level BPE pieces,
SentencePiece byte tokens) would decode to U+FFFD; it shows as its bytes instead, e.g.
``\\xe2\\x80``. Without a tokenizer a token shows as ``<id>``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

_VOCAB: dict[int, tuple[object, list[str]]] = {}  # id(tokenizer) -> (tokenizer, decoded vocabulary)


def readable(text: str) -> str:
    """Decoded token text with spaces shown as ``␣`` and newlines as ``\\n``."""
    return text.replace(" ", "\u2423").replace("\n", "\\n")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes)}


def _token_bytes(tokenizer, token_id: int) -> str | None:
    """A partial-character token's bytes as ``\\xNN`` text, or None if its raw form is not byte-coded."""
    raw = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(raw, str):
        return None
    pieces = re.fullmatch(r"(?:<0x[0-9A-Fa-f]{2}>)+", raw)
    if pieces:
        data = bytes(int(h, 16) for h in re.findall(r"<0x([0-9A-Fa-f]{2})>", raw))
    else:
        table = _byte_decoder()
        if not all(ch in table for ch in raw):
            return None
        data = bytes(table[ch] for ch in raw)
    return data.decode("utf-8", errors="backslashreplace")


def _decoded(tokenizer, token_id: int, text: str) -> str:
    """``text`` (the token decoded on its own), with an undecodable piece replaced by its bytes."""
    if "\ufffd" in text:
        return _token_bytes(tokenizer, token_id) or text
    return text


def token_text(tokenizer, token_id: int) -> str:
    """One token as readable text (``<id>`` without a tokenizer)."""
    if tokenizer is None:
        return f"<{int(token_id)}>"
    return readable(_decoded(tokenizer, token_id, tokenizer.decode([int(token_id)])))


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
    texts = [_decoded(tokenizer, i, t) for i, t in enumerate(tokenizer.batch_decode([[i] for i in range(n)]))]
    texts += [f"<{i}>" for i in range(n, d_vocab)]  # padded embedding rows without a token
    _VOCAB[id(tokenizer)] = (tokenizer, texts)
    return texts


def vocab_texts(tokenizer, d_vocab: int) -> list[str]:
    """Every token id's readable text: ``vocab_texts(tok, V)[i] == token_text(tok, i)``."""
    return [readable(t) for t in decoded_vocab(tokenizer, d_vocab)]
