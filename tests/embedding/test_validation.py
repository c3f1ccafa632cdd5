"""The parameter / hidden-state validation: the attention z it records, and its overlaps."""

import numpy as np
import pytest
import torch

from lmscope import ModelView, hook_name
from lmscope.embedding.validation import capture_attention_z, parameter_hidden_overlap

from conftest import make_tiny_model


@pytest.fixture
def view():
    return ModelView(make_tiny_model("llama"))


def test_attention_z_reconstructs_the_attention_output(view):
    ids = torch.randint(3, 97, (1, 6))
    with capture_attention_z(view, [1]) as z, view.capture([hook_name(1, "attn_out")]) as cache:
        view.model(input_ids=ids)
    lv = view.layers[1]
    recon = z[1] @ lv.W_O.reshape(-1, view.cfg.d_model)
    torch.testing.assert_close(recon, cache[hook_name(1, "attn_out")])
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


def test_overlap_is_complete_when_the_parameters_are_the_hidden_state(view):
    """One layer, FF values only: with k = d_vocab every reading covers every token (overlap 1)."""
    ids = [torch.randint(3, 97, (4,))]
    out = parameter_hidden_overlap(view, ids, layers=[1], groups=["ff_values"], top_params=1, k=view.cfg.d_vocab)
    assert out["ff_values"]["aligned"].tolist() == [1.0] and out["ff_values"]["random"].tolist() == [1.0]
