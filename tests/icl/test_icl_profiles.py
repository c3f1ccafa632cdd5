"""PROFILES: every profile names the same run sizes over real tasks, read through lmscope.core.profiles.settings."""

from __future__ import annotations

import pytest

from lmscope.core.profiles import settings
from lmscope.icl.ablation import FACTORS
from lmscope.icl.builtin_tasks import BUILTIN_TASKS, get_task
from lmscope.icl.profiles import PROFILES
from lmscope.icl.text_tasks import TEXT_TASKS


def test_profiles_name_the_same_sizes_and_real_tasks():
    assert set(PROFILES) == {"quick", "full", "paper"}
    keys = set(PROFILES["full"])
    for p in PROFILES.values():
        assert set(p) == keys
        assert set(p["tasks"]) <= set(TEXT_TASKS) and set(p["word_tasks"]) <= set(BUILTIN_TASKS)
        assert p["ablation_task"] in TEXT_TASKS and set(p["ablation_factors"]) <= set(FACTORS)
        assert set(p["control_tasks"]) <= set(p["tasks"])
        assert p["lr_grid"] is None or len(p["lr_grid"]) >= 3
    full = PROFILES["full"]
    assert full["tasks"] == TEXT_TASKS and full["k"] == 32 and full["seeds"] == (0, 1, 2)
    assert full["ablation_seeds"] == (0, 1, 2) and set(full["ablation_factors"]) == set(FACTORS)
    assert PROFILES["paper"]["n_test"] == 200
    for name in TEXT_TASKS:  # the paper profile's sizes exist: 200 test examples, k = 32 from the pool
        task = get_task(name)
        assert len(task.test_set) == 200 and len(task.validation(32, 0)) >= PROFILES["paper"]["lr_n_eval"]
    quick = settings(PROFILES, "quick", tasks=None, seeds=(3,))
    assert quick["tasks"] == ("wordnet_category",) and quick["seeds"] == (3,) and quick["n_test"] == 2
    with pytest.raises(ValueError, match="Unknown profile"):
        settings(PROFILES, "medium")
