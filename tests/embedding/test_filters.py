"""Token filters, the chapter's reading mask and readable-unit ranking, on a tiny model with a stand-in tokenizer."""

import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.filters import (
    ReadingMask, coherent_units, hub_tokens, large_norm_tokens, reading_mask, token_mask,
)
from lmscope.embedding.projection import Projector

from conftest import make_tiny_model

WORDS = ["cat", "dog", "sun", "tree", "river", "stone"]


class PieceTokenizer:
    """97 tokens: ids 0-2 special; id i % 4 == 0 a digit piece, i % 4 == 1 a word-start word ('Ġcat'),
    the rest plain words ('dog'). Enough for the filters."""

    all_special_ids = [0, 1, 2]

    def __len__(self):
        return 97

    def piece(self, i: int) -> str:
        if i < 3:
            return ["<pad>", "<s>", "</s>"][i]
        if i % 4 == 0:
            return f"{i}"
        word = WORDS[i % len(WORDS)]
        return f"Ġ{word}" if i % 4 == 1 else word

    def convert_ids_to_tokens(self, ids):
        return [self.piece(i) for i in ids]

    def decode(self, ids):
        return "".join(self.piece(int(i)).replace("Ġ", " ") for i in ids)


@pytest.fixture
def view():
    return ModelView(make_tiny_model("llama"))


def test_token_filters_and_coherent_units(view):
    proj = Projector(view)
    big = large_norm_tokens(view, 0.9)
    norms = view.W_U.detach().norm(dim=0)
    assert big.sum() == 10 and norms[big].min() > norms[~big].max()
    hubs = hub_tokens(proj, layers=[0, 1, 2], k=5, factor=2.0)
    assert hubs.dtype == torch.bool and hubs.shape == (view.cfg.d_vocab,)
    with torch.no_grad():  # make token 7 the top token of every value: it must become a hub
        view.model.lm_head.weight[7] = 50 * view.layers[0].ff_values.mean(0)
    assert hub_tokens(Projector(view), layers=[0], k=5, factor=2.0)[7]
    units = coherent_units(proj, 1, k=4, n=3)
    assert len(units) == 3 and units[0][1] >= units[-1][1]
    with pytest.raises(ValueError, match="quantile"):
        large_norm_tokens(view, 1.5)


def test_hub_count_by_hand(view):
    """A token is a hub when it is in more top-k lists than factor * (its uniform share)."""
    proj = Projector(view)
    k, factor = 5, 3.0
    counts = torch.zeros(view.cfg.d_vocab)
    for layer in (0, 2):
        ids = proj.project(view.layers[layer].ff_values).topk(k, dim=-1).indices
        counts += torch.bincount(ids.flatten(), minlength=view.cfg.d_vocab)
    expected = counts > factor * (2 * view.cfg.d_ff) * k / view.cfg.d_vocab
    assert torch.equal(hub_tokens(proj, layers=[0, 2], k=k, factor=factor), expected)


def test_token_mask():
    tok = PieceTokenizer()
    words = token_mask(tok, 97, alphabetic=True)
    assert not words[:3].any(), "special tokens dropped"
    assert not words[4] and not words[8], "digit pieces are not words"
    assert words[5] and words[6], "words with and without the word-start marker are kept"
    assert token_mask(tok, 97).sum() == 94  # only the specials go
    longer = token_mask(tok, 100, alphabetic=True)
    assert longer.shape == (100,) and not longer[97:].any(), "rows without a token are dropped"


def test_reading_mask_drops_large_norm_hub_and_non_word_tokens(view):
    tok = PieceTokenizer()
    with torch.no_grad():  # a token (a word) that tops every value: large-norm and a hub
        view.model.lm_head.weight[9] = 50 * view.layers[0].ff_values.mean(0)
    proj = Projector(view, tok)
    dropped = reading_mask(proj, k=5, quantile=0.9, hub_factor=2.0, hub_layers=[0, 1, 2])
    assert isinstance(dropped, ReadingMask)
    large = large_norm_tokens(view, 0.9)
    assert torch.equal(dropped.large_norm, large)
    assert torch.equal(dropped.hubs, hub_tokens(proj, [0, 1, 2], k=5, factor=2.0) & ~large)
    assert torch.equal(dropped.words, token_mask(tok, 97, alphabetic=True))
    assert torch.equal(dropped.keep, dropped.words & ~dropped.hubs & ~dropped.large_norm)
    assert not (dropped.hubs & dropped.large_norm).any(), "a large-norm token is counted once"
    assert dropped.large_norm[9] and not dropped.keep[9]
    assert dropped.keep.any() and dropped.hubs.any()
    # the mask leaves those tokens out of every reading
    masked = Projector(view, tok, mask=dropped.keep)
    assert all(dropped.keep[i] for i in masked.read(1, "ff_values", 0, k=5).ids)
    # examples are drawn from the dropped set (at most as many as it holds)
    torch.manual_seed(0)
    shown = dropped.examples(tok, "large_norm", 4)
    assert len(shown) == 4 and set(shown) <= {tok.decode([i]).replace(" ", "\u2423") for i in large.nonzero()[:, 0]}
    assert len(dropped.examples(tok, "hubs", 1000)) == int(dropped.hubs.sum())
    with pytest.raises(ValueError, match="which"):
        dropped.examples(tok, "words")
    with pytest.raises(ValueError, match="tokenizer"):
        reading_mask(Projector(view))


def test_readings_from_the_projection_index_equal_the_projections(view):
    """hub_tokens and coherent_units read a ProjectionIndex instead of projecting again: same result,
    including the units whose indexed top tokens hold fewer than k allowed ones (projected again)."""
    from lmscope.embedding.index import ProjectionIndex

    index = ProjectionIndex.compute(view, k=8)
    mask = torch.rand(view.cfg.d_vocab, generator=torch.Generator().manual_seed(0)) < 0.5
    proj = Projector(view, mask=mask)
    for layers, k in (([0, 2], 5), ([1], 8)):
        assert torch.equal(hub_tokens(proj, layers, k=k, factor=2.0, index=index),
                           hub_tokens(proj, layers, k=k, factor=2.0))
    allowed = mask[index.ids[1]].sum(1)  # (n_units,) allowed tokens among each unit's indexed top 8
    assert (allowed < 4).any() and (allowed >= 4).any(), "both paths are exercised"
    for layer in range(view.cfg.n_layers):
        fast = coherent_units(proj, layer, k=4, n=view.cfg.d_ff, index=index, chunk_size=16)
        slow = coherent_units(proj, layer, k=4, n=view.cfg.d_ff, chunk_size=16)
        assert [u for u, _ in fast] == [u for u, _ in slow]
        assert [c for _, c in fast] == pytest.approx([c for _, c in slow], abs=1e-6)
    # an index that does not hold the reading is not used; one of another model is refused
    assert coherent_units(proj, 1, k=9, n=3, index=index) == coherent_units(proj, 1, k=9, n=3)
    keys = ProjectionIndex.compute(view, k=8, group="ff_keys")
    assert torch.equal(hub_tokens(proj, [0], k=5, index=keys), hub_tokens(proj, [0], k=5))
    other = ProjectionIndex(ids=index.ids[:1], scores=index.scores[:1])
    with pytest.raises(ValueError, match="not of this model"):
        hub_tokens(proj, [0], k=5, index=other)


@pytest.mark.slow
def test_coherent_units_on_smollm_against_a_plain_computation(smollm):
    """SmolLM2, the chapter's kind of mask: the masked top-k of every value read in full, all of W_E scaled to
    unit rows, coherence as the mean off-diagonal cosine; with and without an index (short units included)."""
    from lmscope.embedding.index import ProjectionIndex

    model, tok = smollm
    view = ModelView(model)
    mask = token_mask(tok, view.cfg.d_vocab, alphabetic=True) & ~large_norm_tokens(view)
    proj, layer, k = Projector(view, tok, mask=mask), 20, 10
    with torch.no_grad():
        readings = proj.project(view.layers[layer].ff_values_applied)  # (d_ff, d_vocab)
        ids = readings.masked_fill(~mask, float("-inf")).topk(k).indices  # (d_ff, k)
        W_E = view.W_E.detach().float()
        e = (W_E / W_E.norm(dim=1, keepdim=True))[ids]  # (d_ff, k, d_model)
        coherence = ((e @ e.transpose(1, 2)).sum((1, 2)) - k) / (k * (k - 1))
        indexed = readings.topk(20).indices  # this layer's slice of a top-20 index
    expected = coherence.topk(12)
    ids_all = torch.zeros(view.cfg.n_layers, view.cfg.d_ff, 20, dtype=torch.long)
    ids_all[layer] = indexed
    index = ProjectionIndex(ids=ids_all, scores=torch.zeros(ids_all.shape))
    allowed = mask[indexed].sum(1)
    assert (allowed < k).any() and (allowed >= k).any(), "both paths are exercised"
    for got in (coherent_units(proj, layer, k=k, n=12), coherent_units(proj, layer, k=k, n=12, index=index)):
        assert [u for u, _ in got] == expected.indices.tolist()
        assert [c for _, c in got] == pytest.approx(expected.values.tolist(), abs=1e-6)
