"""Chapter 02's run sizes."""

import pytest

from lmscope.core.profiles import settings
from lmscope.debugger.profiles import PROFILES
from lmscope.debugger.steering import neutral_prompts


def test_profiles_have_the_same_run_sizes_and_fit_the_experiment():
    assert set(PROFILES) == {"quick", "full"}
    assert set(PROFILES["quick"]) == set(PROFILES["full"])
    assert PROFILES["full"]["n_prompts"] >= 50  # the chapter promises at least 50 prompts (quick: a smoke run)
    for sizes in PROFILES.values():
        assert 1 <= sizes["n_prompts"] <= len(neutral_prompts())
        assert 1 <= sizes["dose_prompts"] <= sizes["n_prompts"]
        assert list(sizes["scales"]) == sorted(sizes["scales"]) and sizes["scales"][-1] == 1.0  # up to the full "on"
    quick, full = PROFILES["quick"], PROFILES["full"]
    assert all(quick[k] <= full[k] for k in ("n_prompts", "n_tokens", "n_random", "dose_prompts", "n_clusters"))


def test_settings_take_overrides():
    chosen = settings(PROFILES, "quick", n_clusters=64, n_tokens=None)
    assert chosen["n_clusters"] == 64 and chosen["n_tokens"] == PROFILES["quick"]["n_tokens"]
    assert PROFILES["quick"]["n_clusters"] != 64  # the table itself is not changed
    with pytest.raises(ValueError, match="Unknown profile"):
        settings(PROFILES, "medium")
