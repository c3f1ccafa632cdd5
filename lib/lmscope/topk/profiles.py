"""Run sizes of chapter 03, read with :func:`lmscope.core.profiles.settings`.

``n_icl``: prompts per few-shot task, ``icl_ks``: attention k of the few-shot sweep (its FF k are the
two largest ``ff_ks``); ``attn_ks``, ``lengths``, ``len_tokens``, ``first_ks``, ``mass_ks``: the
length x k sweep measured live when no saved one is found (k of top-k attention, block lengths,
tokens per length, k of the keep-first check and of the dropped mass); ``ff_ks``, ``seq_len``,
``n_blocks``: top-k FF (perplexity and coefficient sparsity); ``bench_lengths``: lengths of the live
speed benchmark (run when no saved one is found); ``lo_*``: the ListOps runs (length, training
examples, steps, top-k).
"""

PROFILES = {
    "quick": dict(n_icl=4, icl_ks=[8], attn_ks=[16, 64], lengths=[256], len_tokens=256, first_ks=[16],
                  mass_ks=[16, 64], ff_ks=[256], seq_len=256, n_blocks=1, bench_lengths=[512, 1024],
                  lo_len=48, lo_train=1000, lo_steps=60, lo_topk=8),
    "full": dict(n_icl=30, icl_ks=[4, 8, 32], attn_ks=[16, 64, 256], lengths=[512, 1024], len_tokens=2048,
                 first_ks=[64], mass_ks=[16, 64, 256], ff_ks=[32, 64, 128, 256, 512, 1024], seq_len=512,
                 n_blocks=4, bench_lengths=[1024, 2048], lo_len=160, lo_train=8000, lo_steps=800, lo_topk=16),
}
