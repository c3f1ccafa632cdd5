"""Chapter 01's run sizes: both profiles size the same things, and the notebook's overrides apply."""

import pytest

from lmscope.core.profiles import settings
from lmscope.embedding.profiles import PROFILES
from lmscope.embedding.projection import GROUPS


def test_profiles_size_the_same_things():
    assert set(PROFILES) == {"quick", "full"}
    assert PROFILES["quick"].keys() == PROFILES["full"].keys()
    for name in ("n_texts", "keepk_vectors", "align_sample", "match_layers", "n_train", "n_test", "ft_steps",
                 "pair_vocab"):
        assert 0 < PROFILES["quick"][name] <= PROFILES["full"][name], name
    assert all(g in GROUPS for p in PROFILES.values() for g in p["align_groups"])


def test_notebook_overrides():
    quick = settings(PROFILES, "quick", n_texts=None, n_train=12, n_test=None)
    assert quick["n_texts"] == 3 and quick["n_train"] == 12 and quick["n_test"] == 60
    with pytest.raises(ValueError, match="No run size named n_prompts"):
        settings(PROFILES, "quick", n_prompts=3)
