"""Run sizes of chapter 04 and ``benchmarks/icl_vs_gd.py``, by profile.

``tasks``, ``k`` (demonstrations), ``seeds``, ``n_test`` (test examples per task), and the
untrained control's ``control_tasks`` and ``control_n_test``. Read them with
``lmscope.core.profiles.settings(PROFILES, profile, **overrides)``.
"""

from __future__ import annotations

from lmscope.icl.builtin_tasks import BUILTIN_TASKS

PROFILES = {
    "quick": {"tasks": ("antonyms",), "k": 8, "seeds": (0,), "n_test": 16, "control_tasks": ("antonyms",),
              "control_n_test": 8},
    "full": {"tasks": BUILTIN_TASKS, "k": 8, "seeds": (0, 1, 2), "n_test": 50, "control_tasks": BUILTIN_TASKS,
             "control_n_test": 20},
}
