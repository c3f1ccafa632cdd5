"""Scratch models: seeded, repeatable training; alignment of two trained models; stitching."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmscope import ModelView
from lmscope.embedding.alignment import layer_similarity, match, match_units, matched_correlation, unit_similarity
from lmscope.embedding.scratch import (CompactVocab, ScratchCorpus, ScratchSpec, heldout_loss, scratch_model,
                                       train_scratch_lm)
from lmscope.embedding.stitch import stitch_map, stitch_table

TINY = ScratchSpec(d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=12, batch=4, steps=8, lr=1e-2)


def _corpus(V=40, seed=0) -> ScratchCorpus:
    """Two 'plays' of a repeating pattern with noise, over V model ids (every id appears)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(V).repeat(6)
    plays = {"a": base.clone(), "b": base.flip(0)}
    for ids in plays.values():
        flip = torch.rand(len(ids), generator=g) < 0.1
        ids[flip] = torch.randint(0, V, (int(flip.sum()),), generator=g)
    vocab = CompactVocab(torch.arange(1000, 1000 + V))
    return ScratchCorpus(vocab, {p: ids[:200] for p, ids in plays.items()},
                         {p: ids[200:] for p, ids in plays.items()}, key=f"test{V}-{seed}")


def test_compact_vocab_round_trip_and_errors():
    vocab = CompactVocab(torch.tensor([3, 10, 11, 500]))
    assert vocab.encode(torch.tensor([[10, 3], [500, 11]])).tolist() == [[1, 0], [3, 2]]
    with pytest.raises(ValueError, match="not in the scratch model's vocabulary"):
        vocab.encode(torch.tensor([4]))


def test_training_is_seeded_and_repeatable():
    corpus = _corpus()
    m1, l1 = train_scratch_lm(corpus, TINY, seed=3, cache=False)
    m2, l2 = train_scratch_lm(corpus, TINY, seed=3, cache=False)
    m3, l3 = train_scratch_lm(corpus, TINY, seed=4, cache=False)
    assert l1 == l2 and l1 != l3
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(m1.model.layers[0].mlp.down_proj.weight, m3.model.layers[0].mlp.down_proj.weight)
    untrained = scratch_model(TINY, len(corpus.vocab), seed=3)
    blocks, labels = corpus.blocks("test", TINY.seq_len)
    assert labels.tolist() == sorted(labels.tolist()) and set(labels.tolist()) == {0, 1}
    assert heldout_loss(m1, blocks) < heldout_loss(untrained, blocks)  # it learned something


def test_checkpoints_are_cached_as_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    corpus = _corpus()
    model, losses = train_scratch_lm(corpus, TINY, seed=5)
    files = list(tmp_path.glob("scratch_lm/*/model.safetensors"))
    assert len(files) == 1 and load_file(files[0])  # plain tensors, no pickle
    again, losses_again = train_scratch_lm(corpus, TINY, seed=5)
    assert losses_again == losses
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


def _permute_units(model, perm: torch.Tensor) -> None:
    """Reorder the FF units of every layer of a Llama model in place (same function)."""
    with torch.no_grad():
        for block in model.model.layers:
            block.mlp.gate_proj.weight.copy_(block.mlp.gate_proj.weight[perm])
            block.mlp.up_proj.weight.copy_(block.mlp.up_proj.weight[perm])
            block.mlp.down_proj.weight.copy_(block.mlp.down_proj.weight[:, perm])


def test_alignment_recovers_a_known_permutation_and_not_unrelated_models():
    corpus = _corpus()
    a, _ = train_scratch_lm(corpus, TINY, seed=1, cache=False)
    b, _ = train_scratch_lm(corpus, TINY, seed=1, cache=False)  # same seed: the same model...
    perm = torch.randperm(TINY.d_ff, generator=torch.Generator().manual_seed(0))
    _permute_units(b, perm)  # ...with its units reordered
    va, vb = ModelView(a), ModelView(b)
    ids = corpus.blocks("test", TINY.seq_len)[0]
    torch.testing.assert_close(a(ids).logits, b(ids).logits, rtol=1e-4, atol=1e-4)
    seen = corpus.seen_in_training()
    inverse = torch.argsort(perm).numpy()
    for space in ("embedding", "raw"):
        for layer in range(TINY.n_layers):
            assert np.array_equal(match_units(va, vb, layer, layer, space=space, tokens=seen), inverse)
    S = layer_similarity(va, vb, "ff_values", stat="mean_abs", n_sample=None, tokens=seen)
    assert np.array_equal(match(S), np.arange(TINY.n_layers))
    # two unrelated random models: matching is at chance, the matched correlations are weak
    r1, r2 = ModelView(scratch_model(TINY, 40, seed=11)), ModelView(scratch_model(TINY, 40, seed=12))
    acc = np.mean(match_units(r1, r2, 0, 0) == np.arange(TINY.d_ff))
    assert acc < 0.2  # chance is 1/32
    assert matched_correlation(unit_similarity(r1, r2, 0, 0)) < 0.6 < matched_correlation(
        unit_similarity(va, vb, 0, 0, tokens=seen))


def test_stitching_a_model_into_itself_is_exact():
    corpus = _corpus()
    a, _ = train_scratch_lm(corpus, TINY, seed=2, cache=False)
    va = ModelView(a)
    train, test = corpus.blocks("train", TINY.seq_len), corpus.blocks("test", TINY.seq_len)
    rows = stitch_table(va, va, train, test, layers=[0, 1], maps=("pinv", "raw"))
    own = rows[1]
    assert rows[0]["map"].startswith("chance") and own["map"] == "A alone"
    for row in rows[3:]:
        assert row["next-token accuracy"] == pytest.approx(own["next-token accuracy"])
        assert row["classifier accuracy"] == pytest.approx(own["classifier accuracy"])
    torch.testing.assert_close(stitch_map(va, va, "pinv"), torch.eye(TINY.d_model), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="Unknown map"):
        stitch_map(va, va, "lstsq")


@pytest.mark.slow
def test_corpus_from_shakespeare_with_the_smollm_tokenizer(smollm):
    _, tok = smollm
    corpus = ScratchCorpus.build(tok, plays=("macbeth",), test_fraction=0.1)
    n_train, n_test = len(corpus.train["macbeth"]), len(corpus.test["macbeth"])
    assert abs(n_test / (n_train + n_test) - 0.1) < 0.01
    text = tok.decode(corpus.vocab.ids[corpus.train["macbeth"][:50]].tolist())
    assert "Macbeth" in tok.decode(corpus.vocab.ids[corpus.train["macbeth"]].tolist())[:5000] and len(text) > 50
    assert corpus.seen_in_training().float().mean() > 0.9  # nearly every known token occurs in training
    with pytest.raises(ValueError, match="test_fraction"):
        ScratchCorpus.build(tok, plays=("macbeth",), test_fraction=1.5)


def test_two_seed_alignment_of_a_permuted_copy_and_its_chance_level():
    from lmscope.embedding.two_seeds import two_seed_alignment

    corpus = _corpus()
    a, _ = train_scratch_lm(corpus, TINY, seed=1, cache=False)
    b, _ = train_scratch_lm(corpus, TINY, seed=1, cache=False)
    _permute_units(b, torch.randperm(TINY.d_ff, generator=torch.Generator().manual_seed(1)))
    res = two_seed_alignment(ModelView(a), ModelView(b), corpus.seen_in_training(), groups=("ff_values", "W_Q"))
    assert res.layer_acc["ff_values", "embedding"] == 1.0 and res.layer_acc["W_Q", "raw"] == 1.0
    rows = res.unit_rows()
    assert [r[0] for r in rows] == [0, 1, "chance"]
    chance = rows[-1]
    assert all(0 < c < 0.9 for c in chance[1:])
    for layer_row in rows[:-1]:  # the same units: matched |corr| 1 in both spaces; heads above chance
        assert layer_row[1:3] == pytest.approx((1.0, 1.0), abs=1e-6)
        assert layer_row[3] > chance[3] and layer_row[4] > chance[4]


def test_relu_scratch_model_takes_the_causal_lm_loss_without_a_warning():
    """GPT-2's class name names no loss in transformers, which then warns into the book's page; the loss is set."""
    import logging
    from dataclasses import replace

    import transformers

    model = scratch_model(replace(TINY, ff="relu"), 40, seed=0)
    x = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    logger = transformers.utils.logging.get_logger("transformers.modeling_utils")
    logger.warning_once.cache_clear()  # a warning given earlier in this process is not given again
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        loss = model(input_ids=x, labels=x).loss
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "loss_type" in r], records
    logits = model(input_ids=x).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 40), x[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
