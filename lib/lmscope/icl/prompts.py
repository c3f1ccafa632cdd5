"""Prompts as token ids, and the score of each label option.

:class:`PromptBuilder` tokenises a task's pieces (prefixes, inputs, labels, separator)
separately and concatenates them, so the span of the test input inside a prompt is known
exactly. :func:`option_logprobs` scores every label option by its mean token log-probability.

Spans, as the paper's code (``fewshot_task.py``) has them: the *context* is BOS + the
demonstrations (each followed by the separator); the *query* is everything after it, the
template and the test input (``query_start`` onwards). The record positions that read a
prompt (:mod:`lmscope.icl.records`) append the first option's first token to the query.

>>> builder = PromptBuilder(task, tokenizer, view.cfg.n_ctx)        # doctest: +SKIP
>>> prompt = builder.prompt(task.test_set[0], task.demonstrations(8, seed=0))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.icl.tasks import Example, Task


@dataclass
class Prompt:
    """Token ids of a prompt ending right before the label, and where the test input sits."""

    ids: list[int]
    input_span: tuple[int, int]  # [start, end) of the test input's tokens in ids
    options: list[list[int]] = field(default_factory=list)  # token ids of each label option
    answer: int = 0  # index of the right option
    query_start: int = 1  # first position after BOS + demonstrations (the paper's context_len)

    @property
    def last(self) -> int:
        return len(self.ids) - 1


class PromptBuilder:
    """Tokenises a task's pieces separately and concatenates them, so every span is exact.

    ``max_positions``: the model's context (``view.cfg.n_ctx``); a prompt longer than it is a
    ValueError that says how many demonstrations fit. None: no limit.
    """

    def __init__(self, task: Task, tokenizer, max_positions: int | None = None):
        self.task, self.tok = task, tokenizer
        self.max_positions = max_positions
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.bos = [] if bos is None else [bos]
        self._input_prefix = self._encode(task.input_prefix, "input_prefix")
        self._output_prefix = self._encode(task.output_prefix, "output_prefix")
        self._separator = self._encode(task.separator, "separator")
        if task.label_words is not None:
            for word in task.label_words:
                self.label_ids(word)

    def _encode(self, text: str, what: str) -> list[int]:
        ids = self.tok(text, add_special_tokens=False).input_ids
        if not ids and text:
            raise ValueError(f"Task '{self.task.name}': {what} {text!r} tokenizes to nothing.")
        return ids

    def label_ids(self, label: str) -> list[int]:
        ids = self.tok(" " + label.strip(), add_special_tokens=False).input_ids
        if not label.strip() or not ids:
            raise ValueError(
                f"Task '{self.task.name}': label word {label!r} tokenizes to nothing; every label needs "
                "at least one token. Fix the task's label words."
            )
        return ids

    def input_ids(self, text: str) -> list[int]:
        ids = self.tok(" " + text.strip(), add_special_tokens=False).input_ids
        if not ids:
            raise ValueError(f"Task '{self.task.name}': the input {text!r} tokenizes to nothing.")
        return ids

    def query(self, example: Example) -> tuple[list[int], list[int]]:
        """(prefix + input + output prefix) ids and the input's own ids."""
        x = self.input_ids(example.input)
        return self._input_prefix + x + self._output_prefix, x

    def demonstration(self, example: Example) -> list[int]:
        """One demonstration block with its separator: prefix, input, output prefix, label, separator."""
        q, _ = self.query(example)
        return q + self.label_ids(example.label) + self._separator

    def training_sequence(self, example: Example) -> tuple[list[int], list[int]]:
        """A finetuning sequence BOS + template(input) + label, and the positions of the label tokens."""
        q, _ = self.query(example)
        y = self.label_ids(example.label)
        ids = self.bos + q + y
        return ids, list(range(len(ids) - len(y), len(ids)))

    def prompt(self, example: Example, demos: list[Example] = ()) -> Prompt:
        """BOS + demonstrations + the test query, ready for its label."""
        ids = list(self.bos)
        for d in demos:
            ids += self.demonstration(d)
        q, x = self.query(example)
        query_start = len(ids)
        start = query_start + len(self._input_prefix)
        ids += q
        options, answer = self.task.options(example)
        option_ids = [self.label_ids(o) for o in options]
        need = len(ids) + max(len(o) for o in option_ids)
        if self.max_positions is not None and need > self.max_positions:
            fit = self.max_fitting_k(example, demos)
            raise ValueError(
                f"k={len(demos)} demonstrations make a {need}-token prompt, longer than the model's "
                f"context of {self.max_positions} positions: at most {fit} of these demonstrations fit. "
                f"Use k <= {fit}."
            )
        return Prompt(ids, (start, start + len(x)), option_ids, answer, query_start)

    def max_fitting_k(self, example: Example, demos: list[Example]) -> int:
        """How many of ``demos`` (in order) fit in the context with ``example``'s query and label."""
        q, _ = self.query(example)
        longest = max(len(self.label_ids(o)) for o in self.task.options(example)[0])
        used = len(self.bos) + len(q) + longest
        n = 0
        for d in demos:
            used += len(self.demonstration(d))
            if self.max_positions is not None and used > self.max_positions:
                break
            n += 1
        return n


def option_logprobs(logits: torch.Tensor, prompt_len: int, options: list[list[int]]) -> torch.Tensor:
    """Mean log-probability of each option's tokens.

    ``logits`` (n_rows, T_keep, d_vocab) are the logits of positions ``prompt_len - 1`` onwards,
    one row per option (or a single row when every option is one token). Returns (n_options,).
    """
    logp = logits.float().log_softmax(-1)
    out = []
    for i, option in enumerate(options):
        row = logp[i if logp.shape[0] > 1 else 0]
        out.append(torch.stack([row[j, t] for j, t in enumerate(option)]).mean())
    return torch.stack(out)
