"""Run sizes of chapter 01 (embedding space), read with ``lmscope.core.profiles.settings(PROFILES, profile)``.

=================  =========================================================================
name               what it sizes
=================  =========================================================================
``n_texts``        texts of our earlier validation variant (short sentences)
``val_positions``  positions of Shakespeare for the paper's validation (the paper: 1000)
``val_every``      validate every ``val_every``-th layer (and the last)
``keepk_vectors``  vectors per set of the keep-k comparison (the paper: 1000)
``keepk_ks``       k values of the keep-k comparison
``scratch``        size and schedule of the two scratch models (``ScratchSpec`` fields)
``stitch_blocks``  training blocks of the stitched classifier
``stitch_test``    held-out blocks the stitching is scored on (None: all of them)
``align_sample``   vectors sampled per layer of model A for the layer similarity
``align_every``    align every ``align_every``-th layer
``match_layers``   layers whose FF units and heads are matched against the copy's truth
``align_groups``   parameter groups aligned
``n_train``        sentiment training sentences
``n_test``         sentiment test sentences
``ft_steps``       Adam steps of the last-layer fine-tuning
``pair_vocab``     head token pairs are searched among the first ``pair_vocab`` token ids
``explorer_every`` the static explorer shows every ``explorer_every``-th layer
=================  =========================================================================
"""

PROFILES = {
    "quick": dict(n_texts=3, val_positions=100, val_every=15, keepk_vectors=100, keepk_ks=(512, 4096, 20000),
                  scratch=dict(d_model=64, n_layers=2, n_heads=2, d_ff=128, seq_len=32, batch=8, steps=80),
                  stitch_blocks=100, stitch_test=96, align_sample=16, align_every=3, match_layers=1,
                  align_groups=("ff_values", "W_Q"), n_train=80, n_test=60, ft_steps=15, pair_vocab=6000,
                  explorer_every=6),
    "full": dict(n_texts=10, val_positions=1000, val_every=3, keepk_vectors=1000,
                 keepk_ks=(512, 1024, 2048, 4096, 10000, 20000, 30000), scratch={}, stitch_blocks=600,
                 stitch_test=None, align_sample=64, align_every=1, match_layers=3,
                 align_groups=("ff_keys", "ff_values", "W_Q", "W_K", "W_V", "W_O"), n_train=600, n_test=300,
                 ft_steps=80, pair_vocab=20000, explorer_every=1),
}
