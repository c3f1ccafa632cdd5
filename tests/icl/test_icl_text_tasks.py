"""The sentence tasks from packaged real text: sizes, multi-token inputs, fixed balanced labels, the text is the
packages' own, and a clear error when a package is missing."""

from __future__ import annotations

from collections import Counter

import pytest

import lmscope.data.fortunes as fortunes_mod
import lmscope.data.wordnet_glosses as wordnet_mod
from lmscope.data.fortunes import fortunes
from lmscope.data.wordnet_glosses import glosses
from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.text_tasks import TEXT_TASKS, text_task


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_sentence_tasks_are_paper_sized(name):
    task = get_task(name)
    assert len(task.test_set) == 200 and len(task.pool) >= 100 and len(task.validation(32, 2)) >= 64
    assert task.is_classification and task.separator == "\n" and "\n" not in task.input_prefix + task.output_prefix
    counts = Counter(e.label for e in task.examples)
    assert set(counts) == set(task.label_words) and len(set(counts.values())) == 1  # balanced
    words = [len(e.input.split()) for e in task.examples]
    assert min(words) >= 3 and sum(words) / len(words) > 8  # multi-token inputs
    assert len({e.input for e in task.examples}) == len(task.examples)
    assert text_task(name).examples == task.examples  # drawn with fixed seeds


def test_texts_are_the_packages_own():
    import re

    raw = re.sub(r"\s+", " ", (fortunes_mod.FORTUNE_DIR / "science").read_text(errors="replace"))
    science = fortunes("science")
    assert len(science) > 300 and all(t in raw or t.split(" -- ")[0] in raw for t in science[:50])
    task = get_task("fortune_topic")
    assert {e.input for e in task.examples if e.label == "Science"} <= set(science)
    animals = {d for _, d in glosses("noun.animal")}
    wn = get_task("wordnet_category")
    animal_defs = [e.input for e in wn.examples if e.label == "Animal"]
    assert all(d in animals or any(a.endswith(d) for a in animals) for d in animal_defs)
    assert not any(e.input.startswith("(") for e in wn.examples)  # domain tags like "(botany)" removed


def test_missing_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(fortunes_mod, "FORTUNE_DIR", tmp_path / "none")
    with pytest.raises(fortunes_mod.FortunesMissingError, match="apt-get install fortunes"):
        fortunes("science")
    monkeypatch.setattr(wordnet_mod, "WORDNET_DIR", tmp_path / "none")
    wordnet_mod._synsets.cache_clear()  # the database is parsed once per process
    try:
        with pytest.raises(wordnet_mod.WordNetMissingError, match="apt-get install wordnet"):
            glosses("noun.animal")
    finally:
        wordnet_mod._synsets.cache_clear()
    with pytest.raises(ValueError, match="Unknown WordNet category"):
        glosses("noun.animals")
    with pytest.raises(ValueError, match="Unknown text task"):
        text_task("sst2")
