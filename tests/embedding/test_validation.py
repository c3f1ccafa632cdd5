"""Filters, readable-unit ranking, the parameter/hidden-state validation and the explorer widget."""

import numpy as np
import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.projection import Projector, coherent_units, hub_tokens, large_norm_tokens
from lmscope.embedding.validation import capture_attention_z, parameter_hidden_overlap
from lmscope.embedding.widgets import embedding_explorer, reading_html

from conftest import make_tiny_model


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


def test_attention_z_reconstructs_the_attention_output(view):
    ids = torch.randint(3, 97, (1, 6))
    with capture_attention_z(view, [1]) as z, view.capture(["blocks.1.attn_out"]) as cache:
        view.model(input_ids=ids)
    lv = view.layers[1]
    recon = z[1] @ lv.W_O.reshape(-1, view.cfg.d_model)
    torch.testing.assert_close(recon, cache["blocks.1.attn_out"])
    assert all(not m._forward_pre_hooks for m in view.model.modules()), "hooks removed"


def test_parameter_hidden_overlap_shapes_and_range(view):
    ids = [torch.randint(3, 97, (7,)), torch.randint(3, 97, (5,))]
    out = parameter_hidden_overlap(view, ids, layers=[0, 2], top_params=2, k=10)
    assert list(out["layers"]) == [0, 2]
    for g in ("ff_keys", "ff_values", "W_V", "W_O"):
        assert out[g]["aligned"].shape == (2,) and np.all((out[g]["random"] >= 0) & (out[g]["random"] <= 1))
    with pytest.raises(ValueError, match="No texts"):
        parameter_hidden_overlap(view, [])
    with pytest.raises(ValueError, match="Unknown group"):
        parameter_hidden_overlap(view, ids, groups=["W_X"])


def test_explorer_widget_updates(view):
    proj = Projector(view)
    box = embedding_explorer(proj, k=4)
    layer, group, index = box.children[0].children
    out = box.children[1]
    assert "top token" in out.value
    group.value = "W_QK"
    assert index.max == view.cfg.n_heads - 1 and "row token" in out.value
    group.value = "W_O"
    index.value = 5
    assert out.value == reading_html(proj, layer.value, "W_O", 5, 4)
