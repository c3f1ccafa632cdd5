"""Greedy generation with interventions, one prompt and left-padded batches."""

import pytest
import torch
from debugger_helpers import n_hooks, random_ids

from lmscope import ModelView
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.generation import left_pad, pad_token_id
from lmscope.debugger.interventions import Intervention


def test_generation_is_greedy_with_interventions(tiny):
    family, model, view = tiny
    dbg = LMDebugger(view)
    ids = random_ids(view, length=5)
    if not view.cfg.causal:
        with pytest.raises(ValueError, match="causal"):
            dbg.generate(ids, 3)
        with pytest.raises(ValueError, match="causal"):
            dbg.generate_batch([ids], 3)
        return
    ivs = [Intervention(1, 2, "set", 5.0)]
    steps = []
    new = dbg.generate(ids, 6, ivs, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (6, 6)
    seq = ids[None]
    with dbg.intervene(ivs, seq):  # brute force: full re-run per token, no cache
        for _ in range(6):
            nxt = model(input_ids=seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    assert new == seq[0, 5:].tolist()
    assert n_hooks(model) == 0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_runs_match_single_prompts(family):
    from conftest import make_tiny_model

    model = make_tiny_model(family)
    view = ModelView(model)
    dbg = LMDebugger(view)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    ivs = [Intervention(1, 3, "on"), Intervention(2, 5, "set", 3.0)]
    batch = dbg.last_logits_batch(prompts, ivs)
    for i, p in enumerate(prompts):
        torch.testing.assert_close(batch[i], dbg.logits(p, ivs)[-1], rtol=1e-7, atol=1e-7)
    gen = dbg.generate_batch(prompts, 5, ivs)
    assert gen == [dbg.generate(p, 5, ivs) for p in prompts]
    assert n_hooks(model) == 0


def test_generation_checks_its_length(tiny):
    _, model, view = tiny
    if not view.cfg.causal:
        return
    dbg = LMDebugger(view)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            dbg.generate([3, 4], bad)
        with pytest.raises(ValueError, match="positive integer"):
            dbg.generate_batch([[3, 4]], bad)
    with pytest.raises(ValueError, match="exceeds the context of 64"):
        dbg.generate(list(range(3, 63)), 5)
    with pytest.raises(ValueError, match="exceeds the context of 64"):
        dbg.generate_batch([[3], list(range(3, 63))], 5)
    with pytest.raises(ValueError, match="No prompts"):
        dbg.generate_batch([], 2)


def test_left_pad_puts_every_prompt_at_the_right_edge():
    ids, mask = left_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]

    class Tok:
        pad_token_id, eos_token_id = None, 9

    assert pad_token_id(Tok()) == 9 and pad_token_id(None) == 0
