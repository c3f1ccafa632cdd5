"""Lens statistics: per-layer KL, top-1 agreement and the first leading layer against plain loops."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB
from test_tuned_lens import _busy_view, _resid_post, _tokens

from lmscope.core.lens_stats import first_leading_layer, lens_stats
from lmscope.core.tuned_lens import LogitLens


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
