"""Keyword search over the projection index, spherical k-means, and annotations."""

import pytest
import torch

from lmscope.debugger.annotations import Annotations
from lmscope.embedding.index import ProjectionIndex
from lmscope.debugger.search import ValueSearch, normalize_word, spherical_kmeans

VOCAB = ["<s>", " Paris", "Paris", "PARIS", "\u2581paris", " dog", "Dog", " cat", "\n", " the", "par", "is"]


class FakeTokenizer:
    """Decodes each id to the strings above (byte-level and sentencepiece-style spellings)."""

    def __len__(self):
        return len(VOCAB)

    def batch_decode(self, seqs):
        return ["".join(VOCAB[i] for i in s) for s in seqs]


def _index(rows):
    """An index of 2 layers x 2 units, k=4, from token-id rows."""
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
    search = ValueSearch(_index(ROWS), FakeTokenizer())
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
    search = ValueSearch(_index(ROWS), FakeTokenizer())
    hits = search.search("dog, cat")
    assert hits[0].name in ("L0D0", "L1D0") and hits[0].n_keywords == 2
    assert {h.name for h in hits} == {"L0D0", "L1D0"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_bad_input_and_no_hits():
    search = ValueSearch(_index(ROWS), FakeTokenizer())
    with pytest.raises(ValueError, match="empty"):
        search.search("  , ")
    with pytest.raises(ValueError, match="No token of this vocabulary"):
        search.search("zebra")
    rows = [r[:] for r in ROWS]
    rows[0][1] = rows[1][0] = rows[3][3] = 0  # no ' the' anywhere
    assert ValueSearch(_index(rows), FakeTokenizer()).search("the") == []


def test_spherical_kmeans_recovers_separated_groups():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    truth = torch.arange(5).repeat_interleave(40)
    X = centers[truth] * torch.rand(200, 1, generator=g).add(0.5) + 0.05 * torch.randn(200, 16, generator=g)
    result = spherical_kmeans(X, 5, seed=1)
    # each true group lands in one cluster, and different groups in different clusters
    mapping = {int(t): set(result.labels[truth == t].tolist()) for t in range(5)}
    assert all(len(s) == 1 for s in mapping.values())
    assert len({next(iter(s)) for s in mapping.values()}) == 5
    assert result.mean_cosine > 0.9
    with pytest.raises(ValueError, match="n_clusters"):
        spherical_kmeans(X, 0)
    with pytest.raises(ValueError, match="non-empty"):
        spherical_kmeans(torch.zeros(0, 3), 1)


def test_annotations_survive_restart(tmp_path):
    path = tmp_path / "annotations.json"
    notes = Annotations("model-a", path, n_layers=30, d_ff=1536)
    notes.set("L12D34", "sports")
    assert notes.add(" l3d7 =  negation ") == ("L3D7", "negation")
    Annotations("model-b", path).set("L0D0", "other model")
    again = Annotations("model-a", path, n_layers=30, d_ff=1536)  # a fresh process reads the file
    assert again.get("L12D34") == "sports" and again.get("L3D7") == "negation"
    assert again.items() == [("L3D7", "negation"), ("L12D34", "sports")]
    assert again.search("SPORT") == ["L12D34"]
    assert Annotations("model-b", path).get("L0D0") == "other model"
    again.remove("L12D34")
    assert Annotations("model-a", path).get("L12D34") is None
    with pytest.raises(IndexError, match="layer 99"):
        again.set("L99D1", "x")
    with pytest.raises(ValueError, match="L<layer>D<unit>"):
        again.set("sports", "x")
    with pytest.raises(ValueError, match="'L12D34 = label'"):
        again.add("L1D1 sports")
    assert again.get("L99D1") is None
