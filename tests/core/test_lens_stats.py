"""Lens statistics: per-layer KL, top-1 agreement and the first leading layer against plain loops."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB
from test_tuned_lens import _busy_view, _resid_post, _tokens

from lmscope import ModelView
from lmscope.core.lens_stats import compare_lenses, first_leading_layer, kl_and_top1, lens_stats
from lmscope.core.tuned_lens import LogitLens, TunedLens


def test_first_leading_layer_and_stats_against_a_loop():
    top1 = torch.tensor([[5, 1, 5], [5, 2, 7], [1, 2, 5], [1, 2, 5]])  # (4 layers, 3 positions)
    final = torch.tensor([1, 2, 5])
    assert first_leading_layer(top1, final).tolist() == [2, 1, 2]
    view = _busy_view("gpt2")
    tokens = _tokens(3, seq_len=8)
    stats = lens_stats(view, LogitLens(view), tokens, batch=2)
    logits, resids = _resid_post(view, tokens)
    p = logits.double().softmax(-1)
    for l, resid in enumerate(resids):
        q = view.unembed(resid).double().log_softmax(-1)
        torch.testing.assert_close(stats.kl[l], (p * (p.log() - q)).sum(-1).mean(), rtol=1e-4, atol=1e-6)
        agree = (q.argmax(-1) == logits.argmax(-1)).double().mean()
        torch.testing.assert_close(stats.top1_agreement[l], agree)
    entropy = -(p * p.log()).sum(-1).mean()
    assert stats.uniform_kl == pytest.approx((torch.log(torch.tensor(float(VOCAB))) - entropy).item(), rel=1e-4)
    assert stats.first_leading.max() <= view.cfg.n_layers - 1


def test_kl_and_top1_against_log_softmax():
    """The KL without the lens's log-softmax equals the plain one, also with logits far below the top
    (raised to EXP_FLOOR before exp) and ties at the top (the first id wins, as in argmax)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 400, generator=gen) * torch.tensor([1.0, 30.0, 300.0])[:, None, None]
    logits[0, 0, [7, 9]] = logits[0, 0].max() + 1.0  # a tie at the top
    target = (torch.randn(3, 5, 400, generator=gen) * 4).log_softmax(-1)
    p = target.exp()
    ref = (p.double() * (target.double() - logits.double().log_softmax(-1))).sum(-1)
    kl, top1 = kl_and_top1(p, (p * target).sum(-1), logits.clone())
    torch.testing.assert_close(kl.double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(top1, logits.log_softmax(-1).argmax(-1)) and top1[0, 0] == 7


@pytest.mark.slow
def test_compare_lenses_on_smollm_against_a_plain_computation(smollm):
    """Two lenses scored on one forward pass per batch: the per-layer log-softmax recipe (float64) on
    SmolLM2, and the one-lens ``lens_stats`` gives the same numbers."""
    view = ModelView(smollm[0])
    tokens = torch.randint(100, 10000, (3, 8), generator=torch.Generator().manual_seed(0))
    tuned = TunedLens(view)
    with torch.no_grad():  # a translator that moves the readings (zeros would be the logit lens)
        tuned.weight.copy_(torch.randn(tuned.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
        tuned.weight[-1].zero_()
    lenses = {"logit": LogitLens(view), "tuned": tuned}
    stats = compare_lenses(view, lenses, tokens, batch=2)
    logits, resids = _resid_post(view, tokens)
    p = logits.double().log_softmax(-1).exp()
    final = logits.argmax(-1).flatten()
    for name, lens in lenses.items():
        top1 = []
        for l, resid in enumerate(resids):
            with torch.no_grad():
                q = lens.read(resid, l).double().log_softmax(-1)
            torch.testing.assert_close(stats[name].kl[l], (p * (p.log() - q)).sum(-1).mean(), rtol=1e-4, atol=2e-5)
            top1.append(q.argmax(-1).flatten())
        top1 = torch.stack(top1)
        assert torch.equal(stats[name].top1_agreement, (top1 == final).double().mean(1))
        assert torch.equal(stats[name].first_leading, first_leading_layer(top1, final))
        one = lens_stats(view, lens, tokens, batch=2)
        assert torch.equal(one.kl, stats[name].kl) and torch.equal(one.first_leading, stats[name].first_leading)
        assert one.uniform_kl == stats[name].uniform_kl
