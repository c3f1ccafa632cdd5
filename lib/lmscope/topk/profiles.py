"""Run sizes of chapter 03, read with :func:`lmscope.core.profiles.settings`.

``attn_ks``/``ff_ks``: k of the perplexity sweep (top-k attention / top-k FF); ``seq_len``, ``n_blocks``:
its held-out text; ``n_icl``: prompts per few-shot task, ``icl_ks``: attention k of the few-shot sweep
(its FF k are the two largest ``ff_ks``); ``bench_lengths``: lengths of the live benchmark (run when no
saved one is found); ``lo_*``: the ListOps runs (length, training examples, steps, top-k).
"""

PROFILES = {
    "quick": dict(attn_ks=[8, 64], ff_ks=[256], seq_len=512, n_blocks=1, n_icl=4, icl_ks=[8],
                  bench_lengths=[512, 1024], lo_len=48, lo_train=1000, lo_steps=60, lo_topk=8),
    "full": dict(attn_ks=[8, 16, 32, 64, 128, 256], ff_ks=[32, 64, 128, 256, 512, 1024], seq_len=1024,
                 n_blocks=20, n_icl=30, icl_ks=[4, 8, 32], bench_lengths=[1024, 2048, 4096], lo_len=160,
                 lo_train=8000, lo_steps=1200, lo_topk=16),
}
