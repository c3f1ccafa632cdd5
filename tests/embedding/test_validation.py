"""The parameter / hidden-state validation: the attention z it records, and its overlaps."""

import numpy as np
import pytest
import torch

from lmscope import ModelView, hook_name
from lmscope.embedding.projection import group_vectors
from lmscope.embedding.validation import (
    GROUPS_CHECKED, capture_attention_z, paper_overlap, parameter_hidden_overlap,
)

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


def _reference_paper_overlap(view, blocks, layers, top_params, k, masks, seed):
    """The official measure position by position with Python sets: every group, both targets, each mask."""
    cfg = view.cfg
    last = cfg.n_layers - 1
    acts = {}  # (layer, point) -> (P, width): each block run on its own, positions one after another
    for block in blocks:
        with capture_attention_z(view, layers) as z, view.capture(
                [hook_name(l, p) for l in set(layers) | {last} for p in ("ff_coeffs", "resid_post")]) as cache:
            view.model(input_ids=block[None])
        for l in set(layers) | {last}:
            for point, x in (("ff", cache[hook_name(l, "ff_coeffs")]), ("resid", cache[hook_name(l, "resid_post")]),
                             ("z", z.get(l))):
                if x is not None:
                    acts.setdefault((l, point), []).append(x[0])
    acts = {key: torch.cat(v) for key, v in acts.items()}
    P = blocks.numel()
    rng = np.random.default_rng(seed)
    other = (np.arange(P) + rng.integers(1, P, size=P)) % P
    E = view.W_U.detach().float()
    rep = cfg.n_heads // cfg.n_kv_heads

    def top(scores, keep):  # the top-k ids of one reading over the kept tokens, as a set
        return set(scores.masked_fill(~keep, float("-inf")).topk(k).indices.tolist()) if keep is not None \
            else set(scores.topk(k).indices.tolist())

    out = {name: {a: {g: {"aligned": [], "random": []} for g in GROUPS_CHECKED} for a in ("layer", "last")}
           for name in masks}
    for l in layers:
        lens = {target: [view.unembed(acts[target, "resid"][p]).float() for p in range(P)] for target in (l, last)}
        for g in GROUPS_CHECKED:
            act = acts[l, "ff" if g.startswith("ff_") else "z"]
            vecs = group_vectors(view, l, g).detach().float()
            for name, keep in masks.items():
                A = []
                for p in range(P):
                    units = act[p].topk(top_params).indices.tolist()
                    if g == "W_V":  # subhead h*dh + c reads row (h // rep)*dh + c of the kv heads
                        units = [(u // cfg.d_head // rep) * cfg.d_head + u % cfg.d_head for u in units]
                    A.append(set().union(*(top(vecs[u] @ E, keep) for u in units)))
                for against, target in (("layer", l), ("last", last)):
                    B = [top(lens[target][p], keep) for p in range(P)]
                    out[name][against][g]["aligned"].append(np.mean([len(A[p] & B[p]) / k for p in range(P)]))
                    out[name][against][g]["random"].append(np.mean([len(A[other[p]] & B[p]) / k for p in range(P)]))
    return out


@pytest.mark.slow
def test_paper_overlap_on_smollm_against_a_set_reference(smollm):
    """SmolLM2, two masks (one unembedding per layer serves both), every group: the same overlaps as sets."""
    view = ModelView(smollm[0])
    blocks = torch.randint(100, 10000, (2, 6), generator=torch.Generator().manual_seed(0))
    keep = torch.rand(view.cfg.d_vocab, generator=torch.Generator().manual_seed(1)) < 0.7
    masks = {"all tokens": None, "some dropped": keep}
    layers = [0, 17, view.cfg.n_layers - 1]
    out = paper_overlap(view, blocks, layers=layers, top_params=3, k=20, n_positions=12, masks=masks, seed=3)
    ref = _reference_paper_overlap(view, blocks, layers, 3, 20, masks, seed=3)
    for name in masks:
        for against in ("layer", "last"):
            for g in GROUPS_CHECKED:
                for kind in ("aligned", "random"):
                    assert out[name][against][g][kind] == pytest.approx(ref[name][against][g][kind], abs=1e-6)
    assert out["all tokens"]["layer"]["ff_values"]["aligned"].max() > 0, "the overlaps are not all zero"
