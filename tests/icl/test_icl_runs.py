"""The study's runs on a tiny model: records, restored weights, repeatability, skips, bad input, the
learning-rate sweep, step timings, and the untrained control (bit-identical to the old draw)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from icl_helpers import CharTokenizer, small_task, tiny_run

from lmscope import ModelView
from lmscope.core.hooks import hook_names
from lmscope.icl.prompts import PromptBuilder
from lmscope.icl.report import similarity_table
from lmscope.icl.runs import (
    DEFAULT_LR,
    FALLBACK_LR,
    record_run,
    run_task,
    step_seconds,
    sweep_lr,
    task_lr,
    untrained_model,
)

CAUSAL = ["llama", "qwen2", "gpt2", "gpt_neox"]


def test_run_task_records_and_restores_weights():
    view = ModelView(make_tiny_model("llama"))
    state = {k: v.clone() for k, v in view.model.state_dict().items()}
    res = tiny_run(view, seeds=(0, 1))
    for k, v in view.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    s = res.seeds[0]
    L = view.cfg.n_layers
    for m in ("gd", "lcgd"):
        assert s.sim_aou[m].shape == (4, L) and s.sim_am_delta[m].shape == (4, L)
        assert np.all(np.abs(s.sim_aou[m]) <= 1 + 1e-9)
        assert len(s.losses[m]) == 3
    assert s.random_sim_aou.shape == (4, L)
    assert set(s.correct) == {"zs", "icl", "gd", "lcgd"}
    assert "toy (ours)" in similarity_table({"toy": res})
    assert view.model.config._attn_implementation != "lmscope_eager"


def test_runs_repeat_exactly_with_the_same_seed():
    view = ModelView(make_tiny_model("llama"))
    a, b = tiny_run(view), tiny_run(view)
    for m in ("gd", "lcgd"):
        np.testing.assert_array_equal(a.seeds[0].sim_aou[m], b.seeds[0].sim_aou[m])
        np.testing.assert_array_equal(a.seeds[0].sim_am_delta[m], b.seeds[0].sim_am_delta[m])
    np.testing.assert_array_equal(a.seeds[0].random_sim_aou, b.seeds[0].random_sim_aou)


def test_record_run_scores_only_cover_the_test_input():
    view = ModelView(make_tiny_model("llama"))
    task = small_task()
    b = PromptBuilder(task, CharTokenizer())
    p = b.prompt(task.test_set[0], task.demonstrations(2, 0))
    rec = record_run(view, p, read_at="last", keys="input")  # the old reading (the paper's: tests/icl/test_icl_records.py)
    s, e = p.input_span
    assert rec.scores.shape == (view.cfg.n_layers, view.cfg.n_heads, e - s)
    assert rec.attn_out.shape == (view.cfg.n_layers, view.cfg.d_model)
    names = hook_names("attn_out", range(view.cfg.n_layers))
    _, cache = view.run_with_cache(torch.tensor([p.ids]), names)
    for l, n in enumerate(names):
        torch.testing.assert_close(rec.attn_out[l], cache[n][0, -1].float())
    # option scores: mean label log-probability by brute force
    for i, opt in enumerate(p.options):
        with torch.no_grad():
            logp = view.model(input_ids=torch.tensor([p.ids + opt])).logits[0].log_softmax(-1)
        ref = torch.stack([logp[len(p.ids) - 1 + j, t] for j, t in enumerate(opt)]).mean()
        assert rec.logprobs[i].item() == pytest.approx(ref.item(), abs=1e-6)


def test_non_finite_loss_is_a_reported_skip():
    view = ModelView(make_tiny_model("llama"))
    res = tiny_run(view, lr=1e200)
    assert set(res.seeds[0].skipped) == {"gd", "lcgd"}
    assert "Lower the learning rate" in res.skipped[0]
    assert math.isnan(res.summary("sim_aou", "gd")[0])


def test_bad_study_input():
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="loss_on"):
        tiny_run(view, loss_on="everything")
    with pytest.raises(ValueError, match="Unknown methods"):
        tiny_run(view, methods=("adam",))
    with pytest.raises(ValueError, match="at most"):
        run_task(view, CharTokenizer(), small_task(), k=15, seeds=(0,), n_test=2)  # context is 64
    assert view.cfg.n_ctx == 64


def test_masked_lm_is_refused():
    view = ModelView(make_tiny_model("bert"))
    with pytest.raises(ValueError, match="needs a causal language model; BERT is a masked LM"):
        tiny_run(view)


def test_task_lr():
    assert task_lr("antonyms", None) == DEFAULT_LR["antonyms"]
    assert task_lr("toy", None) == FALLBACK_LR
    assert task_lr("toy", 0.3) == 0.3 and task_lr("toy", {"toy": 0.2}) == 0.2
    assert task_lr("antonyms", {"toy": 0.2}) == DEFAULT_LR["antonyms"]


def test_sweep_lr_rows_and_skips():
    view = ModelView(make_tiny_model("llama"))
    state = {k: v.clone() for k, v in view.model.state_dict().items()}
    rows = sweep_lr(view, CharTokenizer(), small_task(), [0.05, 1e200], k=3, n_eval=5)
    assert [(r["lr"], r["method"]) for r in rows] == [(0.0, "zs"), (0.05, "gd"), (0.05, "lcgd"),
                                                      (1e200, "gd"), (1e200, "lcgd")]
    assert all(0 <= r["accuracy"] <= 1 and not r["skipped"] for r in rows[:3])
    assert all(math.isnan(r["accuracy"]) and "Lower the learning rate" in r["skipped"] for r in rows[3:])
    # the zero-shot row is the accuracy on the first n_eval validation examples
    task, b = small_task(), PromptBuilder(small_task(), CharTokenizer())
    zs = np.mean([record_run(view, b.prompt(e), hooks=False).correct for e in task.validation(3, 0)[:5]])
    assert rows[0]["accuracy"] == zs
    for k, v in view.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_step_seconds_times_every_step_of_both_methods():
    view = ModelView(make_tiny_model("llama"))
    times = step_seconds(view, CharTokenizer(), small_task(), k=3, repeats=2)
    assert set(times) == {"gd", "lcgd"} and all(len(t) == 6 and min(t) > 0 for t in times.values())
    with pytest.raises(ValueError, match="loss_on"):
        step_seconds(view, CharTokenizer(), small_task(), k=3, loss_on="some")


# -- the untrained control --------------------------------------------------------------------


def test_untrained_control_keeps_embeddings_and_norms():
    model = make_tiny_model("llama")
    rand = untrained_model(ModelView(model), seed=0).model
    a, b = model.state_dict(), rand.state_dict()
    for k in a:
        same = torch.equal(a[k], b[k])
        if "norm" in k or "embed" in k or "lm_head" in k:
            assert same, k
        elif k.endswith("weight") and "layers" in k:
            assert not same, k
    assert model.model.layers[0].self_attn.k_proj.weight.std() != rand.model.layers[0].self_attn.k_proj.weight.std()


def old_untrained_model(model, seed: int = 0, std: float | None = None):
    """The control as it was drawn before the family table knew the block's linears (kept as the reference)."""
    clone = copy.deepcopy(model)
    view = ModelView(clone)
    std = std or getattr(clone.config, "initializer_range", 0.02)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in view.blocks:
            for mod in block.modules():
                if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=g, dtype=mod.weight.dtype) * std)
                    if mod.bias is not None:
                        mod.bias.zero_()
    return clone


@pytest.mark.parametrize("family", CAUSAL)
def test_untrained_control_draws_the_same_weights_as_before(family):
    model = make_tiny_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for seed, std in ((0, None), (3, 0.5)):
        new = untrained_model(ModelView(model), seed, std).model.state_dict()
        old = old_untrained_model(model, seed, std).state_dict()
        assert new.keys() == old.keys()
        for k in new:
            assert torch.equal(new[k], old[k]), (family, seed, k)
    changed = {k for k in before if not torch.equal(before[k], new[k])}
    view = ModelView(model)
    linears = {n for n, p in model.named_parameters()
               if any(p is q for l in range(view.cfg.n_layers) for m in view.block_linears(l) for q in m.parameters())}
    assert changed == {k for k in linears if k.endswith("weight") or before[k].abs().max() > 0}
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_embedded_model_learns_antonyms_in_context(smollm):
    model, tok = smollm
    view = ModelView(model)
    res = run_task(view, tok, "antonyms", k=8, seeds=(0,), n_test=12, methods=("gd",))
    assert res.accuracy("icl")[0] >= 0.8
    assert res.accuracy("icl")[0] >= res.accuracy("zs")[0]
