"""Alignment across vocabularies: the shared-string map, exact correlations over it, a known answer, and chance."""

import numpy as np
import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.cross_vocab import (
    CrossAligner, cross_layer_similarity, depth_p_value, double_centred, levels_removed, rank1_share, cross_vocab_alignment, depth_error, depth_rank, piece_bytes,
    relative_partner, shared_strings, shared_vocabulary, token_bytes, tokenizer_scheme, unit_match,
)
from lmscope.embedding.alignment import match
from lmscope.embedding.cross_report import finding
from lmscope.embedding.functional_copy import CopyTruth
from lmscope.embedding.projection import group_vectors

from conftest import VOCAB, make_tiny_model
from embedding_helpers import N_SPECIAL, strings_a, vocab_permuted_copy

def _relabelled_copy(seed: int = 5):
    """Model b: a rotated, unit-permuted copy of tiny llama a with its vocabulary rows permuted; b's strings.

    b's id j stands for a's string ``strings_a[perm[j]]``, except 6 ids that hold new strings (a's
    strings there are dropped from b) and 2 ids that hold the same string (so neither is shared).
    """
    a, b, truth, perm = vocab_permuted_copy(seed)
    sa = strings_a()
    sb = [sa[int(p)] for p in perm]
    real = [j for j, s in enumerate(sb) if s is not None]
    for j in real[:6]:
        sb[j] = f"new{j}".encode()
    sb[real[7]] = sb[real[8]]
    return a, b, truth, sa, sb, perm


def test_piece_bytes_reads_both_space_markers_and_byte_tokens():
    assert piece_bytes("\u0120the", "byte_level") == b" the"  # Ġthe
    assert piece_bytes("\u2581the", "sentencepiece") == b" the"  # ▁the
    assert piece_bytes("\u010a", "byte_level") == b"\n"  # Ċ
    assert piece_bytes("<0x0A>", "sentencepiece") == b"\n"
    assert piece_bytes("\u00e2\u0122\u013b", "byte_level") == "\u2019".encode()  # ’ as three byte-level chars
    assert piece_bytes("\u00e2\u0122", "byte_level") == b"\xe2\x80"  # half a character stays bytes
    assert piece_bytes("\u2581\u2581", "sentencepiece") == b"  "


def test_shared_strings_keeps_strings_that_are_one_id_in_each():
    a, b, truth, sa, sb, perm = _relabelled_copy()
    shared = shared_strings(sa, sb)
    assert shared.count == VOCAB - N_SPECIAL - 6 - 2
    assert shared.unique_a == VOCAB - N_SPECIAL and shared.unique_b == VOCAB - N_SPECIAL - 2  # 6 new, 1 doubled, 1 gone
    for ia, ib, s in zip(shared.ids_a.tolist(), shared.ids_b.tolist(), shared.strings):
        assert sa[ia] == s == sb[ib] and int(perm[ib]) == ia
    ctrl = shared.shuffled(1)
    assert sorted(ctrl.ids_b.tolist()) == sorted(shared.ids_b.tolist())
    assert (ctrl.ids_b != shared.ids_b).float().mean() > 0.8
    with pytest.raises(ValueError, match="share no token string"):
        shared_strings([b"x", None], [b"y"])


def test_kernel_trick_over_shared_strings_equals_explicit_correlation():
    a, b = ModelView(make_tiny_model("llama", seed=0)), ModelView(make_tiny_model("qwen2", seed=1))
    sa = strings_a()
    sb = list(reversed(sa))  # b's ids in the other order; the specials are not shared
    shared = shared_strings(sa, sb)
    X, Y = group_vectors(a, 1, "ff_values")[:9].detach(), group_vectors(b, 2, "W_O")[:7].detach()
    P = X @ a.W_U.detach()[:, shared.ids_a]
    Q = Y @ b.W_U.detach()[:, shared.ids_b]
    P, Q = P - P.mean(1, keepdim=True), Q - Q.mean(1, keepdim=True)
    explicit = (P / P.norm(dim=1, keepdim=True)) @ (Q / Q.norm(dim=1, keepdim=True)).T
    aligner = CrossAligner(a, b, shared)
    fast = aligner.prepared("a", 1, "ff_values")[:9] @ aligner.prepared("b", 2, "W_O")[:7].T
    torch.testing.assert_close(fast, explicit)


def test_alignment_over_shared_strings_recovers_a_relabelled_copy():
    a, b, truth, sa, sb, _ = _relabelled_copy()
    shared = shared_strings(sa, sb)
    real, ctrl = CrossAligner(a, b, shared), CrossAligner(a, b, shared.shuffled(1))
    for layer in range(3):
        C = (real.prepared("a", layer, "ff_values") @ real.prepared("b", layer, "ff_values").T).abs().numpy()
        assert np.array_equal(match(C), CopyTruth.inverse(truth.ff_perm[layer]))
        m_real, matched = unit_match(real, layer, layer)
        m_ctrl, _ = unit_match(ctrl, layer, layer)
        assert matched.min() > 0.999 and m_ctrl < 0.8
    result = cross_vocab_alignment(a, b, shared, groups=("ff_values", "W_O"), n_units=None, unit_pairs=3)
    for group in ("ff_values", "W_O"):
        S = result.sims[group]
        assert list(S.argmax(1)) == [0, 1, 2] and depth_rank(S) == 1.0 and depth_error(S) == 0.0
        assert np.diag(S).min() > result.controls[group][0].max()
    rows = result.summary(n_perm=100)
    assert {r["group"] for r in rows} == {"ff_values", "W_O"} and all(r["mean |corr|"] > r["mean |corr| (shuffled)"]
                                                                      for r in rows)
    assert result.headline(n_perm=100)["shared strings"] == shared.count
    assert f"Over {shared.count:,} shared token strings" in finding(result, ("a", "b"))
    assert [(u[0], u[1]) for u in result.units] == [(0, 0), (1, 1), (2, 2)]
    assert all(u[2] > 0.999 and u[3] < 0.8 for u in result.units)
    assert [u[4] for u in result.units] == [2, 1, 0]  # the mirrored depth: another layer's units, except mid-way
    assert result.units[0][5] < 0.8 and result.units[2][5] < 0.8 and result.units[1][5] > 0.999


def test_unrelated_models_align_at_chance():
    a, b = ModelView(make_tiny_model("llama", seed=0)), ModelView(make_tiny_model("qwen2", seed=3))
    sa = strings_a()
    shared = shared_strings(sa, sa[:N_SPECIAL] + sa[N_SPECIAL:][::-1])
    result = cross_vocab_alignment(a, b, shared, groups=("ff_values",), n_units=None, unit_pairs=3, shuffles=3)
    S, controls = result.sims["ff_values"], result.controls["ff_values"]
    chance = np.mean(controls)
    assert abs(S.mean() / chance - 1) < 0.15
    real_units, ctrl_units = np.mean([u[2] for u in result.units]), np.mean([u[3] for u in result.units])
    assert abs(real_units / ctrl_units - 1) < 0.15


def test_depth_summaries_and_relative_partner():
    S = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], float)  # 5 layers of a onto 3 of b, in order
    assert depth_rank(S) == 1.0 and depth_error(S) == 0.1
    assert depth_rank(S[::-1]) == -1.0 and depth_error(S[::-1]) > 0.5
    assert depth_p_value(np.eye(6), n=200) < 0.02 and depth_p_value(np.eye(6)[::-1], n=200) > 0.9
    # one column that every row prefers hides the order from argmax; double-centring restores it
    hub = 1 + np.eye(6) * 0.1 + np.array([0, 1, 0, 0, 0, 0])[None, :]
    assert depth_error(hub) > 0.3 and depth_error(double_centred(hub)) == 0 == depth_error(levels_removed(hub))
    levels = np.outer([1, 2, 3], [3, 1, 2, 5])  # a pure product of row and column levels
    assert rank1_share(levels) == pytest.approx(1.0) and np.allclose(levels_removed(levels), 0)
    assert [relative_partner(l, 30, 18) for l in (0, 15, 29)] == [0, 9, 17]
    assert depth_rank(np.ones((4, 3))) == 0.0


def test_bad_input():
    a = ModelView(make_tiny_model("llama"))
    shared = shared_strings([f"{i}".encode() for i in range(200)], [f"{i}".encode() for i in range(200)])
    with pytest.raises(ValueError, match="model a has 97 tokens"):
        CrossAligner(a, a, shared)
    with pytest.raises(ValueError, match="Unknown scheme"):
        token_bytes(None, scheme="bpe")
    ok = shared_strings(strings_a(), strings_a())
    with pytest.raises(ValueError, match="Unknown parameter group"):
        cross_vocab_alignment(a, a, ok, groups=("ff_vals",))
    with pytest.raises(ValueError, match="shuffles"):
        cross_vocab_alignment(a, a, ok, shuffles=0)


@pytest.mark.slow
def test_real_tokenizers_share_strings_as_written(smollm, gemma):
    (_, tok_a), (_, tok_b) = smollm, gemma
    assert tokenizer_scheme(tok_a) == "byte_level" and tokenizer_scheme(tok_b) == "sentencepiece"
    shared = shared_vocabulary(tok_a, tok_b)
    assert 10_000 < shared.count < len(tok_a)
    rng = np.random.default_rng(0)
    for i in rng.choice(shared.count, 300, replace=False):
        s = shared.strings[i]
        ia, ib = int(shared.ids_a[i]), int(shared.ids_b[i])
        try:
            text = s.decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert tok_a.decode([ia]) == text == tok_b.decode([ib])
    for text in (" the", " Paris", "ing", "\n"):
        ia = tok_a.encode(text, add_special_tokens=False)
        ib = tok_b.encode(text, add_special_tokens=False)
        j = shared.strings.index(text.encode())
        assert ia == [int(shared.ids_a[j])] and ib == [int(shared.ids_b[j])]


def _hand_built(vocab: dict[str, int], decoder, added=(), special=()):
    """A word-level tokenizer over ``vocab`` with ``decoder``; ``<unk>`` special, plus added and special tokens."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  unk_token="<unk>")
    tok.backend_tokenizer.decoder = decoder
    tok.add_tokens(list(added))
    tok.add_special_tokens({"additional_special_tokens": list(special)})
    return tok


def test_token_bytes_of_hand_built_byte_level_and_sentencepiece_tokenizers():
    from tokenizers import decoders

    bpe = _hand_built({"<unk>": 0, "\u0120the": 1, "the": 2, "\u010a": 3, "\u00e2\u0122": 4}, decoders.ByteLevel(),
                      special=["<|end|>"])
    sp = _hand_built({"<unk>": 0, "\u2581the": 1, "the": 2, "<0x0A>": 3, "<0xE2>": 4, "\u2581\u2581": 5},
                     decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]),
                     added=["\n", "<td>"], special=["<start>"])
    assert tokenizer_scheme(bpe) == "byte_level" and tokenizer_scheme(sp) == "sentencepiece"
    a, b = token_bytes(bpe), token_bytes(sp)
    assert a == [None, b" the", b"the", b"\n", b"\xe2\x80", None]  # <unk> and <|end|> are special
    # <0x0A> is never written (the added "\n" token is), <0xE2> is the only id of its byte
    assert b == [None, b" the", b"the", None, b"\xe2", b"  ", b"\n", b"<td>", None]
    shared = shared_strings(a, b)
    assert shared.strings == [b" the", b"the", b"\n"] and shared.ids_b.tolist() == [1, 2, 6]
