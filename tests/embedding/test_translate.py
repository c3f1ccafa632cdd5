"""Classifier translation: features, the probe, exact translation to a rotated copy, the accuracy table."""

import numpy as np
import pytest
import torch
import transformers as tf

from lmscope import ModelView
from lmscope.embedding.functional_copy import functional_copy
from lmscope.embedding.sentiment_data import LabelledTexts
from lmscope.embedding.translate import (
    LinearProbe, feature_map, fit_probe, mean_over_positions, raw_transfer, sentence_features, transfer_accuracies,
    translate_probe,
)

from conftest import make_tiny_model


class WordTokenizer:
    """Each character is a token (id = code % 90 + 3); pads with 0. Enough for the plumbing."""

    pad_token_id, eos_token, pad_token, padding_side = 0, "<eos>", "<pad>", "right"

    def __call__(self, texts, return_tensors="pt", padding=True):
        from types import SimpleNamespace

        seqs = [[ord(c) % 90 + 3 for c in t] for t in texts]
        n = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (n - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
        return SimpleNamespace(input_ids=ids, attention_mask=mask)


def _toy_data():
    texts = ["good fun", "great joy", "so good", "nice day", "bad end", "awful mess", "so bad", "sad day"] * 3
    return LabelledTexts(texts, [1, 1, 1, 1, 0, 0, 0, 0] * 3)


def _probe_and_rotated_copy():
    """A tiny llama (final-norm gains not 1) and its rotated copy, the toy data's features on both,
    and a probe fitted on the first: (view_a, view_b, tokenizer, data, X_a, X_b, probe)."""
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 1.5)
    copy, _ = functional_copy(ModelView(model), seed=2)
    va, vb = ModelView(model), ModelView(copy)
    tok, data = WordTokenizer(), _toy_data()
    Xa, Xb = sentence_features(va, tok, data.texts), sentence_features(vb, tok, data.texts)
    return va, vb, tok, data, Xa, Xb, fit_probe(Xa, data.labels)


def test_features_ignore_padding():
    view = ModelView(make_tiny_model("llama"))
    tok = WordTokenizer()
    together = sentence_features(view, tok, ["ab", "abcdef"])
    alone = sentence_features(view, tok, ["ab"])
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-6)


def test_translation_to_a_rotated_copy_is_exact_and_raw_transfer_is_not():
    va, vb, tok, data, Xa, Xb, probe = _probe_and_rotated_copy()
    translated = translate_probe(probe, va, vb, "pinv")
    torch.testing.assert_close(translated.scores(Xb), probe.scores(Xa), rtol=1e-3, atol=1e-3)
    assert translated.accuracy(Xb, data.labels) == probe.accuracy(Xa, data.labels)
    assert not torch.allclose(raw_transfer(probe, vb).scores(Xb), probe.scores(Xa), atol=1e-2)
    assert feature_map(va, vb, "transpose").shape == (32, 32)


def test_fit_probe_separates_separable_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    assert fit_probe(X, y).accuracy(X, y) > 0.95


def test_bad_input():
    gpt2, llama = ModelView(make_tiny_model("gpt2")), ModelView(make_tiny_model("llama"))
    big = make_tiny_model("gpt2")
    big.resize_token_embeddings(120)
    probe = LinearProbe(torch.zeros(32))
    with pytest.raises(ValueError, match="do not share a vocabulary"):
        translate_probe(probe, gpt2, ModelView(big))
    with pytest.raises(ValueError, match="Unknown method"):
        translate_probe(probe, gpt2, llama, "inverse")
    with pytest.raises(ValueError, match="empty"):
        sentence_features(llama, WordTokenizer(), [])
    with pytest.raises(ValueError, match="empty"):
        fit_probe(torch.zeros(0, 3), [])
    with pytest.raises(ValueError, match="No test labels"):
        transfer_accuracies(probe, llama, llama, torch.zeros(0, 32), torch.zeros(0, 32), [])


def test_mean_over_positions_ignores_padding():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_over_positions(x, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_transfer_accuracies_table():
    va, vb, tok, data, Xa, Xb, probe = _probe_and_rotated_copy()
    acc = transfer_accuracies(probe, va, vb, Xa, Xb, data.labels)
    assert list(acc) == ["chance (majority class)", "A, trained", "B, translated (E^+)", "B, translated (E^T)",
                         "B, raw transfer"]
    assert acc["chance (majority class)"] == 0.5
    assert acc["A, trained"] == probe.accuracy(Xa, data.labels)
    assert acc["B, translated (E^+)"] == acc["A, trained"]  # exact for a rotated copy
    assert acc["B, translated (E^T)"] == translate_probe(probe, va, vb, "transpose").accuracy(Xb, data.labels)
    assert acc["B, raw transfer"] == raw_transfer(probe, vb).accuracy(Xb, data.labels)
    E_a_pinv = torch.linalg.pinv(va.W_U.detach().double())  # a pseudo-inverse computed once is reused as it is
    assert torch.equal(feature_map(vb, va, "pinv", E_a_pinv), feature_map(vb, va, "pinv"))
    assert transfer_accuracies(probe, va, vb, Xa, Xb, data.labels, E_a_pinv=E_a_pinv) == acc
    # a model B of another width (same vocabulary) has no raw transfer, but a translation
    torch.manual_seed(0)
    narrow = ModelView(tf.AutoModelForCausalLM.from_config(tf.LlamaConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=64, vocab_size=97)).double().eval())
    Xn = sentence_features(narrow, tok, data.texts)
    other = transfer_accuracies(probe, va, narrow, Xa, Xn, data.labels)
    assert np.isnan(other["B, raw transfer"]) and 0 <= other["B, translated (E^+)"] <= 1
