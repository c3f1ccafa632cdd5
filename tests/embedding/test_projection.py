"""Vocabulary readings: a hand-checked case, group shapes, head pairs against the full matrix, rotation invariance."""

import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.projection import GROUPS, Projector, group_vectors, n_vectors, pinv_wide

from conftest import make_tiny_model
from test_top_k import brute_force_pairs


def test_hand_checked_reading():
    """E with three tokens in 2-d: the value (1, 0) scores tokens by E's first row."""
    view = ModelView(make_tiny_model("gpt2"))
    with torch.no_grad():
        wte = view.model.transformer.wte.weight  # tied: W_U = wte.T
        wte.zero_()
        wte[4, 0], wte[8, 0], wte[6, 1] = 2.0, -1.0, 5.0
        view.layers[1].ff_values.zero_()
        view.layers[1].ff_values[3, 0] = 1.5
    proj = Projector(view)
    top = proj.read(1, "ff_values", 3, k=1)
    assert top.ids.tolist() == [4] and top.scores.tolist() == [3.0]
    bottom = proj.read(1, "ff_values", 3, k=1, negative=True)
    assert bottom.ids.tolist() == [8] and bottom.scores.tolist() == [1.5]  # the negated direction's score
    assert top.rows()[0]["id"] == 4


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_group_vectors_shapes(family):
    view = ModelView(make_tiny_model(family))
    cfg = view.cfg
    for group in GROUPS:
        if group == "ff_gate_keys" and not cfg.gated:
            with pytest.raises(ValueError, match="no gated MLP"):
                group_vectors(view, 0, group)
            continue
        assert group_vectors(view, 0, group).shape == (n_vectors(view, group), cfg.d_model)
    # subhead h*d_head + c is column c of head h
    lv = view.layers[2]
    torch.testing.assert_close(group_vectors(view, 2, "W_Q")[1 * cfg.d_head + 3], lv.W_Q[1][:, 3])
    rep = cfg.n_heads // cfg.n_kv_heads
    torch.testing.assert_close(group_vectors(view, 2, "W_K")[1 * cfg.d_head + 3], lv.W_K[rep][:, 3])
    torch.testing.assert_close(group_vectors(view, 2, "W_O")[2 * cfg.d_head + 5], lv.W_O[2][5])


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo2"])
def test_ff_values_are_read_as_the_model_applies_them(family):
    """A post-norm family's value is read as v_i * gain of its post-FF norm (Gemma: 1 + weight); W_O rows likewise."""
    model = make_tiny_model(family)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    view = ModelView(model)
    lv = view.layers[1]
    read = group_vectors(view, 1, "ff_values")
    if lv.post_ff_norm is None:
        assert torch.equal(read, lv.ff_values)
    else:
        gain = lv.post_ff_norm.weight + (1.0 if family == "gemma2" else 0.0)
        torch.testing.assert_close(read, lv.ff_values * gain, rtol=0, atol=0)
    heads = group_vectors(view, 1, "W_O").reshape(view.cfg.n_heads, view.cfg.d_head, view.cfg.d_model)
    if lv.post_attn_norm is None:
        assert torch.equal(heads, lv.W_O)
    else:
        gain = lv.post_attn_norm.weight + (1.0 if family == "gemma2" else 0.0)
        torch.testing.assert_close(heads, lv.W_O * gain, rtol=0, atol=0)


@pytest.mark.parametrize("circuit", ["qk", "vo"])
@pytest.mark.parametrize("reading", ["transpose", "pinv"])
def test_head_pairs_match_the_full_vocabulary_matrix(circuit, reading):
    """On a small-vocabulary model the factored search equals E'^T W E built in full."""
    view = ModelView(make_tiny_model("llama"))
    proj = Projector(view, reading=reading)
    lv = view.layers[1]
    E = view.W_U.detach().float()
    E_in = E if reading == "transpose" else torch.linalg.pinv(E).T
    if circuit == "qk":
        W = (lv.W_Q[2] @ lv.W_K[2].T).float()
        full = E_in.T @ W @ E_in
    else:
        W = (lv.W_V[2] @ lv.W_O[2]).float()
        full = E_in.T @ W @ E
    pairs = proj.head_pairs(1, 2, circuit, k=30, chunk_size=8)
    vals, rr, cc = brute_force_pairs(full, 30)
    torch.testing.assert_close(pairs.scores, vals, rtol=1e-4, atol=1e-5)
    assert pairs.row_ids.tolist() == rr.tolist() and pairs.col_ids.tolist() == cc.tolist()
    assert len(pairs.rows()) == 30


def test_reading_is_invariant_to_rotating_the_residual_basis():
    """Rotating E and every parameter by an orthogonal R leaves every vocabulary reading unchanged."""
    view = ModelView(make_tiny_model("gpt2"))
    proj = Projector(view)
    d = view.cfg.d_model
    R = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    v = group_vectors(view, 2, "ff_values")[:5].detach()
    k = group_vectors(view, 2, "ff_keys")[:5].detach()
    rotated = Projector(view)
    rotated.E = (R.T @ view.W_U.detach().double()).float()
    torch.testing.assert_close(rotated.project(v.double() @ R), proj.project(v), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rotated.project(k.double() @ R, "in"), proj.project(k, "in"), rtol=1e-4, atol=1e-5)
    # the raw coordinates, in contrast, change completely
    assert not torch.allclose(v.double() @ R, v.double(), atol=1e-2)


def test_bad_input():
    view = ModelView(make_tiny_model("gpt2"))
    proj = Projector(view)
    with pytest.raises(IndexError, match="Layer 7 does not exist"):
        proj.read(7, "ff_values", 0)
    with pytest.raises(IndexError, match="Index 9999 does not exist"):
        proj.read(0, "ff_values", 9999)
    with pytest.raises(IndexError, match="Head 4 does not exist"):
        proj.head_pairs(0, 4)
    with pytest.raises(ValueError, match="Unknown parameter group"):
        proj.read(0, "W_X", 0)
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        proj.read(0, "ff_values", 0, k=view.cfg.d_vocab + 1)
    with pytest.raises(ValueError, match="Unknown reading"):
        Projector(view, reading="inverse")
    with pytest.raises(ValueError, match="Unknown circuit"):
        proj.head_pairs(0, 0, circuit="ov")


def test_pinv_wide_is_the_pseudo_inverse():
    """The Gram-matrix route gives torch.linalg.pinv's result; a rank-deficient matrix takes the SVD route."""
    g = torch.Generator().manual_seed(0)
    E = torch.randn(8, 300, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 8, dtype=torch.float64)[:, None]
    P = pinv_wide(E.float())  # float32 input, float64 result
    E = E.float().double()
    assert P.dtype == torch.float64 and P.shape == (300, 8)
    assert torch.allclose(P, torch.linalg.pinv(E), rtol=0, atol=1e-12 * float(P.abs().max()))
    assert torch.allclose(E @ P, torch.eye(8, dtype=torch.float64), atol=1e-10)
    low = E[:3].T @ torch.randn(3, 8, generator=g, dtype=torch.float64)  # (300, 8) of rank 3
    assert torch.equal(pinv_wide(low.T), torch.linalg.pinv(low.T))
    with pytest.raises(ValueError, match="wide"):
        pinv_wide(E.T)
