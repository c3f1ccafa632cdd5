"""lmscope.topk.profiles: chapter 03's run sizes."""

import pytest

from lmscope.core.profiles import settings
from lmscope.topk.profiles import PROFILES


def test_profiles_share_their_names_and_the_notebook_overrides_apply():
    assert set(PROFILES) == {"quick", "full"} and set(PROFILES["quick"]) == set(PROFILES["full"])
    quick = settings(PROFILES, "quick", attn_ks=None, ff_ks=[16], seq_len=None, n_blocks=2)
    assert quick == {**PROFILES["quick"], "ff_ks": [16], "n_blocks": 2}
    full = PROFILES["full"]
    assert full["n_icl"] == 30 and full["icl_ks"] == [4, 8, 32] and full["ff_ks"][-2:] == [512, 1024]
    with pytest.raises(ValueError, match="Unknown profile"):
        settings(PROFILES, "medium")


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_length_sweep_sizes_fit_together(profile):
    p = PROFILES[profile]
    assert all(p["len_tokens"] >= length for length in p["lengths"])  # at least one block per length
    assert set(p["first_ks"]) <= set(p["attn_ks"])  # keep-first is read against plain top-k at the same k
    assert set(p["mass_ks"]) <= set(p["attn_ks"])


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_a_live_sweep_gives_the_saved_headline_numbers(profile):
    """The chapter saves the perplexity change at k=64 and k=256 (never null): a live sweep has a length above both."""
    p = PROFILES[profile]
    assert {64, 256} <= set(p["attn_ks"]) and max(p["lengths"]) > 256
    assert p["ff_fractions"] and all(0 < f <= 1 for f in p["ff_fractions"])
