"""Run sizes of chapter 04 and ``benchmarks/icl_vs_gd.py``, by profile.

Main table (the paper's protocol): ``tasks``, ``k``, ``seeds``, ``n_test``. Second group (the
built-in word tasks): ``word_tasks``, ``word_seeds``, ``word_n_test``. Learning rates:
``lr_grid`` (three or more rates; the three of the ablation and the best are chosen on
``lr_n_eval`` validation examples of ``ablation_task``; None: ``lr`` for every run). Ablation:
``ablation_task``, ``ablation_factors``, ``ablation_seeds``, ``ablation_n_test``,
``second_model`` (the model factor; None: skipped). Untrained control: ``control_tasks``,
``control_n_test``. Read them with ``lmscope.core.profiles.settings(PROFILES, profile, **overrides)``.

Cost on a 2-core CPU is in the finetuning: one LCGD step with the every-token loss reads 30 layers x
the sequence through the 49,152-word unembedding (about 4x a GD step), 32 steps per run. ``full``
is the protocol at a reduced test size; ``paper`` is the issue's size (200 test examples per task,
hours on a CPU). ``quick`` runs every part at the smallest sizes that exercise it (k = 2: two
demonstrations, two SGD steps per run; two test examples per table).
"""

from __future__ import annotations

from lmscope.icl.ablation import FACTORS
from lmscope.icl.builtin_tasks import BUILTIN_TASKS
from lmscope.icl.text_tasks import TEXT_TASKS

_FULL = {
    "tasks": TEXT_TASKS, "k": 32, "seeds": (0, 1, 2), "n_test": 16, "lr": 1e-3,
    "word_tasks": BUILTIN_TASKS, "word_seeds": (0,), "word_n_test": 16,
    "lr_grid": (3e-4, 1e-3, 3e-3), "lr_n_eval": 16,
    "ablation_task": "wordnet_category", "ablation_factors": FACTORS, "ablation_seeds": (0, 1, 2),
    "ablation_n_test": 16, "second_model": "gemma-3-270m",
    "control_tasks": ("wordnet_category",), "control_n_test": 8,
}
PROFILES = {
    "quick": {
        "tasks": ("wordnet_category",), "k": 2, "seeds": (0,), "n_test": 2, "lr": 1e-3,
        "word_tasks": ("antonyms",), "word_seeds": (0,), "word_n_test": 2,
        "lr_grid": None, "lr_n_eval": 4,
        "ablation_task": "wordnet_category", "ablation_factors": ("loss_on", "read_at"), "ablation_seeds": (0,),
        "ablation_n_test": 2, "second_model": None,
        "control_tasks": ("wordnet_category",), "control_n_test": 2,
    },
    "full": _FULL,
    "paper": {**_FULL, "n_test": 200, "word_seeds": (0, 1, 2), "word_n_test": 100, "lr_n_eval": 64,
              "ablation_n_test": 200, "control_tasks": TEXT_TASKS, "control_n_test": 50},
}
