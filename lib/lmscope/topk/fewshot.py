"""Few-shot prompts whose answer the next token gives, and their accuracy under top-k.

Three tasks: *capitals* and *antonyms* (five solved examples, then a sixth to complete, pairs from
:mod:`lmscope.data.words`) and *recall* (a list of "name has N apples", then a question about one
name: the answer is only in the context, so it needs attention to one specific earlier token).

>>> tasks = fewshot_tasks(n_per_task=2)
>>> prompt, answer = tasks["capitals"][0]
>>> prompt.startswith("The capital of ") and prompt.endswith(" is")
True
"""

from __future__ import annotations

import random
from typing import Iterable

import torch

from lmscope.core.view import ModelView
from lmscope.data.words import ANTONYMS, CAPITALS
from lmscope.topk.perplexity import sweep

#: task -> (pairs, template with two slots); a prompt is 5 filled templates and a sixth without its answer
PAIR_TASKS = {
    "capitals": (CAPITALS, "The capital of {} is {}."),
    "antonyms": (ANTONYMS, "The opposite of {} is {}."),
}
#: Names of the recall task.
NAMES = ("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen", "Liam")
N_SHOTS = 5  # solved examples before the question (pair tasks)
N_FACTS = 8  # "name has N apples" sentences (recall)

Tasks = dict[str, list[tuple[str, str]]]


def pair_prompt(shots: list[tuple[str, str]], query: str, template: str) -> str:
    """The solved ``shots`` as filled templates, then ``template`` for ``query`` cut before its answer.

    >>> pair_prompt([("France", "Paris")], "Japan", "The capital of {} is {}.")
    'The capital of France is Paris. The capital of Japan is'
    """
    return " ".join(template.format(a, b) for a, b in shots) + " " + template.format(query, "").rstrip(" .")


def recall_prompt(names: list[str], counts: list[str], asked: int) -> str:
    """'Alice has 12 apples. ... Question: how many apples does <names[asked]> have? Answer: <name> has'."""
    facts = " ".join(f"{n} has {m} apples." for n, m in zip(names, counts))
    who = names[asked]
    return f"{facts} Question: how many apples does {who} have? Answer: {who} has"


def fewshot_tasks(n_per_task: int = 20, seed: int = 0) -> Tasks:
    """``n_per_task`` prompts per task: {'capitals', 'antonyms', 'recall'} -> [(prompt, answer)].

    Each task draws from its own random stream (seeded by ``seed`` and the task's name), so the
    prompts of one task do not depend on the word lists of another.
    """
    tasks: Tasks = {}
    for name, (pairs, template) in PAIR_TASKS.items():
        rng = random.Random(f"{seed}/{name}")
        tasks[name] = []
        for _ in range(n_per_task):
            *shots, (query, answer) = rng.sample(pairs, N_SHOTS + 1)
            tasks[name].append((pair_prompt(shots, query, template), answer))
    rng = random.Random(f"{seed}/recall")
    tasks["recall"] = []
    for _ in range(n_per_task):
        names = rng.sample(NAMES, N_FACTS)
        counts = [str(rng.randint(10, 99)) for _ in names]
        asked = rng.randrange(len(names))
        tasks["recall"].append((recall_prompt(names, counts, asked), counts[asked]))
    return tasks


@torch.no_grad()
def next_tokens(view: ModelView, tokenizer, prompts: list[str], batch_size: int = 32) -> list[int]:
    """The greedy next token id of each prompt, in order.

    Prompts of the same token length run together, up to ``batch_size`` at a time: no padding, so each
    prompt's logits are those of running it alone (up to float round-off).
    """
    by_length: dict[int, list[tuple[int, list[int]]]] = {}
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt).input_ids
        by_length.setdefault(len(ids), []).append((i, ids))
    out = [0] * len(prompts)
    for group in by_length.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            ids = torch.tensor([c[1] for c in chunk], device=view.device)  # (b, T)
            logits = view.model(input_ids=ids, **view.last_logits_only()).logits  # (b, 1 or T, V)
            for (i, _), pred in zip(chunk, logits[:, -1].argmax(-1).tolist()):
                out[i] = pred
    return out


def fewshot_accuracy(view: ModelView, tokenizer, tasks: Tasks) -> dict[str, float]:
    """Per task, the fraction of prompts whose greedy next token is the first token of ``" " + answer``."""
    accuracy = {}
    for name, items in tasks.items():
        preds = next_tokens(view, tokenizer, [prompt for prompt, _ in items])
        targets = [tokenizer(" " + answer, add_special_tokens=False).input_ids[0] for _, answer in items]
        accuracy[name] = sum(p == t for p, t in zip(preds, targets)) / len(items)
    return accuracy


def fewshot_sweep(view: ModelView, tokenizer, tasks: Tasks, attn_ks: Iterable[int] = (),
                  ff_ks: Iterable[int] = ()) -> list[dict]:
    """Rows ``{'mode', 'k', task: accuracy, ...}`` of :func:`fewshot_accuracy`: dense, then top-k attention
    per k in ``attn_ks``, then top-k FF per k in ``ff_ks``."""
    return sweep(view, lambda: fewshot_accuracy(view, tokenizer, tasks), attn_ks, ff_ks)
