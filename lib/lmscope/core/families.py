"""The architecture families: where each supported Hugging Face architecture keeps each canonical piece.

This module is the only place in lmscope that knows module paths, config field names and per-family
conventions. A new architecture is one new :class:`Family` in :data:`FAMILIES` (keyed by
``config.model_type``); every study reads models through :class:`lmscope.core.view.ModelView`,
which reads this table.

Paths are ``get_submodule`` paths: ``layers``, ``embed``, ``final_norm`` and ``unembed`` from the
model root, the others from one block. Weights are read in ``nn.Linear`` orientation
(out_features, in_features); GPT-2's ``Conv1D`` stores the transpose, and :func:`linear_weight`
is the one function that knows it.

What each family needs beyond a llama-like block (the tiny configs of ``tests/conftest.py`` exercise
every entry): GPT-2 fused stacked q/k/v, Conv1D; GPT-NeoX per-head fused q/k/v, parallel residual;
BERT post-norm, masked LM; Gemma 2 ``(1 + weight)`` RMSNorms, post-sub-block ("sandwich") norms,
embedding scaled by sqrt(d_model), attention and final-logit soft caps, sliding-window layers,
GeGLU; Gemma 3 the same with QK-norm and no attention soft cap (``gemma3``, with a vision tower: the
text model inside, and that head applies no final cap either); Qwen3 QK-norm (per head), optional
sliding windows; Phi-3 fused ``qkv_proj`` (GQA row sizes) and fused ``gate_up_proj`` (rows
``[gate | up]``); OLMo 2 post-norms only (no pre-norm) and QK-norm over all heads; SmolLM3 some
layers without RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from lmscope.core.model_config import ModelConfig

Tensor = torch.Tensor
#: One parameter of a block that finetuning trains: (path inside the block, parameter, 0/1 mask or None).
#: (lmscope.icl.layer_causal.Trainable adds the layer and the full parameter name.)
BlockParameter = tuple[str, nn.Parameter, "Tensor | None"]
TRAINABLE_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "mlp")


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` keeps its weight as (in_features, out_features)."""
    return type(module).__name__ == "Conv1D"


def linear_weight(module: nn.Module) -> Tensor:
    """The weight of a linear projection as (out_features, in_features)."""
    return module.weight.T if is_conv1d(module) else module.weight


def _own_parameters(block: nn.Module, path: str) -> list[BlockParameter]:
    module = block.get_submodule(path)
    return [(f"{path}.{name}", p, None) for name, p in module.named_parameters(recurse=False)]


# -- where W_Q, W_K, W_V live ----------------------------------------------------------------------
@dataclass(frozen=True)
class SeparateQKV:
    """W_Q, W_K and W_V in three linear modules."""

    q: str
    k: str
    v: str

    def read(self, block: nn.Module, cfg: ModelConfig) -> tuple[Tensor | None, ...]:
        """``(W_Q, W_K, W_V, b_Q, b_K, b_V)``: weights (n*d_head, d_model), biases (n*d_head,) or None."""
        modules = [block.get_submodule(p) for p in (self.q, self.k, self.v)]
        return (*[linear_weight(m) for m in modules], *[m.bias for m in modules])

    def trainable(self, block: nn.Module, cfg: ModelConfig, which: str) -> list[BlockParameter]:
        return _own_parameters(block, {"W_Q": self.q, "W_K": self.k, "W_V": self.v}[which])

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v)


def _rows_mask(module: nn.Module, name: str, param: nn.Parameter, rows: Tensor) -> Tensor:
    """A 0/1 mask of ``param`` (weight or bias of ``module``) keeping output rows ``rows``."""
    if name == "weight":
        mask = torch.zeros_like(linear_weight(module))  # (out, in)
        mask[rows] = 1
        return mask.T if is_conv1d(module) else mask
    mask = torch.zeros_like(param)
    mask[rows] = 1
    return mask


@dataclass(frozen=True)
class FusedQKV:
    """W_Q, W_K and W_V as row blocks of one linear module.

    ``layout="stacked"``: rows ``[q | k | v]`` with n_heads, n_kv_heads, n_kv_heads row blocks of
    d_head (GPT-2's ``c_attn``, Phi-3's ``qkv_proj`` with GQA); ``"per_head"``: for each head the rows
    ``[q_h, k_h, v_h]`` (GPT-NeoX's ``query_key_value``, as many kv heads as query heads).
    """

    path: str
    layout: str

    def rows(self, cfg: ModelConfig, which: str) -> Tensor:
        """Output rows of the fused weight that belong to ``which`` (``W_Q``, ``W_K`` or ``W_V``): (n*d_head,)."""
        i = "QKV".index(which[-1])
        dh = cfg.d_head
        if self.layout == "per_head":
            per_head = torch.arange(dh) + i * dh
            return (torch.arange(cfg.n_heads)[:, None] * 3 * dh + per_head).reshape(-1)
        sizes = [cfg.n_heads * dh, cfg.n_kv_heads * dh, cfg.n_kv_heads * dh]
        start = sum(sizes[:i])
        return torch.arange(start, start + sizes[i])

    def read(self, block: nn.Module, cfg: ModelConfig) -> tuple[Tensor | None, ...]:
        module = block.get_submodule(self.path)
        w, b = linear_weight(module), module.bias
        if self.layout == "per_head":  # strided rows: views reshaped into copies
            h, dh = cfg.n_heads, cfg.d_head
            wv = w.reshape(h, 3, dh, cfg.d_model)
            ws = [wv[:, i].reshape(h * dh, cfg.d_model) for i in range(3)]
            bs = [None] * 3 if b is None else [b.reshape(h, 3, dh)[:, i].reshape(h * dh) for i in range(3)]
            return (*ws, *bs)
        spans = [self.rows(cfg, which) for which in ("W_Q", "W_K", "W_V")]
        ws = [w[int(r[0]) : int(r[-1]) + 1] for r in spans]  # contiguous: views of the weight
        bs = [None] * 3 if b is None else [b[int(r[0]) : int(r[-1]) + 1] for r in spans]
        return (*ws, *bs)

    def trainable(self, block: nn.Module, cfg: ModelConfig, which: str) -> list[BlockParameter]:
        """The fused weight and bias, each with a 0/1 mask that keeps only the rows of ``which``."""
        module = block.get_submodule(self.path)
        rows = self.rows(cfg, which)
        return [(f"{self.path}.{name}", param, _rows_mask(module, name, param, rows))
                for name, param in module.named_parameters(recurse=False)]

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,)


# -- where the FF keys live ------------------------------------------------------------------------
@dataclass(frozen=True)
class SeparateFF:
    """The FF input projection (``up``; the only one of an ungated MLP) and the gate projection, if any."""

    up: str
    gate: str | None = None

    def read(self, block: nn.Module, cfg: ModelConfig) -> tuple[Tensor, Tensor | None]:
        """``(ff_keys, ff_gate_keys)``: each (d_ff, d_model); the gate None for an ungated MLP."""
        gate = None if self.gate is None else linear_weight(block.get_submodule(self.gate))
        return linear_weight(block.get_submodule(self.up)), gate

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.up,) if self.gate is None else (self.gate, self.up)


@dataclass(frozen=True)
class FusedGateUp:
    """Gate and up projections as the row blocks ``[gate | up]`` of one linear module (Phi-3's ``gate_up_proj``)."""

    path: str

    def read(self, block: nn.Module, cfg: ModelConfig) -> tuple[Tensor, Tensor]:
        w = linear_weight(block.get_submodule(self.path))  # (2 d_ff, d_model): views of the weight
        return w[cfg.d_ff :], w[: cfg.d_ff]

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,)


# -- a family ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Where one architecture keeps each canonical piece, and how it is built."""

    name: str
    layers: str  # ModuleList of blocks, from the root
    embed: str  # input embedding, from the root
    final_norm: str  # from the root; BERT: the MLM head transform
    unembed: str  # from the root
    attn: str  # the attention module (it calls the attention interface)
    qkv: SeparateQKV | FusedQKV
    attn_out_proj: str  # W_O: its input is z, its output attn_out
    ff_in: str  # FF input projection ('up' for gated MLPs; Phi-3: the fused gate_up module)
    ff_gate: str | None  # gate projection of gated MLPs (Phi-3: the same fused module as ff_in)
    ff_out: str  # FF output projection: its input is the coefficients m, its output mlp_out
    attn_norm: str | None  # the attention sub-block's norm (pre-norm: its input; post-norm: after the add; OLMo 2: none)
    ff_norm: str | None  # the FF sub-block's norm (OLMo 2: none)
    norm: str = "layer"  # "rms" (RMSNorm) or "layer" (LayerNorm)
    post_norm: bool = False  # BERT-style: a norm after each residual add
    resid_mid_module: str | None = None  # post-norm: the module whose output is resid_mid
    causal: bool = True  # False: a masked LM
    post_attn_norm: str | None = None  # norm on the attention output before the residual add (Gemma 2/3, OLMo 2)
    post_ff_norm: str | None = None  # norm on the FF output before the residual add (Gemma 2/3, OLMo 2)
    norm_gain_offset: float = 0.0  # 1.0 where norms scale by (1 + weight) (Gemma)
    gate_up_fused: bool = False  # ff_in == ff_gate is one module with rows [gate | up] (Phi-3)
    qk_norms: tuple[str, str] | None = None  # query and key norms inside the block (QK-norm)
    embed_scale: str | None = None  # attribute of the embedding module holding its scale (Gemma)
    attn_softcap: str | None = None  # config field of the attention soft cap the attention module passes on
    final_softcap: str | None = None  # config field of the final-logit soft cap
    window_every_layer: bool = False  # config.sliding_window applies to every layer (Phi-3)

    @property
    def ff(self) -> SeparateFF | FusedGateUp:
        """The reader of the FF keys (:class:`SeparateFF` or :class:`FusedGateUp`)."""
        return FusedGateUp(self.ff_in) if self.gate_up_fused else SeparateFF(self.ff_in, self.ff_gate)

    @property
    def ff_paths(self) -> tuple[str, ...]:
        """Paths of the FF projections, each once: (gate,) up, out."""
        return (*self.ff.paths, self.ff_out)

    @property
    def block_linears(self) -> tuple[str, ...]:
        """Paths of every linear projection of a block: W_Q/W_K/W_V, W_O, the FF projections."""
        return (*self.qkv.paths, self.attn_out_proj, *self.ff_paths)

    @property
    def rotatable(self) -> bool:
        """Whether a rotation of the residual basis can be folded into the weights exactly.

        True for RMSNorm pre-norm families with separate projections and plain ``weight`` gains (an
        RMSNorm without gain commutes with an orthogonal map; a LayerNorm's centering does not).
        Families with norms after a sub-block, ``1 + weight`` gains or without a pre-norm are not.
        """
        return (self.norm == "rms" and not self.post_norm and isinstance(self.qkv, SeparateQKV)
                and self.attn_norm is not None and self.post_attn_norm is None and self.norm_gain_offset == 0
                and not self.gate_up_fused and self.embed_scale is None)

    def trainable(self, block: nn.Module, cfg: ModelConfig, which: str) -> list[BlockParameter]:
        """The parameters of one block that finetuning ``which`` (see :data:`TRAINABLE_WEIGHTS`) trains."""
        if which in ("W_Q", "W_K", "W_V"):
            return self.qkv.trainable(block, cfg, which)
        if which == "W_O":
            return _own_parameters(block, self.attn_out_proj)
        if which == "mlp":
            return [t for p in self.ff_paths for t in _own_parameters(block, p)]
        raise ValueError(f"Unknown trainable weights '{which}': choose from {', '.join(TRAINABLE_WEIGHTS)}.")

    def read_config(self, model: nn.Module) -> ModelConfig:
        """The sizes of ``model`` from its config (a multimodal model's text config) and weights."""
        model_type = model.config.model_type
        c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        d_model = getattr(c, "hidden_size", None) or c.n_embd
        n_heads = getattr(c, "num_attention_heads", None) or c.n_head
        layers = model.get_submodule(self.layers)
        n_ctx = next((n for n in (getattr(c, a, None) for a in ("max_position_embeddings", "n_positions", "n_ctx"))
                      if isinstance(n, int) and n > 0), None)
        attns = [block.get_submodule(self.attn) for block in layers]
        window = getattr(c, "sliding_window", None) if self.window_every_layer else None
        windows = [window if self.window_every_layer else getattr(a, "sliding_window", None) for a in attns]
        embed = model.get_submodule(self.embed)
        scale = 1.0 if self.embed_scale is None else float(getattr(embed, self.embed_scale))  # a 0-d buffer
        return ModelConfig(
            family=self.name,
            model_type=model_type,
            n_layers=len(layers),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_head=getattr(c, "head_dim", None) or d_model // n_heads,
            d_ff=linear_weight(layers[0].get_submodule(self.ff_out)).shape[1],
            d_vocab=model.get_submodule(self.unembed).weight.shape[0],
            gated=self.ff_gate is not None,
            parallel_residual=bool(getattr(c, "use_parallel_residual", False)),
            post_norm=self.post_norm,
            causal=self.causal,
            n_ctx=n_ctx,
            embed_scale=scale,
            final_softcap=None if self.final_softcap is None else getattr(c, self.final_softcap, None),
            attn_softcap=None if self.attn_softcap is None else getattr(c, self.attn_softcap, None),
            sliding_window=next((w for w in windows if w is not None), None),
            sliding_layers=tuple(i for i, w in enumerate(windows) if w is not None),
            nope_layers=tuple(i for i, a in enumerate(attns) if not getattr(a, "use_rope", True)),
            qk_norm=self.qk_norms is not None,
            post_block_norms=self.post_attn_norm is not None,
        )


_LLAMA = Family(
    name="llama",
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    qkv=SeparateQKV("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out_proj="self_attn.o_proj",
    ff_in="mlp.up_proj",
    ff_gate="mlp.gate_proj",
    ff_out="mlp.down_proj",
    attn_norm="input_layernorm",
    ff_norm="post_attention_layernorm",
    norm="rms",
)

_GEMMA = replace(
    _LLAMA,
    name="gemma2",
    ff_norm="pre_feedforward_layernorm",
    post_attn_norm="post_attention_layernorm",  # Gemma's names: this one is on the attention output
    post_ff_norm="post_feedforward_layernorm",
    norm_gain_offset=1.0,
    embed_scale="embed_scale",
    attn_softcap="attn_logit_softcapping",
    final_softcap="final_logit_softcapping",
)

#: config.model_type -> Family
FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        layers="transformer.h",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attn="attn",
        qkv=FusedQKV("attn.c_attn", "stacked"),
        attn_out_proj="attn.c_proj",
        ff_in="mlp.c_fc",
        ff_gate=None,
        ff_out="mlp.c_proj",
        attn_norm="ln_1",
        ff_norm="ln_2",
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "smollm3": replace(_LLAMA, name="smollm3"),  # some layers without RoPE: the attention module's own business
    "qwen3": replace(_LLAMA, name="qwen3", qk_norms=("self_attn.q_norm", "self_attn.k_norm")),  # per-head QK-norm
    "gemma2": _GEMMA,
    "gemma3_text": replace(_GEMMA, name="gemma3_text", attn_softcap=None,  # Gemma 3 passes no attention soft cap
                           qk_norms=("self_attn.q_norm", "self_attn.k_norm")),
    "gemma3": replace(  # Gemma 3 with its vision tower: the text model inside; this head applies no final cap
        _GEMMA, name="gemma3", layers="model.language_model.layers", embed="model.language_model.embed_tokens",
        final_norm="model.language_model.norm", attn_softcap=None, final_softcap=None,
        qk_norms=("self_attn.q_norm", "self_attn.k_norm"),
    ),
    "phi3": replace(
        _LLAMA, name="phi3", qkv=FusedQKV("self_attn.qkv_proj", "stacked"), ff_in="mlp.gate_up_proj",
        ff_gate="mlp.gate_up_proj", gate_up_fused=True, window_every_layer=True,
    ),
    "olmo2": replace(  # post-norms only: the residual enters attention and FF unnormalised
        _LLAMA, name="olmo2", attn_norm=None, ff_norm=None, post_attn_norm="post_attention_layernorm",
        post_ff_norm="post_feedforward_layernorm", qk_norms=("self_attn.q_norm", "self_attn.k_norm"),
    ),
    "gpt_neox": Family(
        name="gpt_neox",
        layers="gpt_neox.layers",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        attn="attention",
        qkv=FusedQKV("attention.query_key_value", "per_head"),
        attn_out_proj="attention.dense",
        ff_in="mlp.dense_h_to_4h",
        ff_gate=None,
        ff_out="mlp.dense_4h_to_h",
        attn_norm="input_layernorm",
        ff_norm="post_attention_layernorm",
    ),
    "bert": Family(
        name="bert",
        layers="bert.encoder.layer",
        embed="bert.embeddings.word_embeddings",
        final_norm="cls.predictions.transform",
        unembed="cls.predictions.decoder",
        attn="attention.self",
        qkv=SeparateQKV("attention.self.query", "attention.self.key", "attention.self.value"),
        attn_out_proj="attention.output.dense",
        ff_in="intermediate.dense",
        ff_gate=None,
        ff_out="output.dense",
        attn_norm="attention.output.LayerNorm",
        ff_norm="output.LayerNorm",
        post_norm=True,
        resid_mid_module="attention.output",
        causal=False,
    ),
}

SUPPORTED_MODEL_TYPES = frozenset(FAMILIES)


def family_of(model_type: str | None) -> Family:
    """The family of a ``config.model_type``; a ValueError listing the supported ones otherwise."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unsupported architecture '{model_type}'. Supported families: {', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[model_type]
