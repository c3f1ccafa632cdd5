"""The built-in sentiment set and the loaders for other data."""

import json

import pytest

from lmscope.embedding.sentiment_data import build_sentiment_set, load_csv, load_hf, load_jsonl, sentiment_words


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
