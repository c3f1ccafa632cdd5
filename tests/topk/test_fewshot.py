"""lmscope.topk.fewshot: the few-shot prompts and their accuracy."""

import doctest
import re

import pytest
import torch
from conftest import make_tiny_model
from topk_helpers import WordTokenizer

from lmscope import ModelView
from lmscope.data.words import ANTONYMS, CAPITALS
from lmscope.topk import fewshot
from lmscope.topk.fewshot import NAMES, fewshot_accuracy, fewshot_sweep, fewshot_tasks, next_tokens
from lmscope.topk.perplexity import use_topk


def test_doctests():
    assert doctest.testmod(fewshot).failed == 0


def test_pair_prompts_follow_the_template_and_end_before_the_right_answer():
    tasks = fewshot_tasks(n_per_task=25, seed=3)
    assert set(tasks) == {"capitals", "antonyms", "recall"} and all(len(v) == 25 for v in tasks.values())
    for name, pairs, template in (("capitals", CAPITALS, r"The capital of (.+?) is"),
                                  ("antonyms", ANTONYMS, r"The opposite of (.+?) is")):
        for prompt, answer in tasks[name]:
            sentences = re.findall(template + r" (.+?)\.", prompt)
            assert len(sentences) == 5, prompt  # five solved examples ...
            assert all(pair in pairs for pair in sentences), prompt
            query = re.fullmatch(r".*\. " + template, prompt).group(1)  # ... then the question, cut before the answer
            assert (query, answer) in pairs
            assert (query, answer) not in sentences  # the answer is not among the examples
    assert tasks["capitals"][0][0].count("The capital of ") == 6


def test_recall_answer_is_the_asked_names_count():
    for prompt, answer in fewshot_tasks(n_per_task=30)["recall"]:
        facts = dict(re.findall(r"(\w+) has (\d+) apples\.", prompt))
        assert len(facts) == 8 and set(facts) <= set(NAMES)
        asked = re.search(r"how many apples does (\w+) have\? Answer: (\w+) has$", prompt)
        assert asked.group(1) == asked.group(2) and facts[asked.group(1)] == answer


def test_prompts_are_deterministic_per_seed_and_task():
    assert fewshot_tasks(10, seed=1) == fewshot_tasks(10, seed=1)
    assert fewshot_tasks(10, seed=1) != fewshot_tasks(10, seed=2)
    assert fewshot_tasks(10, seed=1)["recall"][:5] == fewshot_tasks(5, seed=1)["recall"]


def _direct_accuracy(model, tok, items):
    hits = 0
    for prompt, answer in items:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tok(prompt).input_ids])).logits  # (1, T, V)
        hits += int(logits[0, -1].argmax()) == tok(" " + answer).input_ids[0]
    return hits / len(items)


def test_accuracy_is_a_fraction_and_equals_a_direct_count():
    model, tok = make_tiny_model("llama"), WordTokenizer()
    view = ModelView(model)
    tasks = fewshot_tasks(n_per_task=6)
    acc = fewshot_accuracy(view, tok, tasks)
    assert set(acc) == set(tasks)
    for name, items in tasks.items():
        assert 0 <= acc[name] <= 1 and acc[name] == _direct_accuracy(model, tok, items)
    # answers set to the model's own next token score 1, answers set to another token score 0
    own, other = [], []
    for prompt, _ in tasks["capitals"] + tasks["antonyms"]:
        pred = int(model(input_ids=tok(prompt, return_tensors="pt").input_ids).logits[0, -1].argmax())
        word = tok.decode([pred]).strip()
        if word and tok(" " + word).input_ids[0] == pred:
            own.append((prompt, word))
            other.append((prompt, next(w for w in (" the", " of", " is") if tok(w).input_ids[0] != pred).strip()))
    assert own, "no prompt whose predicted token is a whole word"
    assert fewshot_accuracy(view, tok, {"own": own, "other": other}) == {"own": 1.0, "other": 0.0}


def test_sweep_rows_and_dense_row_equal_accuracy():
    view, tok = ModelView(make_tiny_model("gpt2")), WordTokenizer()
    tasks = fewshot_tasks(n_per_task=3)
    rows = fewshot_sweep(view, tok, tasks, attn_ks=[64], ff_ks=[view.cfg.d_ff, 2])
    dense = fewshot_accuracy(view, tok, tasks)
    assert [(r["mode"], r["k"]) for r in rows] == [("dense", None), ("attention", 64), ("ff", view.cfg.d_ff), ("ff", 2)]
    assert rows[0] == {"mode": "dense", "k": None, **dense}
    assert rows[1] == {"mode": "attention", "k": 64, **dense}  # k >= length: the same predictions
    assert rows[2] == {"mode": "ff", "k": view.cfg.d_ff, **dense}


@pytest.mark.slow
def test_embedded_model_answers_well_known_capitals(smollm):
    model, tok = smollm
    template = fewshot.PAIR_TASKS["capitals"][1]
    shots = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo")]
    items = [(fewshot.pair_prompt([s for s in shots if s != q], q[0], template), q[1]) for q in shots]
    assert fewshot_accuracy(ModelView(model), tok, {"capitals": items}) == {"capitals": 1.0}


def test_batched_prompts_predict_as_one_at_a_time_under_top_k():
    """Same-length prompts run as one batch; with top-k attention or FF switched on, every prediction is
    the one of running its prompt alone, in the order given."""
    view, tok = ModelView(make_tiny_model("llama")), WordTokenizer()
    fewshot_prompts = [p for items in fewshot_tasks(n_per_task=4).values() for p, _ in items]
    prompts = fewshot_prompts + [f"The capital of {country}" for country, _ in CAPITALS[:12]]
    assert len({len(tok(p).input_ids) for p in prompts}) < len(prompts)  # some batches form
    for mode, k in (("dense", None), ("attention", 2), ("ff", 3)):
        with use_topk(view, mode, k), torch.no_grad():
            alone = [int(view.model(input_ids=torch.tensor([tok(p).input_ids])).logits[0, -1].argmax()) for p in prompts]
            assert next_tokens(view, tok, prompts) == alone
    assert len(set(alone[len(fewshot_prompts):])) > 1  # one batch, differing predictions: a mix-up would show
