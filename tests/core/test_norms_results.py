"""The frozen norm passes a sum of parts through a norm exactly; results files round-trip."""

import pytest
import torch
from torch import nn

from lmscope.core.norms import frozen_norm
from lmscope.core.results import load_results, save_results


class _RMS(nn.Module):
    def __init__(self, d, offset):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d, dtype=torch.float64))
        self.variance_epsilon, self.offset = 1e-6, offset

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) * (self.weight + self.offset)


def _parts(d=8):
    torch.manual_seed(0)
    parts = torch.randn(3, 5, d, dtype=torch.float64)  # (pos, n_parts, d)
    return parts, parts.sum(-2)


def test_frozen_rms_norm_sums_parts_exactly_with_and_without_gain_offset():
    parts, x = _parts()
    for offset in (0.0, 1.0):
        norm = _RMS(8, offset)
        apply, bias = frozen_norm(norm, x, kind="rms", gain_offset=offset)
        torch.testing.assert_close(apply(parts).sum(-2) + bias, norm(x))
        torch.testing.assert_close(apply(x) + bias, norm(x))


def test_frozen_layer_norm_sums_parts_exactly():
    parts, x = _parts()
    norm = nn.LayerNorm(8, dtype=torch.float64)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    apply, bias = frozen_norm(norm, x, kind="layer")
    torch.testing.assert_close(apply(parts).sum(-2) + bias, norm(x))


def test_results_round_trip(tmp_path):
    save_results("00_model", "m1", {"first layer": 7, "gap": torch.tensor(0.25)}, tmp_path)
    save_results("01_embedding_space", "m2", {"x": float("nan")}, tmp_path)
    assert load_results(tmp_path) == {"m1": {"00_model": {"first layer": 7, "gap": 0.25}},
                                      "m2": {"01_embedding_space": {"x": None}}}


def test_view_frozen_final_norm_is_exact(tiny):
    _, _, view = tiny
    if not view.cfg.causal:
        pytest.skip("BERT's 'final norm' is the MLM head transform (dense, activation, LayerNorm)")
    x = torch.randn(4, view.cfg.d_model, dtype=view.W_E.dtype)
    apply, bias = view.frozen_norm(view.final_norm, x)
    torch.testing.assert_close(apply(x) + bias, view.final_norm(x))
