"""The four built-in tasks (written for this project) and :func:`get_task`, which finds any task by name.

``antonyms`` and ``country_capital`` are open tasks built from the word pairs of
:mod:`lmscope.data.words` (the lists the top-k study's few-shot prompts read too);
``sentiment`` (short template reviews, positive / negative) and ``word_category``
(animal / food / vehicle / clothing) are classifications. Their templates are one line, as the
paper's (``Word: hot Antonym: cold``), demonstrations separated by a newline.
The paper-like sentence tasks from packaged real text are in :mod:`lmscope.icl.text_tasks`;
:func:`get_task` finds those too.

>>> task = get_task("antonyms")          # doctest: +SKIP
>>> task.test_set[0]                     # doctest: +SKIP
Example(input='less', label='more')
"""

from __future__ import annotations

import random

from lmscope.data.words import ANTONYMS, CAPITALS
from lmscope.icl.task_files import HF_TASKS, load_hf_task
from lmscope.icl.tasks import Example, Task
from lmscope.icl.text_tasks import TEXT_TASKS, text_task

BUILTIN_TASKS = ("antonyms", "country_capital", "sentiment", "word_category")

_REVIEW_SUBJECTS = [
    "The movie", "The food", "This phone", "The hotel room", "The service", "The book", "This laptop",
    "The concert", "The coffee", "The staff", "This game", "The restaurant", "The headphones", "The show",
    "The pizza",
]
_POSITIVE = [
    "was wonderful", "was absolutely delightful", "exceeded all my expectations", "was a real pleasure",
    "made my day", "was excellent from start to finish", "is worth every penny", "was fantastic",
    "left me very happy", "was great and I loved it", "was superb", "is simply brilliant",
]
_NEGATIVE = [
    "was terrible", "was a complete waste of money", "disappointed me badly", "was awful", "made me angry",
    "was boring from start to finish", "is not worth the price", "was horrible", "left me very unhappy",
    "was bad and I hated it", "was dreadful", "is simply useless",
]

_CATEGORIES = {
    "animal": "dog cat horse cow lion tiger elephant rabbit mouse wolf bear fox deer monkey giraffe zebra sheep goat "
    "pig eagle owl shark whale dolphin snake frog turtle camel kangaroo penguin parrot duck hen squirrel bee spider",
    "food": "bread cheese apple banana rice pasta pizza soup salad carrot potato tomato orange grape cake cookie "
    "butter egg steak sandwich noodles yogurt honey lemon cherry strawberry onion garlic pie pancake cereal peach "
    "pear mango beans chocolate",
    "vehicle": "car bus truck bicycle train airplane helicopter boat ship motorcycle scooter tractor van taxi subway "
    "tram ambulance submarine rocket canoe yacht jeep limousine sled skateboard ferry jet kayak minivan wagon "
    "trolley glider cart raft sailboat bulldozer",
    "clothing": "shirt pants dress skirt jacket coat sweater hat scarf gloves socks shoes boots belt tie blouse "
    "jeans shorts hoodie vest uniform pajamas sandals sneakers cap suit robe gown mittens apron tuxedo bikini "
    "overalls cardigan raincoat slippers",
}


def _pair_examples(pairs: tuple[tuple[str, str], ...]) -> tuple[Example, ...]:
    return tuple(Example(a, b) for a, b in pairs)


def _review_examples() -> tuple[Example, ...]:
    """80 positive and 80 negative template reviews (subject + predicate), drawn with a fixed seed."""
    rng = random.Random(7)
    out = []
    for label, predicates in (("positive", _POSITIVE), ("negative", _NEGATIVE)):
        combos = [f"{s} {p}." for s in _REVIEW_SUBJECTS for p in predicates]
        out += [Example(text, label) for text in rng.sample(combos, 80)]
    return tuple(out)


def _category_examples() -> tuple[Example, ...]:
    return tuple(Example(w, label) for label, words in _CATEGORIES.items() for w in words.split())


def _builtin_task(name: str) -> Task:
    if name == "antonyms":
        return Task(name, _pair_examples(ANTONYMS), "Word:", " Antonym:", separator="\n",
                    description="word -> its antonym (open: right answer vs 3 distractors)")
    if name == "country_capital":
        return Task(name, _pair_examples(CAPITALS), "Country:", " Capital:", separator="\n",
                    description="country -> its capital city (open: right answer vs 3 distractors)")
    if name == "sentiment":
        return Task(name, _review_examples(), "Review:", " Sentiment:", separator="\n",
                    label_words=("positive", "negative"),
                    description="short review -> positive / negative (classification)")
    if name == "word_category":
        return Task(name, _category_examples(), "Word:", " Category:", separator="\n", label_words=tuple(_CATEGORIES),
                    description="word -> animal / food / vehicle / clothing (classification)")
    raise KeyError(name)


def get_task(name: str | Task, n_test: int | None = None) -> Task:
    """A built-in task or one of the paper's HF tasks by name (a :class:`Task` passes through).

    ``n_test``: a different test-set size (the split shuffle stays the same).
    """
    if isinstance(name, Task):
        task = name
    elif name in BUILTIN_TASKS:
        task = _builtin_task(name)
    elif name in TEXT_TASKS:
        task = text_task(name)
    elif name in HF_TASKS:
        task = load_hf_task(name)
    else:
        raise ValueError(
            f"Unknown task '{name}'. Built-in tasks: {', '.join(BUILTIN_TASKS)}; sentence tasks from packaged text: "
            f"{', '.join(TEXT_TASKS)}; paper tasks (need Hugging Face "
            f"datasets and a hub): {', '.join(HF_TASKS)}; or load your own with load_task_file(path)."
        )
    if n_test is not None and n_test != task.n_test:
        task = Task(**{**task.__dict__, "n_test": n_test})
    return task
