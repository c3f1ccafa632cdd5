"""Run sizes of chapter 01 (embedding space), read with ``lmscope.core.profiles.settings(PROFILES, profile)``.

=================  =========================================================================
name               what it sizes
=================  =========================================================================
``n_texts``        texts of the parameter / hidden-state validation
``val_every``      validate every ``val_every``-th layer
``keepk_vectors``  FF values of the keep-k comparison
``align_sample``   vectors sampled per layer of model A for the layer similarity
``align_every``    align every ``align_every``-th layer
``match_layers``   layers whose FF units and heads are matched against the copy's truth
``align_groups``   parameter groups aligned
``n_train``        sentiment training sentences
``n_test``         sentiment test sentences
``ft_steps``       Adam steps of the last-layer fine-tuning
``pair_vocab``     head token pairs are searched among the first ``pair_vocab`` token ids
=================  =========================================================================
"""

PROFILES = {
    "quick": dict(n_texts=3, val_every=6, keepk_vectors=64, align_sample=16, align_every=3, match_layers=1,
                  align_groups=("ff_values", "W_Q"), n_train=80, n_test=60, ft_steps=15, pair_vocab=6000),
    "full": dict(n_texts=10, val_every=1, keepk_vectors=256, align_sample=64, align_every=1, match_layers=3,
                 align_groups=("ff_keys", "ff_values", "W_Q", "W_K", "W_V", "W_O"), n_train=600, n_test=300,
                 ft_steps=80, pair_vocab=20000),
}
