"""lmscope.topk.perplexity: perplexity, the dense / top-k attention / top-k FF switch, the sweep."""

import math

import pytest
import torch
from conftest import make_tiny_model

from lmscope import ModelView, hook_name
from lmscope.core.attention import TOPK, active_implementation
from lmscope.topk.perplexity import MODES, perplexity, perplexity_sweep, sweep, use_topk


def _blocks(n=3, length=16, seed=0):
    return torch.randint(3, 97, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_perplexity_is_exp_of_the_cross_entropy(batch_size):
    view = ModelView(make_tiny_model("llama"))
    blocks = _blocks()
    with torch.no_grad():
        logits = view.model(input_ids=blocks).logits  # every block at once, (N, T, V)
    log_p = torch.log_softmax(logits[:, :-1], -1)
    nll = -log_p.gather(-1, blocks[:, 1:, None]).mean()  # mean over the N * (T - 1) predictions
    assert perplexity(view, blocks, batch_size=batch_size) == pytest.approx(math.exp(float(nll)), rel=1e-6)  # scored in float32


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sweep_dense_row_and_k_covering_everything_reproduce_dense(family):
    view = ModelView(make_tiny_model(family))
    blocks = _blocks(n=2, length=12)
    dense = perplexity(view, blocks)
    rows = perplexity_sweep(view, blocks, attn_ks=[12, 2], ff_ks=[view.cfg.d_ff, 1], chunk_size=5)
    assert [(r["mode"], r["k"]) for r in rows] == [
        ("dense", None), ("attention", 12), ("attention", 2), ("ff", view.cfg.d_ff), ("ff", 1)]
    assert rows[0]["ppl"] == dense
    assert rows[1]["ppl"] == pytest.approx(dense, rel=1e-6)  # k >= length: exact attention
    assert rows[3]["ppl"] == pytest.approx(dense, rel=1e-6)  # every FF unit kept
    assert rows[2]["ppl"] != pytest.approx(dense, rel=1e-6) and rows[4]["ppl"] != pytest.approx(dense, rel=1e-6)
    assert perplexity(view, blocks) == dense  # the model is back to dense after the sweep


def test_use_topk_switches_and_restores():
    view = ModelView(make_tiny_model("llama"))
    ids = _blocks(n=1, length=10)
    ref = view.model(input_ids=ids).logits
    for mode in MODES:
        with use_topk(view, mode, 10 if mode == "attention" else view.cfg.d_ff):
            torch.testing.assert_close(view.model(input_ids=ids).logits, ref)
    with use_topk(view, "attention", 1):
        assert not torch.allclose(view.model(input_ids=ids).logits, ref)
    torch.testing.assert_close(view.model(input_ids=ids).logits, ref)
    with pytest.raises(ValueError, match="mode must be one of 'dense', 'attention', 'ff'"):
        use_topk(view, "heads", 4)


def test_sweep_measures_each_mode_inside_its_switch():
    view = ModelView(make_tiny_model("gpt2"))
    ids = _blocks(n=1, length=10)

    def measure():
        with view.capture([hook_name(0, "ff_coeffs")]) as cache:
            view.model(input_ids=ids)
        units = int((cache[hook_name(0, "ff_coeffs")] != 0).sum(-1).max())  # most FF units active at a token
        return {"attention": active_implementation(view.model), "units": units}

    rows = sweep(view, measure, attn_ks=[4], ff_ks=[8, 16])
    d_ff = view.cfg.d_ff
    assert rows == [
        {"mode": "dense", "k": None, "attention": None, "units": d_ff},
        {"mode": "attention", "k": 4, "attention": TOPK, "units": d_ff},
        {"mode": "ff", "k": 8, "attention": None, "units": 8},
        {"mode": "ff", "k": 16, "attention": None, "units": 16},
    ]
