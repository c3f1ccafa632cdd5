"""Sentence-level classification tasks from real text that Debian and PyPI packages ship (the paper-like group).

Deutch et al. classify sentences (SST-2, MR, Subj, AGNews, ...) with one-line templates such as
``Sentence: {x} Label: {y}`` and fixed label words. These three tasks do the same on text that
installs offline (``make setup``):

* ``fortune_topic``     a quotation from the Debian ``fortunes`` files -> its file's topic
  (Computers / Politics / Science / Work; 100 each);
* ``fortune_sentiment`` a quotation -> Negative / Positive, labelled by the VADER rule-based
  sentiment analyser (PyPI ``vaderSentiment``; compound score >= 0.6 or <= -0.6; 150 each).
  The labels are VADER's, not people's: a lexicon classifier's reading of real text;
* ``wordnet_category``  a WordNet noun definition (Debian ``wordnet``) -> its lexicographer category
  (Animal / Object (noun.artifact) / Food / Plant; 100 each); leading domain tags like
  ``(botany)`` are removed so the definition does not name its class.

Every task has 200 test examples and the rest (>= 100) as the demonstration pool; examples are
drawn once with a fixed seed. Demonstrations are separated by a newline (the paper's code
separates them by its dictionary's end-of-line token).

>>> task = text_task("fortune_topic")     # doctest: +SKIP
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from lmscope.data.fortunes import fortunes
from lmscope.data.wordnet_glosses import glosses
from lmscope.icl.tasks import Example, Task

TEXT_TASKS = ("fortune_topic", "fortune_sentiment", "wordnet_category")
N_TEST = 200
_TOPICS = {"Computers": "computers", "Politics": "politics", "Science": "science", "Work": "work"}
_SENTIMENT_TOPICS = ("people", "work", "wisdom", "platitudes", "men-women", "love", "miscellaneous", "art")
_CATEGORIES = {"Animal": "noun.animal", "Object": "noun.artifact", "Food": "noun.food", "Plant": "noun.plant"}


def _draw(items: list, n: int, seed: str) -> list:
    if len(items) < n:
        raise ValueError(f"Only {len(items)} texts for {seed}, {n} needed.")
    return random.Random(seed).sample(items, n)


def _fortune_topic() -> Task:
    examples = [Example(text, label) for label, topic in _TOPICS.items()
                for text in _draw(fortunes(topic), 100, f"fortune_topic:{topic}")]
    return Task("fortune_topic", tuple(examples), "Quote:", " Topic:", label_words=tuple(_TOPICS), n_test=N_TEST,
                separator="\n", description="quotation -> Computers / Politics / Science / Work (Debian fortunes)")


@lru_cache(maxsize=1)
def _vader_scored() -> tuple[tuple[float, str], ...]:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:
        raise ValueError("fortune_sentiment needs the PyPI package vaderSentiment: "
                         "`pip install vaderSentiment`.") from err
    analyser = SentimentIntensityAnalyzer()
    texts = list(dict.fromkeys(t for topic in _SENTIMENT_TOPICS for t in fortunes(topic, max_words=25)))
    return tuple((analyser.polarity_scores(t)["compound"], t) for t in texts)


def _fortune_sentiment(threshold: float = 0.6) -> Task:
    scored = _vader_scored()
    pos = [t for c, t in scored if c >= threshold]
    neg = [t for c, t in scored if c <= -threshold]
    examples = ([Example(t, "Negative") for t in _draw(neg, 150, "fortune_sentiment:neg")]
                + [Example(t, "Positive") for t in _draw(pos, 150, "fortune_sentiment:pos")])
    return Task("fortune_sentiment", tuple(examples), "Sentence:", " Label:", label_words=("Negative", "Positive"),
                n_test=N_TEST, separator="\n",
                description="quotation -> Negative / Positive (labels: VADER compound >= 0.6 / <= -0.6)")


def _definition(text: str) -> str:
    return re.sub(r"^\s*\([^)]*\)\s*", "", text).strip()


def _wordnet_category() -> Task:
    examples = []
    for label, category in _CATEGORIES.items():
        defs = list(dict.fromkeys(_definition(d) for _, d in glosses(category)))
        defs = [d for d in defs if len(d.split()) >= 4]
        examples += [Example(d, label) for d in _draw(defs, 100, f"wordnet_category:{category}")]
    return Task("wordnet_category", tuple(examples), "Definition:", " Category:", label_words=tuple(_CATEGORIES),
                n_test=N_TEST, separator="\n",
                description="WordNet noun definition -> Animal / Object / Food / Plant (Debian wordnet)")


def text_task(name: str) -> Task:
    """One of :data:`TEXT_TASKS` (ValueError naming them otherwise)."""
    builders = {"fortune_topic": _fortune_topic, "fortune_sentiment": _fortune_sentiment,
                "wordnet_category": _wordnet_category}
    if name not in builders:
        raise ValueError(f"Unknown text task '{name}'; choose from {', '.join(TEXT_TASKS)}.")
    return builders[name]()
