"""Records at the paper's read position and key set (GiilDe/ft-vs-icl fs_eval.py), on hand-built prompts;
the shared-context cache gives the same records as whole runs."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from icl_helpers import CharTokenizer

from lmscope import ModelView
from lmscope.core.hooks import hook_names
from lmscope.icl.prompts import PromptBuilder
from lmscope.icl.records import key_span, read_position, record_run, record_runs
from lmscope.icl.tasks import Example, Task


def one_line_task() -> Task:
    examples = tuple(Example(f"w{i}", ["ab", "cd"][i % 2]) for i in range(40))
    return Task("one_line", examples, "S:", " L:", label_words=("ab", "cd"), n_test=10, separator="\n")


def test_read_position_and_keys_on_a_hand_built_prompt():
    tok, task = CharTokenizer(), one_line_task()
    b = PromptBuilder(task, tok)
    ex, demos = Example("w5", "cd"), [Example("w1", "cd"), Example("w2", "ab")]
    p = b.prompt(ex, demos)
    context = [1] + tok("S: w1 L: cd\nS: w2 L: ab\n").input_ids  # BOS + demonstrations (the paper's context_len)
    query = tok("S: w5 L:").input_ids  # template + test input
    assert p.ids == context + query and p.query_start == len(context)
    assert p.options[0] == tok(" ab").input_ids  # the first option, whatever the answer
    # the paper: option 0's token appended, records at position -1, scores over keys context_len: (inclusive)
    assert read_position(p, "label") == len(p.ids)
    assert key_span(p, "label", "query") == (len(context), len(p.ids) + 1)
    assert read_position(p, "last") == len(p.ids) - 1
    assert key_span(p, "last", "query") == (len(context), len(p.ids))
    assert key_span(p, "label", "input") == p.input_span == (len(context) + 2, len(context) + 5)
    zs = b.prompt(ex)
    assert zs.query_start == 1 and zs.ids == [1] + query  # zero-shot: the context is BOS alone


@pytest.mark.parametrize("read_at", ["label", "last"])
def test_records_are_the_attention_at_the_read_position(read_at):
    view = ModelView(make_tiny_model("llama"))
    task = one_line_task()
    b = PromptBuilder(task, CharTokenizer())
    p = b.prompt(task.test_set[0], task.demonstrations(3, 0))
    rec = record_run(view, p, read_at=read_at)
    seq = p.ids + ([p.options[0][0]] if read_at == "label" else [])
    L = view.cfg.n_layers
    names = hook_names("attn_out", range(L)) + hook_names("attn_scores", range(L))
    _, cache = view.run_with_cache(torch.tensor([seq]), names)
    for l in range(L):
        torch.testing.assert_close(rec.attn_out[l], cache[names[l]][0, -1].float())
        torch.testing.assert_close(rec.scores[l], cache[names[L + l]][0, :, -1, p.query_start:].float())
    # the option scores come from the prompt without the appended token: the same either way
    torch.testing.assert_close(rec.logprobs, record_run(view, p, hooks=False, read_at="last").logprobs)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_shared_context_cache_gives_the_same_records(family):
    view = ModelView(make_tiny_model(family))
    task = one_line_task()
    b = PromptBuilder(task, CharTokenizer())
    demos = task.demonstrations(2, 1)
    prompts = [b.prompt(e, demos) for e in task.test_set[:3]]
    for read_at, keys in (("label", "query"), ("last", "input")):
        cached = record_runs(view, prompts, read_at=read_at, keys=keys, min_prefix=1)
        for p, c in zip(prompts, cached):
            whole = record_run(view, p, read_at=read_at, keys=keys)
            torch.testing.assert_close(c.attn_out, whole.attn_out)
            torch.testing.assert_close(c.scores, whole.scores)
            torch.testing.assert_close(c.logprobs, whole.logprobs)


def test_bad_reading_names_the_choices():
    view = ModelView(make_tiny_model("llama"))
    task = one_line_task()
    p = PromptBuilder(task, CharTokenizer()).prompt(task.test_set[0])
    with pytest.raises(ValueError, match="read_at must be one of"):
        record_run(view, p, read_at="first")
    with pytest.raises(ValueError, match="keys must be one of"):
        record_run(view, p, keys="all")
