"""lmscope.topk.ff_baseline and ScratchSpec(ff="relu"): ReLU vs gated FF coefficients on models trained the same way."""

import hashlib
import json
from dataclasses import asdict

import pytest
import torch

from lmscope import ModelView, hook_name
from lmscope.embedding.scratch import CompactVocab, ScratchCorpus, ScratchSpec, scratch_model, train_scratch_lm
from lmscope.topk import report
from lmscope.topk.ff_baseline import ff_baseline, fraction_ks

TINY = dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=12, batch=4, steps=8, lr=1e-2)


def _corpus(V=40) -> ScratchCorpus:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (400,), generator=g)
    ids[:V] = torch.arange(V)  # every id appears
    return ScratchCorpus(CompactVocab(torch.arange(V)), {"a": ids[:300]}, {"a": ids[300:]}, key=f"ffb{V}")


def test_fraction_ks_round_clip_and_drop_duplicates():
    assert fraction_ks(3072, [64 / 3072, 1 / 12]) == [64, 256]
    assert fraction_ks(128, [1 / 48, 1 / 6, 1.0]) == [3, 21, 128]
    assert fraction_ks(10, [0.01, 0.02, 0.5]) == [1, 5]
    with pytest.raises(ValueError, match="fractions must be in"):
        fraction_ks(10, [0])


def test_relu_scratch_training_is_seeded_repeatable_and_leaves_the_default_key_alone():
    corpus = _corpus()
    spec = ScratchSpec(**TINY, ff="relu")
    m1, l1 = train_scratch_lm(corpus, spec, seed=3, cache=False)
    m2, l2 = train_scratch_lm(corpus, spec, seed=3, cache=False)
    _, l3 = train_scratch_lm(corpus, spec, seed=4, cache=False)
    assert l1 == l2 and l1 != l3
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(p, q), n
    assert not ModelView(m1).cfg.gated  # the ungated (GPT-2 block) FF
    default = ScratchSpec(**TINY)
    old = {k: v for k, v in asdict(default).items() if k != "ff"}  # the key before the ff option existed
    old_key = hashlib.sha256(json.dumps({**old, "seed": 3, "corpus": "c"}, sort_keys=True).encode()).hexdigest()[:16]
    assert default.key(3, "c") == old_key and spec.key(3, "c") != old_key
    with pytest.raises(ValueError, match="ff must be 'swiglu' or 'relu'"):
        scratch_model(ScratchSpec(**TINY, ff="gelu"), 40, seed=0)


def test_baseline_counts_the_zeros_of_the_relu_and_is_exact_at_full_k():
    corpus = _corpus()
    models = {"relu": scratch_model(ScratchSpec(**TINY, ff="relu"), 40, seed=1),
              "swiglu": scratch_model(ScratchSpec(**TINY), 40, seed=1)}
    blocks, _ = corpus.blocks("test", TINY["seq_len"])
    rows = {r["model"]: r for r in ff_baseline(models, blocks, [0.1, 1.0], stats_blocks=2)}
    relu, gated = rows["relu"], rows["swiglu"]
    assert relu["ks"] == gated["ks"] == [3, 32] and not relu["gated"] and gated["gated"]
    view = ModelView(models["relu"])  # the share of exact zeros, counted directly from the coefficients
    names = [hook_name(layer, "ff_coeffs") for layer in range(view.cfg.n_layers)]
    with torch.no_grad(), view.capture(names) as cache:
        view.model(input_ids=blocks[:2])
    assert relu["zero"] == pytest.approx(sum(float((cache[n] == 0).float().mean()) for n in names) / len(names))
    assert 0.2 < relu["zero"] < 0.8 and gated["zero"] == 0  # untrained ReLU: about half the units off
    for r in (relu, gated):
        assert r["ppl_change"][32] == pytest.approx(0, abs=1e-6) and r["out_error"][32] == pytest.approx(0, abs=1e-6)
        assert r["l1_kept"][3] < r["l1_kept"][32] == pytest.approx(1)
    reading = report.ff_baseline_reading(list(rows.values()))
    assert f"{relu['zero']:.1%} exactly zero" in reading and report.pct(relu["ppl_change"][3]) in reading
    table = report.ff_fraction_table(list(rows.values()))[1]
    assert ["relu", 3, "9.4%", f"{relu['l1_kept'][3]:.3f}", f"{relu['out_error'][3]:.3f}",
            report.pct(relu["ppl_change"][3]), "-"] in table
