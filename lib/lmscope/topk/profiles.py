"""Run sizes of chapter 03, read with :func:`lmscope.core.profiles.settings`.

``n_icl``: prompts per few-shot task, ``icl_ks``: attention k of the few-shot sweep (its FF k are the
two largest ``ff_ks``); ``attn_ks``, ``lengths``, ``len_tokens``, ``first_ks``, ``mass_ks``: the
length x k sweep measured live when no saved one is found (k of top-k attention, block lengths,
tokens per length, k of the keep-first check and of the dropped mass; both profiles include k=64
and k=256 below the length, the headline numbers); ``ff_ks``, ``seq_len``, ``n_blocks``: top-k FF
(perplexity and coefficient sparsity); ``scratch``: the ReLU vs SwiGLU scratch models
(:class:`lmscope.embedding.scratch.ScratchSpec` fields, chapter 01's sizes so its SwiGLU checkpoint is
shared), ``scratch_blocks``: their held-out blocks scored, ``ff_fractions``: k / d_ff tried on them;
``bench_lengths``: lengths of the live speed benchmark (run when no saved one is found),
``bench_in_process``: run it inside the kernel rather than one fresh process per run; ``lo_*``: the
ListOps runs (length, training and test examples, steps, top-k).
"""

PROFILES = {
    "quick": dict(n_icl=2, icl_ks=[8], attn_ks=[64, 256], lengths=[512], len_tokens=512, first_ks=[64],
                  mass_ks=[64, 256], ff_ks=[256], seq_len=256, n_blocks=1,
                  scratch=dict(d_model=64, n_layers=2, n_heads=2, d_ff=128, seq_len=32, batch=8, steps=80),
                  scratch_blocks=8, ff_fractions=[1 / 48, 1 / 6], bench_lengths=[256, 512], bench_in_process=True,
                  lo_len=48, lo_train=1000, lo_test=200, lo_steps=20, lo_topk=8),
    "full": dict(n_icl=30, icl_ks=[4, 8, 32], attn_ks=[16, 64, 256], lengths=[512, 1024], len_tokens=2048,
                 first_ks=[64], mass_ks=[16, 64, 256], ff_ks=[32, 64, 128, 256, 512, 1024], seq_len=512,
                 n_blocks=4, scratch={}, scratch_blocks=64, ff_fractions=[1 / 48, 1 / 12, 1 / 6, 1 / 3],
                 bench_lengths=[1024, 2048], bench_in_process=False,
                 lo_len=160, lo_train=8000, lo_test=500, lo_steps=800, lo_topk=16),
}
