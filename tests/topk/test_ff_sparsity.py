"""lmscope.topk.ff_sparsity: FF coefficient sparsity and the loss of keeping the top k."""

import pytest
import torch
from conftest import make_tiny_model

from lmscope import ModelView, hook_name
from lmscope.topk.dropin import topk_feedforward
from lmscope.topk.ff_sparsity import coefficient_stats, ff_coefficient_stats, mean_stats


def test_stats_of_known_coefficients():
    m = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    values = torch.eye(4, dtype=torch.float64)
    s = coefficient_stats(m, values, [1, 2, 4])
    assert s["zero"] == 5 / 8
    assert s["small"] == 5 / 8
    assert s["effective"] == pytest.approx(((16 / 10) + 1) / 2 / 4)  # (sum|m|)^2 / sum m^2 / d_ff
    assert s["l1_kept"] == pytest.approx({1: (3 / 4 + 1) / 2, 2: 1.0, 4: 1.0})
    assert s["out_error"] == pytest.approx({1: (1 / 10**0.5 + 0) / 2, 2: 0.0, 4: 0.0})


def test_relu_coefficients_are_half_zero_and_gated_ones_have_no_zeros():
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(2000, 64, generator=g, dtype=torch.float64)
    values = torch.randn(64, 8, generator=g, dtype=torch.float64)
    relu = coefficient_stats(torch.relu(pre), values, [8])
    gated = coefficient_stats(torch.nn.functional.silu(pre) * torch.randn(2000, 64, generator=g, dtype=torch.float64),
                              values, [8])
    assert relu["zero"] == pytest.approx(0.5, abs=0.01) and gated["zero"] == 0
    assert relu["effective"] < 0.5  # at most the half of the ReLU units that are on carry mass


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_out_error_is_the_change_of_the_ff_output_under_top_k_ff(family):
    view = ModelView(make_tiny_model(family))
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    k = 5
    rows = ff_coefficient_stats(view, ids, [k, view.cfg.d_ff])
    assert len(rows) == view.cfg.n_layers
    assert all(r["l1_kept"][view.cfg.d_ff] == pytest.approx(1.0) and r["out_error"][view.cfg.d_ff] == 0 for r in rows)
    name = hook_name(0, "mlp_out")
    errors = []
    for b in ids:
        with view.capture([name]) as dense:
            view.model(input_ids=b[None])
        with topk_feedforward(view, k, layers=[0]), view.capture([name]) as sparse:
            view.model(input_ids=b[None])
        diff = (dense[name] - sparse[name]).reshape(-1, view.cfg.d_model).norm(dim=-1)
        bias = view.layers[0].b_ff_out
        clean = dense[name] - (0 if bias is None else bias)
        errors.append(diff / clean.reshape(-1, view.cfg.d_model).norm(dim=-1))
    assert rows[0]["out_error"][k] == pytest.approx(float(torch.cat(errors).mean()), rel=1e-5)
    avg = mean_stats(rows)
    assert avg["effective"] == pytest.approx(sum(r["effective"] for r in rows) / len(rows))
    with pytest.raises(ValueError, match="ks must be positive"):
        ff_coefficient_stats(view, ids, [0])
