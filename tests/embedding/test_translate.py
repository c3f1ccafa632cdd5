"""Classifier translation, fine-tuning on cached activations, and the sentiment data loaders."""

import json

import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.alignment import functional_copy
from lmscope.embedding.sentiment_data import (
    LabelledTexts, build_sentiment_set, load_csv, load_hf, load_jsonl, sentiment_words,
)
from lmscope.embedding.translate import (
    LinearProbe, feature_map, finetune_last_values, fit_probe, raw_transfer, sentence_features, translate_probe,
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


def test_features_ignore_padding():
    view = ModelView(make_tiny_model("llama"))
    tok = WordTokenizer()
    together = sentence_features(view, tok, ["ab", "abcdef"])
    alone = sentence_features(view, tok, ["ab"])
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-6)


def test_translation_to_a_rotated_copy_is_exact_and_raw_transfer_is_not():
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 1.5)
    copy, _ = functional_copy(model, seed=2)
    va, vb = ModelView(model), ModelView(copy)
    tok, data = WordTokenizer(), _toy_data()
    Xa, Xb = sentence_features(va, tok, data.texts), sentence_features(vb, tok, data.texts)
    probe = fit_probe(Xa, data.labels)
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


def test_finetune_on_cached_activations_matches_the_model():
    """At delta = 0 the cached computation gives exactly the model's features; training lowers the loss."""
    view = ModelView(make_tiny_model("llama"))
    tok, data = WordTokenizer(), _toy_data()
    ft0 = finetune_last_values(view, tok, data, steps=1, lr=0.0)
    assert ft0.delta.abs().max() == 0 and ft0.losses[0] == pytest.approx(0.6931, abs=1e-3)
    ft = finetune_last_values(view, tok, data, steps=60, lr=1e-2)
    assert ft.losses[-1] < ft.losses[0]
    assert ft.delta.shape == (view.cfg.d_ff, view.cfg.d_model) and ft.mean_update().shape == (view.cfg.d_model,)
    # apply the delta to the model: features then match the fine-tuned head's training view
    with torch.no_grad():
        view.layers[-1].ff_values.add_(ft.delta.double())
    X = sentence_features(view, tok, data.texts)
    assert ft.probe.accuracy(X, data.labels) == 1.0
    assert all(p.grad is None for p in view.model.parameters())


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
        finetune_last_values(llama, WordTokenizer(), LabelledTexts([], []))
    with pytest.raises(ValueError, match="empty"):
        fit_probe(torch.zeros(0, 3), [])


# -- data ---------------------------------------------------------------------------------------
def test_builtin_sentiment_set_is_fixed_and_split_by_word():
    train, test = build_sentiment_set()
    again, _ = build_sentiment_set()
    assert train.texts == again.texts and len(train) > 1000 and len(test) > 300
    assert set(train.labels) == set(test.labels) == {0, 1}
    words = sentiment_words()
    test_words = {w for w in words if any(t.endswith(f" {w}.") for t in test.texts[:: len(test) // 50])}
    assert test_words and not any(t.endswith(f" {w}.") for w in test_words for t in train.texts)
    assert words["happy"] == 1 and words["awful"] == 0
    sample = train.take(40)
    assert len(sample) == 40 and sum(sample.labels) == 20


def test_csv_and_jsonl_loaders(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\ngreat film,positive\nawful film,0\n")
    data = load_csv(csv_path)
    assert data.texts == ["great film", "awful film"] and data.labels == [1, 0]
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"text": "fine", "label": 1}) + "\n\n" + json.dumps({"text": "bad", "label": "neg"}) + "\n")
    assert load_jsonl(jl).labels == [1, 0]
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match="empty"):
        load_csv(tmp_path / "empty.csv")
    with pytest.raises(ValueError, match="no column"):
        load_csv(csv_path, text_column="review")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x", "label": "maybe"}) + "\n")
    with pytest.raises(ValueError, match="Unknown label 'maybe'"):
        load_jsonl(tmp_path / "bad.jsonl")


def test_hf_loader_with_a_stand_in_datasets_module(monkeypatch):
    import sys
    from types import SimpleNamespace

    class FakeDataset(dict):
        column_names = ["sentence", "label"]

    fake = SimpleNamespace(load_dataset=lambda name, split: FakeDataset(sentence=["good", "bad", "ok"], label=[1, 0, 1]))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    data = load_hf("sst2", split="train")
    assert data.texts == ["good", "bad", "ok"] and data.labels == [1, 0, 1]
    assert len(load_hf("sst2", n=2)) == 2
