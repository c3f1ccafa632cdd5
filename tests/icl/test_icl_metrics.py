"""The metrics on hand-built vectors; SeedResult / TaskResult statistics by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmscope.icl.metrics import SeedResult, TaskResult, random_sim_aou, rec2ftp, sim_am, sim_am_delta, sim_aou


def test_sim_aou_on_hand_built_vectors():
    e1, e2, e3 = torch.eye(3)
    assert sim_aou(e1, e2, e2).item() == pytest.approx(1.0)
    assert sim_aou(e1, e2, 5 * e2).item() == pytest.approx(1.0)  # outputs are L2-normalised first
    assert sim_aou(e1, e2, e3).item() == pytest.approx(0.5)  # updates (-1, 1, 0) and (-1, 0, 1)
    assert sim_aou(e1, e2, -e2).item() == pytest.approx(0.0)  # updates (-1, 1, 0) and (-1, -1, 0)
    assert sim_aou(e1, e2, e1).item() == 0.0  # no finetuning update: 0, not nan
    # brute force: normalise, subtract, cosine
    g = torch.Generator().manual_seed(0)
    z, i, f = (torch.randn(4, 7, generator=g, dtype=torch.float64) for _ in range(3))
    n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    a, b = n(i) - n(z), n(f) - n(z)
    torch.testing.assert_close(sim_aou(z, i, f), (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)))


def test_random_baseline_is_small_for_zero_mean_updates():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(2000, 576, generator=g)
    icl = zs + 0.1 * torch.randn(2000, 576, generator=g)
    r = random_sim_aou(zs, icl, torch.Generator().manual_seed(1))
    assert r.shape == (2000,) and abs(r.mean().item()) < 0.01


def test_sim_am_delta_and_sim_am_average_over_heads():
    zs = torch.zeros(2, 3)  # (heads, input tokens)
    icl = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ft = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # head 0 aligned (1), head 1 orthogonal (0)
    assert sim_am_delta(zs, icl, ft).item() == pytest.approx(0.5)
    assert sim_am(icl, ft).item() == pytest.approx(0.5)
    assert sim_am_delta(zs + 3, icl + 3, ft + 3).item() == pytest.approx(0.5)  # only differences count


def test_rec2ftp_counts_by_hand():
    zs = [1, 0, 0, 0, 0]
    icl = [1, 1, 0, 1, 0]
    ft = [0, 1, 1, 1, 0]  # FT fixes examples 1, 2, 3; ICL also gets 1 and 3 right
    assert rec2ftp(zs, icl, ft) == pytest.approx(2 / 3)
    assert math.isnan(rec2ftp([1, 1], [1, 1], [1, 0]))


def seed_result(seed: int, offset: float) -> SeedResult:
    """Two examples, three layers; SimAOU of GD is ``offset + layer`` for both examples."""
    layers = np.arange(3.0)
    res = SeedResult("toy", seed, 2, 0.1, {"zs": np.array([False, True]), "icl": np.array([True, True]),
                                            "gd": np.array([True, False])})
    res.sim_aou["gd"] = np.stack([offset + layers, offset + layers])
    res.random_sim_aou = np.zeros((2, 3))
    return res


def test_task_result_statistics_by_hand():
    a, b = seed_result(0, 0.0), seed_result(1, 1.0)
    b.skipped["lcgd"] = "loss not finite"
    r = TaskResult("toy", 2, [a, b], 2)
    mean, std = r.layer_curve("sim_aou", "gd")
    np.testing.assert_allclose(mean, [0.5, 1.5, 2.5])
    np.testing.assert_allclose(std, [0.5, 0.5, 0.5])
    assert r.summary("sim_aou", "gd") == pytest.approx((1.5, 0.5))  # per-seed means 1 and 2
    assert r.summary("random_sim_aou", "") == (0.0, 0.0)
    assert all(math.isnan(v) for v in r.summary("sim_aou", "lcgd"))
    assert r.layer_curve("sim_am_delta", "gd")[0].size == 0
    assert r.accuracy("icl") == (1.0, 0.0) and r.accuracy("gd") == (0.5, 0.0)
    assert r.rec2ftp("gd") == (1.0, 0.0)  # GD fixes example 0, ICL gets it right too
    assert all(math.isnan(v) for v in r.rec2ftp("lcgd"))
    assert r.skipped == ["seed 1 LCGD: loss not finite"]
    assert a.has_metric("sim_aou", "gd") and not a.has_metric("sim_aou", "lcgd")
