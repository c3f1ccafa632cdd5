"""A model dispatched by accelerate (``device_map``) keeps hooks, identities and readings exact.

This machine has one device (the CPU), so the dispatch here maps every block to its own "cpu"
entry with ``force_hooks=True``: accelerate wraps each block's forward in its device-alignment
hook, as it does on several GPUs, and the tests check that lmscope's hooks still see and change
the right tensors. Weights offloaded to disk (the ``meta`` device) are refused with a clear error.
"""

import conftest
import pytest
import torch
from accelerate import dispatch_model
from conftest import make_tiny_model

from lmscope import ModelView
from lmscope.core.hooks import hook_name
from lmscope.core.models import ModelLoadError, check_no_offload
from lmscope.embedding.index import ProjectionIndex

FAMILIES = list(dict.fromkeys(conftest.TINY_FAMILIES + getattr(conftest, "NEW_FAMILIES", [])))
TOL = dict(rtol=1e-9, atol=1e-9)


def _device_map(model, view, where=lambda layer: "cpu") -> dict:
    """Every block its own entry (device ``where(layer)``), each other module holding weights on "cpu"."""
    layers = view.family.layers
    device_map = {f"{layers}.{l}": where(l) for l in range(view.cfg.n_layers)}
    for key in model.state_dict():
        if not key.startswith(layers + "."):
            device_map.setdefault(key.rsplit(".", 1)[0], "cpu")
    return device_map


@pytest.fixture(params=FAMILIES)
def dispatched(request, tmp_path):
    """(reference view, dispatched view) of the same tiny model."""
    reference = ModelView(make_tiny_model(request.param))
    model = make_tiny_model(request.param)
    view = ModelView(model)
    model = dispatch_model(model, _device_map(model, view), main_device="cpu", force_hooks=True,
                           offload_dir=str(tmp_path))
    assert hasattr(view.blocks[1], "_hf_hook")  # accelerate wraps every block's forward
    return reference, ModelView(model)


def _ids(view, length=7):
    return torch.randint(3, view.cfg.d_vocab, (2, length), generator=torch.Generator().manual_seed(0))


def test_dispatched_model_captures_like_the_model(dispatched):
    reference, view = dispatched
    points = ["resid_pre", "resid_mid", "resid_post", "attn_out", "attn_heads", "mlp_out", "ff_coeffs"]
    names = [hook_name(l, p) for l in range(view.cfg.n_layers) for p in points]
    ref_logits, ref_cache = reference.run_with_cache(_ids(view), names)
    logits, cache = view.run_with_cache(_ids(view), names)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
    for name in names:
        torch.testing.assert_close(cache[name], ref_cache[name], rtol=0, atol=0)
    for l, lv in enumerate(view.layers):  # the FF identity on the dispatched model's own weights
        recon = cache[hook_name(l, "ff_coeffs")] @ lv.ff_values
        recon = recon + lv.b_ff_out if lv.b_ff_out is not None else recon
        torch.testing.assert_close(recon, cache[hook_name(l, "mlp_out")], **TOL)


def test_dispatched_model_scores_and_overwrites_like_the_model(dispatched):
    reference, view = dispatched
    unit = view.cfg.d_ff // 2

    def knock_out(t):
        t = t.clone()
        t[..., unit] = 3.0
        return t

    outputs = []
    for v in (reference, view):
        with v.overwrite({hook_name(1, "ff_coeffs"): knock_out}), v.capture([hook_name(1, "attn_scores")]) as c:
            with torch.no_grad():
                logits = v.model(input_ids=_ids(v)).logits
        outputs.append((logits, c[hook_name(1, "attn_scores")]))
    (ref_logits, ref_scores), (logits, scores) = outputs
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0)
    with torch.no_grad():
        assert not torch.equal(logits, reference.model(input_ids=_ids(view)).logits)  # the edit took effect


def test_studies_read_a_dispatched_model(dispatched):
    reference, view = dispatched
    ours, theirs = ProjectionIndex.compute(view, k=5), ProjectionIndex.compute(reference, k=5)
    assert torch.equal(ours.ids, theirs.ids)
    resid = torch.randn(3, view.cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(view.unembed(resid), reference.unembed(resid), rtol=0, atol=0)


def test_offloaded_weights_are_refused(tmp_path):
    model = make_tiny_model("llama")
    view = ModelView(model)
    device_map = _device_map(model, view, where=lambda layer: "disk" if layer == 1 else "cpu")
    model = dispatch_model(model, device_map, main_device="cpu", offload_dir=str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"offloaded weights of 'tiny' \(model.layers.1.*more room"):
        check_no_offload(model, "tiny")
    check_no_offload(make_tiny_model("llama"))  # nothing offloaded: no error
