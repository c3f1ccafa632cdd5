"""The sizes and properties of a model in canonical names, read by :meth:`lmscope.core.families.Family.read_config`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and properties of a model, in canonical names."""

    family: str
    model_type: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    d_vocab: int
    gated: bool
    parallel_residual: bool
    post_norm: bool
    causal: bool  # a causal LM (False: a masked LM such as BERT)
    n_ctx: int | None  # the longest input the config allows (None if it does not say)
    embed_scale: float = 1.0  # the embedding module multiplies W_E[token] by this (Gemma: sqrt(d_model))
    final_softcap: float | None = None  # logits = c * tanh(logits / c) after the unembedding (Gemma 2)
    attn_softcap: float | None = None  # scores = c * tanh(scores / c) before the mask (Gemma 2)
    sliding_window: int | None = None  # window of the sliding-window layers (HF: keys i - window < j <= i)
    sliding_layers: tuple[int, ...] = ()  # layers that attend within ``sliding_window`` only
    nope_layers: tuple[int, ...] = ()  # layers without positional encoding (SmolLM3)
    qk_norm: bool = False  # an RMSNorm on queries and keys after their projection (Gemma 3, Qwen3, OLMo 2)
    post_block_norms: bool = False  # a norm on each sub-block's output before the residual add
