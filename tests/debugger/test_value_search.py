"""Keyword search over the projection index."""

import pytest
import torch
from debugger_helpers import WordTokenizer

from lmscope.debugger.annotations import Annotations
from lmscope.embedding.index import ProjectionIndex
from lmscope.debugger.search import ValueSearch, normalize_word

VOCAB = ["<s>", " Paris", "Paris", "PARIS", "\u2581paris", " dog", "Dog", " cat", "\n", " the", "par", "is"]


def _index(rows):
    """A table of 2 layers x 2 units, k=4, from token-id rows."""
    ids = torch.tensor(rows).reshape(2, 2, 4)
    scores = torch.linspace(4, 1, 4).expand(2, 2, 4).clone()
    return ProjectionIndex(ids=ids, scores=scores)


ROWS = [
    [1, 9, 5, 7],  # L0D0: ' Paris' at rank 0, ' dog' 2, ' cat' 3
    [9, 10, 11, 2],  # L0D1: 'Paris' at rank 3
    [5, 6, 7, 0],  # L1D0: dogs and cat
    [3, 4, 8, 9],  # L1D1: 'PARIS' rank 0, '▁paris' rank 1
]


def test_normalize_word_drops_markers_and_case():
    assert normalize_word(" Paris") == normalize_word("\u0120Paris") == normalize_word("\u2581PARIS") == "paris"
    assert normalize_word("\n") == ""


def test_search_matches_every_spelling_and_ranks_brute_force():
    search = ValueSearch(_index(ROWS), WordTokenizer(VOCAB))
    assert sorted(search.token_ids("paris")) == [1, 2, 3, 4]
    hits = search.search("Paris")
    # brute force: best matching rank per value, weight 1 - rank / k
    expect = {}
    for v, row in enumerate(ROWS):
        ranks = [r for r, t in enumerate(row) if t in (1, 2, 3, 4)]
        if ranks:
            expect[f"L{v // 2}D{v % 2}"] = 1 - min(ranks) / 4
    assert {h.name: h.score for h in hits} == pytest.approx(expect)
    assert [h.name for h in hits] == sorted(expect, key=lambda n: -expect[n])
    top = hits[0]
    assert top.matched[0] == ("\u2423Paris", 0) or top.matched[0][1] == 0


def test_search_with_several_keywords_prefers_values_matching_more():
    search = ValueSearch(_index(ROWS), WordTokenizer(VOCAB))
    hits = search.search("dog, cat")
    assert hits[0].name in ("L0D0", "L1D0") and hits[0].n_keywords == 2
    assert {h.name for h in hits} == {"L0D0", "L1D0"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_bad_input_and_no_hits():
    search = ValueSearch(_index(ROWS), WordTokenizer(VOCAB))
    with pytest.raises(ValueError, match="empty"):
        search.search("  , ")
    with pytest.raises(ValueError, match="No token of this vocabulary"):
        search.search("zebra")
    rows = [r[:] for r in ROWS]
    rows[0][1] = rows[1][0] = rows[3][3] = 0  # no ' the' anywhere
    assert ValueSearch(_index(rows), WordTokenizer(VOCAB)).search("the") == []
    with pytest.raises(ValueError, match="max_rank"):
        ValueSearch(_index(ROWS), WordTokenizer(VOCAB), max_rank=5)


def test_search_limits_ranks_and_shows_names(tmp_path):
    notes = Annotations("m", tmp_path / "a.json", 2, 2)
    notes.set("L1D1", "capital")
    search = ValueSearch(_index(ROWS), WordTokenizer(VOCAB), annotations=notes, max_rank=2)
    hits = search.search("paris")
    assert [h.name for h in hits] == ["L0D0", "L1D1"]  # L0D1's 'Paris' is at rank 3, past max_rank
    assert hits[1].annotation == "capital" and hits[1].n_keywords == 1
    assert hits[1].matched == [("PARIS", 0), ("\u2581paris", 1)]
    assert hits[0].score == pytest.approx(1.0) and hits[1].score == pytest.approx(1.0)
    assert len(search.search("paris", limit=1)) == 1
