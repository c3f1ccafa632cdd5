"""The built-in tasks: sizes, split, options, the shared word lists, and pinned examples."""

from __future__ import annotations

import hashlib
import json

import pytest

from lmscope.data.words import ANTONYMS, CAPITALS
from lmscope.icl.builtin_tasks import BUILTIN_TASKS, get_task
from lmscope.icl.tasks import Example


def test_builtin_tasks_have_test_set_and_pool():
    assert len(BUILTIN_TASKS) >= 4
    kinds = set()
    for name in BUILTIN_TASKS:
        task = get_task(name)
        assert len(task.test_set) >= 100 and len(task.pool) >= 32, name
        assert not set(task.test_set) & set(task.pool)
        assert len({e.input for e in task.examples}) == len(task.examples), f"{name}: duplicate inputs"
        kinds.add(task.is_classification)
        opts, answer = task.options(task.test_set[0])
        assert opts[answer] == task.test_set[0].label and len(set(opts)) == len(opts)
    assert kinds == {True, False}


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="Unknown task 'nope'.*antonyms"):
        get_task("nope")


def test_open_tasks_are_the_shared_word_lists():
    assert get_task("antonyms").examples == tuple(Example(a, b) for a, b in ANTONYMS)
    assert get_task("country_capital").examples == tuple(Example(a, b) for a, b in CAPITALS)


# Pinned from the tasks as they were before the word lists moved to lmscope.data.words: the examples,
# the split and the demonstrations of every seed must stay exactly these (the chapter's numbers rest on them).
PINNED = {
    "antonyms": dict(n=160, first=("hot", "cold"), last=("dry", "wet"),
                     test=[("less", "more"), ("high", "low"), ("export", "import")],
                     pool=[("pass", "fail"), ("ascend", "descend")],
                     demos=[("easy", "difficult"), ("noisy", "quiet"), ("careful", "careless"), ("together", "apart")],
                     options=(["sad", "more", "peace", "bad"], 1), sha="2ac4cf68af3c9991"),
    "country_capital": dict(n=161, first=("France", "Paris"), last=("Kuwait", "Kuwait City"),
                            test=[("Tanzania", "Dodoma"), ("Czech Republic", "Prague"), ("Jamaica", "Kingston")],
                            pool=[("Sweden", "Stockholm"), ("Colombia", "Bogota")],
                            demos=[("Estonia", "Tallinn"), ("Libya", "Tripoli"), ("North Macedonia", "Skopje"),
                                   ("Ethiopia", "Addis Ababa")],
                            options=(["Freetown", "Managua", "Dodoma", "Warsaw"], 2), sha="7752e931a835da83"),
    "sentiment": dict(n=160, first=("This laptop was superb.", "positive"),
                      last=("The book was boring from start to finish.", "negative"),
                      test=[("The staff left me very unhappy.", "negative"),
                            ("The service is worth every penny.", "positive"),
                            ("This laptop was excellent from start to finish.", "positive")],
                      pool=[("This laptop was awful.", "negative"), ("The book disappointed me badly.", "negative")],
                      demos=[("The hotel room was superb.", "positive"), ("The food made me angry.", "negative"),
                             ("The show is not worth the price.", "negative"),
                             ("The food left me very unhappy.", "negative")],
                      options=(["positive", "negative"], 1), sha="18e103842f733a43"),
    "word_category": dict(n=144, first=("dog", "animal"), last=("slippers", "clothing"),
                          test=[("tomato", "food"), ("butter", "food"), ("penguin", "animal")],
                          pool=[("noodles", "food"), ("strawberry", "food")],
                          demos=[("shirt", "clothing"), ("suit", "clothing"), ("wolf", "animal"),
                                 ("jeans", "clothing")],
                          options=(["animal", "food", "vehicle", "clothing"], 1), sha="8f5f43f98255ee34"),
}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_tasks_are_pinned(name):
    pin, task = PINNED[name], get_task(name)
    pairs = lambda examples: [(e.input, e.label) for e in examples]  # noqa: E731
    assert len(task.examples) == pin["n"]
    assert pairs(task.examples[:1] + task.examples[-1:]) == [pin["first"], pin["last"]]
    assert pairs(task.test_set[:3]) == pin["test"]
    assert pairs(task.pool[:2]) == pin["pool"]
    assert pairs(task.demonstrations(4, 1)) == pin["demos"]
    assert task.options(task.test_set[0]) == pin["options"]
    # every example, the whole test set and the k=8 demonstrations of seeds 0-2, in order
    blob = json.dumps([pairs(es) for es in (task.examples, task.test_set,
                                            *(task.demonstrations(8, s) for s in (0, 1, 2)))])
    assert hashlib.sha256(blob.encode()).hexdigest()[:16] == pin["sha"]


def test_get_task_n_test_keeps_the_split_order():
    task, smaller = get_task("antonyms"), get_task("antonyms", n_test=50)
    assert smaller.n_test == 50 and smaller.test_set == task.test_set[:50]
    assert get_task(task) is task
