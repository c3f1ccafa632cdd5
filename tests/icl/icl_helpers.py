"""Shared by the ICL tests: a character tokenizer, a small classification task, a tiny study run."""

from __future__ import annotations

from lmscope.icl.runs import run_task
from lmscope.icl.tasks import Example, Task


class CharTokenizer:
    """A tiny stand-in tokenizer: one token per character (ids 3..96), BOS 1. Empty text -> no tokens."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=False):
        class Out:
            input_ids = [3 + ord(c) % 94 for c in text]

        return Out()


def small_task(n=30, n_test=10, **kw) -> Task:
    words = ["ab", "cd", "ef", "gh"]
    examples = tuple(Example(f"x{i}", words[i % 4]) for i in range(n))
    return Task("toy", examples, "I:", "\nO:", label_words=tuple(words), n_test=n_test, separator="\n", **kw)


def tiny_run(view, seeds=(0,), lr=0.05, **kw):
    return run_task(view, CharTokenizer(), small_task(), k=3, seeds=seeds, lr=lr, n_test=4, **kw)
