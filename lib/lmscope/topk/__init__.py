"""Top-k attention (Gupta et al., 2021): each query attends only to its k highest-scoring keys.

Modules: ``attention`` (the memory-linear autograd function), ``selection`` and ``cpu_kernels``
(its torch and numba paths), ``dropin`` (switching a Hugging Face model to top-k attention or
top-k feed-forward). This package's ``__init__`` imports nothing, so the benchmark and the core
can import ``lmscope.topk.attention`` alone.
"""
