"""PROFILES: both profiles name the same run sizes, read through lmscope.core.profiles.settings."""

from __future__ import annotations

import pytest

from lmscope.core.profiles import settings
from lmscope.icl.builtin_tasks import BUILTIN_TASKS
from lmscope.icl.profiles import PROFILES


def test_profiles_name_the_same_sizes_and_real_tasks():
    assert set(PROFILES) == {"quick", "full"}
    assert set(PROFILES["quick"]) == set(PROFILES["full"]) == {"tasks", "k", "seeds", "n_test", "control_tasks",
                                                              "control_n_test"}
    for p in PROFILES.values():
        assert set(p["tasks"]) <= set(BUILTIN_TASKS) and set(p["control_tasks"]) <= set(p["tasks"])
    assert PROFILES["full"]["tasks"] == BUILTIN_TASKS and PROFILES["full"]["seeds"] == (0, 1, 2)
    quick = settings(PROFILES, "quick", tasks=None, seeds=(3,))
    assert quick["tasks"] == ("antonyms",) and quick["seeds"] == (3,) and quick["n_test"] == 16
    with pytest.raises(ValueError, match="Unknown profile"):
        settings(PROFILES, "medium")
