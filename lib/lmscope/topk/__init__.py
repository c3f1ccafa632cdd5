"""Top-k attention (Gupta et al., 2021): each query attends only to its k highest-scoring keys.

Modules (this ``__init__`` imports none of them, so the benchmark and the core can import
``lmscope.topk.attention`` alone):

* ``attention``: :func:`~lmscope.topk.attention.topk_attention`, the memory-linear autograd function
* ``selection``: exact top-k selection of its torch path (CUDA, bfloat16)
* ``cpu_kernels``: its numba CPU kernels (selection + softmax + values in one pass; the backward)
* ``dropin``: a Hugging Face model with top-k attention or top-k feed-forward inside a ``with`` block
* ``perplexity``: the dense / top-k attention / top-k FF switch (``use_topk``), perplexity and its sweep over k
* ``fewshot``: few-shot prompts (capitals, antonyms, recall) and their accuracy sweep over k
* ``patterns``: ``keep_topk_scores`` and one head's pattern, dense vs top-k (``head_patterns``)
* ``widgets``: the pattern explorer (``topk_widget``)
* ``bench``: the benchmark core (one layer, top-k vs SDPA vs naive), saved results and their plot
* ``listops``: the synthetic ListOps task and a small classifier trained with or without top-k
* ``profiles``: chapter 03's run sizes (``PROFILES``)
"""
