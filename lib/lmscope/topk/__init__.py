"""Chapter 03: top-k attention (Gupta et al., 2021): each query attends only to its k highest-scoring keys.

=================  ===========================================================================
module             what it holds
=================  ===========================================================================
``attention``      :func:`topk_attention`, the memory-linear autograd function
``selection``      exact top-k selection of its torch path (CUDA, bfloat16)
``cpu_kernels``    its numba CPU kernels (selection, softmax and values in one pass; the backward)
``dropin``         a Hugging Face model with top-k attention or top-k FF inside a ``with`` block
``perplexity``     the dense / top-k attention / top-k FF switch (``use_topk``), perplexity sweeps
``lengths``        loss over sequence length x k: by position, dropped mass, keep-first (saved JSON)
``ff_sparsity``    how sparse FF coefficients are and what top-k FF loses (share kept, output error)
``report``         the chapter's tables, figures and headline numbers; the paper's T5 FF results
``fewshot``        few-shot prompts (capitals, antonyms, recall) and their accuracy sweep over k
``patterns``       ``keep_topk_scores`` and one head's pattern, dense vs top-k (``head_patterns``)
``widgets``        the pattern explorer (``topk_widget``)
``bench``          the benchmark core (one layer, top-k vs SDPA vs naive), saved results, their plot
``listops``        the synthetic ListOps task and a small classifier with or without top-k
``profiles``       the chapter's run sizes (:data:`PROFILES`)
=================  ===========================================================================

This package imports nothing, so the core and the benchmark can import ``lmscope.topk.attention``
alone: import the module you need, e.g. ``from lmscope.topk.dropin import use_topk_attention``.
"""
