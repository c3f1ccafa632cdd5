"""Run sizes of chapter 02 (LM-Debugger) by profile; read with :func:`lmscope.core.profiles.settings`.

``n_prompts`` neutral prompts for the steering experiment, ``n_tokens`` per greedy continuation,
``n_random`` draws of the random-value control, ``dose_prompts`` prompts and ``scales`` (fractions
of the original "on") for the dose-response, ``n_clusters`` for spherical k-means of all values,
``trace_repeats`` traces of a long prompt timed for the speed summary.
``full`` is what the chapter reports (at least 50 prompts); ``quick`` runs every step on one batch of prompts.

>>> from lmscope.core.profiles import settings
>>> settings(PROFILES, "full")["n_prompts"]
60
"""

PROFILES = {
    "quick": dict(n_prompts=20, n_tokens=4, n_random=1, dose_prompts=5, scales=(0.1, 1.0),
                  n_clusters=128, trace_repeats=2),
    "full": dict(n_prompts=60, n_tokens=10, n_random=3, dose_prompts=30, scales=(0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
                 n_clusters=1024, trace_repeats=5),
}
