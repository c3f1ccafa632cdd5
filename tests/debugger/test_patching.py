"""Activation patching (batched grids against one-cell reference runs) and attribution patching."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_FAMILIES, make_tiny_model
from debugger_helpers import random_ids

from lmscope import ModelView
from lmscope.core.hooks import hook_name
from lmscope.debugger.patching import (
    COMPONENTS,
    Noise,
    activation_patching,
    attribution_error,
    attribution_patching,
)

CAUSAL = [f for f in TINY_FAMILIES if f != "bert"]


def _pair(view, length=6, where=2):
    clean = random_ids(view, length, seed=4)
    corrupted = clean.clone()
    corrupted[where] = 50 if int(clean[where]) != 50 else 51
    return clean, corrupted


@pytest.mark.parametrize("family", CAUSAL)
def test_exact_cells_of_the_grid(family):
    view = ModelView(make_tiny_model(family))
    clean, corrupted = _pair(view)
    grids = activation_patching(view, clean, corrupted, target=10, metric="logit", components=COMPONENTS)
    res = grids["resid_pre"].recovered()
    # block 0's input at the one differing position is all that differs: restoring it is the clean run
    assert float(res[0, 2]) == pytest.approx(1.0, abs=1e-9)
    # ...and restoring an unchanged position changes nothing
    assert res[0, [0, 1, 3, 4, 5]].abs().max() < 1e-9
    # causal: the last layer's FF output at an earlier position cannot reach the last position
    mlp = grids["mlp_out"].grid
    assert (mlp[-1, :-1] - grids["mlp_out"].corrupted).abs().max() < 1e-12
    assert grids["heads"].grid.shape == (view.cfg.n_layers, view.cfg.n_heads)


@pytest.mark.parametrize("component", COMPONENTS)
def test_batched_grid_equals_one_cell_reference_runs(component):
    view = ModelView(make_tiny_model("llama"))
    model = view.model
    clean, corrupted = _pair(view, 5, 1)
    grid = activation_patching(view, clean, corrupted, target=10, metric="prob", components=[component],
                               batch_size=7)[component].grid
    point = "attn_heads" if component == "heads" else component
    names = [hook_name(l, point) for l in range(view.cfg.n_layers)]
    _, clean_cache = view.run_with_cache(clean[None], names)
    for layer in (0, 2):
        for col in (1, 3):
            def put(t, layer=layer, col=col):
                t = t.clone()
                src = clean_cache[hook_name(layer, point)]
                if component == "heads":
                    t[:, :, col] = src[:, :, col]
                else:
                    t[:, col] = src[:, col]
                return t
            with torch.no_grad(), view.overwrite({hook_name(layer, point): put}):
                want = model(input_ids=corrupted[None]).logits[0, -1].softmax(-1)[10]
            assert float(grid[layer, col]) == pytest.approx(float(want), abs=1e-12)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])  # LayerNorm families compute in float64 throughout
def test_attribution_patching_is_first_order_for_small_noise(family):
    view = ModelView(make_tiny_model(family))
    clean = random_ids(view, 6, seed=5)
    noise = Noise((1, 3), scale=1e-4, seed=1)
    real = activation_patching(view, clean, noise=noise, target=10, metric="logit_diff", foil=20,
                               components=COMPONENTS)
    approx = attribution_patching(view, clean, noise=noise, target=10, metric="logit_diff", foil=20,
                                  components=COMPONENTS)
    for comp in COMPONENTS:
        assert approx[comp].corrupted == pytest.approx(real[comp].corrupted, abs=1e-12)
        effect = (real[comp].grid - real[comp].corrupted).abs().max()
        assert float((approx[comp].grid - real[comp].grid).abs().max()) < 1e-3 * float(effect)
    errors = attribution_error(real, approx)
    assert set(errors) == set(COMPONENTS) and errors["attn_out"]["correlation"] > 0.99


def test_noise_corruption_and_its_restoration():
    view = ModelView(make_tiny_model("gpt2"))
    clean = random_ids(view, 6, seed=6)
    grids = activation_patching(view, clean, noise=Noise((2,), scale=3.0), target=10, components="resid_pre")
    g = grids["resid_pre"]
    assert g.clean != g.corrupted
    assert float(g.recovered()[0, 2]) == pytest.approx(1.0, abs=1e-9)
    rows = g.rows()
    assert len(rows) == view.cfg.n_layers * 6 and {"layer", "position", "recovered"} <= set(rows[0])


def test_bad_input_names_the_argument():
    view = ModelView(make_tiny_model("llama"))
    clean, corrupted = _pair(view)
    with pytest.raises(ValueError, match="same length"):
        activation_patching(view, clean, corrupted[:-1], target=10)
    with pytest.raises(ValueError, match="needs a foil"):
        activation_patching(view, clean, corrupted, target=10, metric="logit_diff")
    with pytest.raises(ValueError, match="Unknown component 'mlp'"):
        activation_patching(view, clean, corrupted, target=10, components=["mlp"])
    with pytest.raises(ValueError, match="exactly one corruption"):
        activation_patching(view, clean, corrupted, target=10, noise=Noise((1,)))
    with pytest.raises(ValueError, match="exactly one corruption"):
        attribution_patching(view, clean, target=10)
    with pytest.raises(ValueError, match="clean prompt is empty"):
        activation_patching(view, [], [], target=10)
    with pytest.raises(IndexError, match="position 9"):
        activation_patching(view, clean, corrupted, target=10, positions=[9])
    with pytest.raises(IndexError, match="noise positions: position 7"):
        activation_patching(view, clean, noise=Noise((7,)), target=10)
    with pytest.raises(ValueError, match="target must be one token id"):
        activation_patching(view, clean, corrupted, target=[3, 4])
    with pytest.raises(ValueError, match="Unknown metric"):
        activation_patching(view, clean, corrupted, target=10, metric="kl")


@pytest.mark.slow
def test_smollm_subject_patch_restores_paris(smollm):
    model, tok = smollm
    view = ModelView(model)
    clean = tok("The capital of France is", return_tensors="pt").input_ids[0]
    corrupted = tok("The capital of Italy is", return_tensors="pt").input_ids[0]
    assert clean.shape == corrupted.shape
    paris, rome = tok(" Paris").input_ids[0], tok(" Rome").input_ids[0]
    grids = activation_patching(view, clean, corrupted, target=paris, foil=rome, metric="logit_diff",
                                components="resid_pre")
    g = grids["resid_pre"]
    subject = int((clean != corrupted).nonzero()[0])
    assert g.clean > 0 > g.corrupted
    assert float(g.recovered()[0, subject]) == pytest.approx(1.0, abs=1e-3)
    assert g.recovered()[:, :subject].abs().max() < 1e-3  # before the subject nothing differs


@pytest.mark.parametrize("family", CAUSAL)
def test_suffix_runs_after_a_cached_prefix_give_the_same_grid(family):
    view = ModelView(make_tiny_model(family))
    clean, corrupted = _pair(view, 7, 3)
    kw = dict(target=10, foil=20, metric="logit_diff", components=("resid_pre", "attn_out", "mlp_out"))
    fast = activation_patching(view, clean, corrupted, **kw)
    full = activation_patching(view, clean, corrupted, suffix_runs=False, **kw)
    noisy = dict(noise=Noise((2, 4), scale=2.0), **kw)
    fast_n = activation_patching(view, clean, **noisy)
    full_n = activation_patching(view, clean, suffix_runs=False, **noisy)
    for a, b in ((fast, full), (fast_n, full_n)):
        for comp in a:
            torch.testing.assert_close(a[comp].grid, b[comp].grid, rtol=0, atol=1e-10)


def test_unchanged_cells_need_no_run_and_keep_their_value():
    view = ModelView(make_tiny_model("llama"))
    clean, corrupted = _pair(view, 6, 3)
    kw = dict(target=10, metric="logit", components=("resid_pre", "mlp_out", "heads"))
    fast = activation_patching(view, clean, corrupted, **kw)
    slow = activation_patching(view, clean, corrupted, skip_unchanged=False, **kw)
    L = view.cfg.n_layers
    # positions 0-2 come before the change; block 0's input differs only at the changed token
    assert fast["resid_pre"].n_runs == 1 + (L - 1) * 3
    assert slow["resid_pre"].n_runs == L * 6
    for comp in fast:
        torch.testing.assert_close(fast[comp].grid, slow[comp].grid, rtol=0, atol=1e-10)
