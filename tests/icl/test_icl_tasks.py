"""Task: the fixed split, seeded demonstrations, validation examples, options, bad input."""

from __future__ import annotations

import pytest
from icl_helpers import small_task

from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.tasks import Example, Task


def test_demonstrations_are_seeded_and_bounded():
    task = get_task("antonyms")
    assert task.demonstrations(8, 0) == task.demonstrations(8, 0)
    assert task.demonstrations(8, 0) != task.demonstrations(8, 1)
    with pytest.raises(ValueError, match=r"only \d+ in its demonstration pool"):
        task.demonstrations(len(task.pool) + 1, 0)


def test_split_partitions_the_examples():
    task = small_task()
    assert len(task.test_set) == 10 and len(task.pool) == 20
    assert sorted(task.test_set + task.pool, key=lambda e: int(e.input[1:])) == list(task.examples)
    assert small_task(split_seed=1).test_set != task.test_set  # the split follows split_seed


def test_validation_is_the_pool_without_the_demonstrations():
    task = small_task()
    demos = task.demonstrations(5, 2)
    val = task.validation(5, 2)
    assert len(demos) == 5 and len(val) == len(task.pool) - 5
    assert not set(val) & set(demos) and set(val) <= set(task.pool)


def test_options_of_open_and_classification_tasks():
    task = small_task()
    ex = task.test_set[0]
    assert task.options(ex) == (["ab", "cd", "ef", "gh"], ["ab", "cd", "ef", "gh"].index(ex.label))
    open_task = Task("open", tuple(Example(f"w{i}", f"y{i}") for i in range(12)), n_test=4)
    opts, answer = open_task.options(open_task.test_set[0])
    assert len(opts) == 4 and len(set(opts)) == 4 and opts[answer] == open_task.test_set[0].label
    assert open_task.options(open_task.test_set[0]) == (opts, answer)  # seeded by task and input


def test_bad_task_input():
    with pytest.raises(ValueError, match="needs more than n_test"):
        small_task(n=10, n_test=10)
    with pytest.raises(ValueError, match="not among label_words"):
        Task("t", (Example("a", "yes"), Example("b", "maybe")), label_words=("yes", "no"), n_test=1)
    with pytest.raises(ValueError, match="non-negative integer"):
        small_task().demonstrations(-1, 0)
