"""A few-shot task: its examples, its two-line template, its split and how predictions are scored.

A :class:`Task` is a list of ``(input, label)`` examples and a two-line template::

    Word: hot            <- input_prefix + " " + input
    Antonym: cold        <- output_prefix + " " + label

Demonstrations are separated by a blank line. The examples are split once, with a
fixed shuffle, into a *demonstration pool* and a *test set* (``n_test`` examples);
:meth:`Task.demonstrations` draws ``k`` of the pool per seed.

Classification tasks have fixed ``label_words`` (every test example is scored
against all of them); open tasks (antonyms, capitals) score the right label
against ``n_options - 1`` distractors drawn from the task's other labels.

Prompts are built from a task by :mod:`lmscope.icl.prompts`; the built-in tasks are in
:mod:`lmscope.icl.builtin_tasks`, tasks from files and Hugging Face datasets in
:mod:`lmscope.icl.task_files`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    input: str
    label: str


@dataclass(frozen=True)
class Task:
    """A few-shot task: examples, template, and how predictions are scored."""

    name: str
    examples: tuple[Example, ...]
    input_prefix: str = "Input:"
    output_prefix: str = "\nOutput:"
    label_words: tuple[str, ...] | None = None  # fixed options (classification); None: open task
    n_options: int = 4  # open tasks: right label + n_options - 1 distractors
    n_test: int = 100
    separator: str = "\n\n"
    description: str = ""
    split_seed: int = 0

    def __post_init__(self):
        if len(self.examples) < self.n_test + 1:
            raise ValueError(
                f"Task '{self.name}' has {len(self.examples)} examples; it needs more than n_test={self.n_test} "
                "(the rest are the demonstration pool). Lower n_test or add examples."
            )
        if self.label_words is not None:
            unknown = sorted({e.label for e in self.examples} - set(self.label_words))
            if unknown:
                raise ValueError(f"Task '{self.name}': labels {unknown} are not among label_words {self.label_words}.")

    @property
    def is_classification(self) -> bool:
        return self.label_words is not None

    def _split_order(self) -> list[int]:
        """Indices of the examples after the fixed split shuffle: the first ``n_test`` are the test set."""
        order = list(range(len(self.examples)))
        random.Random(self.split_seed).shuffle(order)
        return order

    @property
    def test_set(self) -> list[Example]:
        return [self.examples[i] for i in self._split_order()[: self.n_test]]

    @property
    def pool(self) -> list[Example]:
        """Examples available as demonstrations (never in the test set)."""
        return [self.examples[i] for i in self._split_order()[self.n_test :]]

    def demonstrations(self, k: int, seed: int) -> list[Example]:
        """The first ``k`` pool examples after a shuffle seeded by ``seed``."""
        pool = self.pool
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}.")
        if k > len(pool):
            raise ValueError(
                f"k={k} demonstrations asked for, but task '{self.name}' has only {len(pool)} in its "
                f"demonstration pool ({len(self.examples)} examples, {self.n_test} held out for testing). "
                f"Use k <= {len(pool)} or a smaller n_test."
            )
        order = list(range(len(pool)))
        random.Random(1000 + seed).shuffle(order)
        return [pool[i] for i in order[:k]]

    def validation(self, k: int, seed: int) -> list[Example]:
        """Pool examples not drawn as demonstrations for (k, seed): for choosing a learning rate."""
        demos = set(self.demonstrations(k, seed))
        return [e for e in self.pool if e not in demos]

    def options(self, example: Example) -> tuple[list[str], int]:
        """Label options for ``example`` and the index of the right one."""
        if self.label_words is not None:
            return list(self.label_words), self.label_words.index(example.label)
        others = sorted({e.label for e in self.examples} - {example.label})
        rng = random.Random(f"{self.name}:{example.input}")
        options = rng.sample(others, min(self.n_options - 1, len(others))) + [example.label]
        rng.shuffle(options)
        return options, options.index(example.label)
