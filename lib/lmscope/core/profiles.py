"""Run sizes by profile: every study keeps one ``PROFILES`` table, ``{"quick": {...}, "full": {...}}``.

``full`` is what the book shows; ``quick`` runs every part of a chapter at a size that a test
build can afford. A notebook picks its settings with :func:`settings`, where a parameter the
reader set (not None) replaces the profile's value.
"""

from __future__ import annotations


def settings(profiles: dict[str, dict], profile: str, **overrides) -> dict:
    """The run sizes of ``profile``, with every override that is not None put in: a new dict.

    >>> settings({"quick": {"n": 2}, "full": {"n": 20}}, "quick", n=None)
    {'n': 2}
    """
    if profile not in profiles:
        raise ValueError(f"Unknown profile {profile!r}: use one of {', '.join(map(repr, profiles))}.")
    chosen = dict(profiles[profile])
    unknown = sorted(set(overrides) - set(chosen))
    if unknown:
        raise ValueError(f"No run size named {', '.join(unknown)} in the profiles; they have {', '.join(chosen)}.")
    chosen.update({key: value for key, value in overrides.items() if value is not None})
    return chosen
