"""The parameter / hidden-state validation: the attention z it records, and its overlaps."""

import numpy as np
import pytest
import torch

from lmscope import ModelView, hook_name
from lmscope.embedding.validation import capture_attention_z, paper_overlap, parameter_hidden_overlap

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


def _brute_force_overlap(view, ids, layer, k, top_params, against_layer):
    """The official recipe written out position by position with Python sets (FF values only)."""
    with view.capture([hook_name(layer, "ff_coeffs"), hook_name(against_layer, "resid_post")]) as cache:
        view.model(input_ids=ids)
    coeffs = cache[hook_name(layer, "ff_coeffs")][0]
    hidden = cache[hook_name(against_layer, "resid_post")][0]
    E = view.W_U.detach()
    scores = []
    for p in range(ids.shape[1]):
        units = coeffs[p].topk(top_params).indices
        A = set()
        for u in units.tolist():
            A |= set((view.layers[layer].ff_values[u].detach() @ E).topk(k).indices.tolist())
        B = set(view.unembed(hidden[p]).topk(k).indices.tolist())
        scores.append(len(A & B) / k)
    return float(np.mean(scores))


def test_paper_overlap_matches_a_brute_force_reference(view):
    blocks = torch.randint(3, 97, (2, 6))
    out = paper_overlap(view, blocks, layers=[0, 1], groups=["ff_values"], top_params=2, k=7, n_positions=6)
    assert out["positions"] == 6 and list(out["layers"]) == [0, 1]
    for i, layer in enumerate([0, 1]):
        for against, target in (("layer", layer), ("last", view.cfg.n_layers - 1)):
            ref = _brute_force_overlap(view, blocks[:1], layer, 7, 2, target)
            assert out["all tokens"][against]["ff_values"]["aligned"][i] == pytest.approx(ref)


def test_paper_overlap_masks_and_errors(view):
    blocks = torch.randint(3, 97, (3, 5))
    keep = torch.ones(view.cfg.d_vocab, dtype=torch.bool)
    keep[:40] = False
    out = paper_overlap(view, blocks, layers=[2], k=view.cfg.d_vocab - 40, n_positions=12,
                        masks={"all tokens": None, "some dropped": keep})
    assert out["positions"] == 12
    for g in ("ff_keys", "ff_values", "W_V", "W_O"):  # k = every kept token: the union covers B
        assert out["some dropped"]["layer"][g]["aligned"].tolist() == [1.0]
        assert out["some dropped"]["last"][g]["random"].tolist() == [1.0]
        assert 0 <= out["all tokens"]["layer"][g]["random"][0] <= 1
    with pytest.raises(ValueError, match="Unknown group"):
        paper_overlap(view, blocks, groups=["W_X"])
    with pytest.raises(ValueError, match="n_blocks, seq_len"):
        paper_overlap(view, torch.zeros(5, dtype=torch.long))
