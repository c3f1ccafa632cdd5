"""PromptBuilder: exact spans, label and context checks; option_logprobs against brute force."""

from __future__ import annotations

import pytest
import torch
from icl_helpers import CharTokenizer, small_task

from lmscope.icl.prompts import PromptBuilder, option_logprobs
from lmscope.icl.tasks import Example, Task


def test_prompt_spans_are_exact():
    task = small_task()
    tok = CharTokenizer()
    b = PromptBuilder(task, tok)
    ex = task.test_set[0]
    demos = task.demonstrations(3, 0)
    p = b.prompt(ex, demos)
    s, e = p.input_span
    assert p.ids[s:e] == tok(" " + ex.input).input_ids
    assert p.ids[: 1] == [1] and p.ids[e:] == tok("\nO:").input_ids
    assert p.options[p.answer] == tok(" " + ex.label).input_ids
    ids, label_pos = b.training_sequence(demos[0])
    assert [ids[i] for i in label_pos] == tok(" " + demos[0].label).input_ids


def test_prompt_is_bos_demonstrations_query():
    task = small_task()
    tok = CharTokenizer()
    b = PromptBuilder(task, tok)
    ex, demos = task.test_set[1], task.demonstrations(2, 0)
    text = "".join(f"I: {d.input}\nO: {d.label}\n" for d in demos) + f"I: {ex.input}\nO:"
    assert b.prompt(ex, demos).ids == [1] + tok(text).input_ids


def test_label_words_that_tokenize_to_nothing():
    task = Task("bad", tuple(Example(f"x{i}", ["yes", " "][i % 2]) for i in range(20)), label_words=("yes", " "),
                n_test=5)
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        PromptBuilder(task, CharTokenizer())


def test_k_too_large_for_the_context_says_how_many_fit():
    task = small_task()
    b = PromptBuilder(task, CharTokenizer(), max_positions=64)
    ex = task.test_set[0]
    demos = task.demonstrations(8, 0)
    fit = b.max_fitting_k(ex, demos)
    assert 0 < fit < 8
    with pytest.raises(ValueError, match=f"at most {fit} of these demonstrations fit"):
        b.prompt(ex, demos)
    assert len(b.prompt(ex, demos[:fit]).ids) <= 64


def test_option_logprobs_is_the_mean_token_logprob():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g, dtype=torch.float64)  # two options, up to 3 tokens each
    options = [[4, 7], [1, 2, 3]]
    logp = logits.log_softmax(-1)
    ref = [(logp[0, 0, 4] + logp[0, 1, 7]) / 2, (logp[1, 0, 1] + logp[1, 1, 2] + logp[1, 2, 3]) / 3]
    torch.testing.assert_close(option_logprobs(logits, 5, options), torch.stack(ref).float())
    single = option_logprobs(logits[:1, :1], 5, [[3], [9]])  # one row serves one-token options
    torch.testing.assert_close(single, logp[0, 0, [3, 9]].float())
