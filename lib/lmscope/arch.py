"""A uniform, read-only view of a Hugging Face transformer.

Every study reads weights and activations through :class:`ModelView`, so a
new architecture is one new :class:`Family` entry in :data:`FAMILIES`.

Names follow TransformerLens: ``W_E`` (d_vocab, d_model), ``W_U`` (d_model,
d_vocab) and per layer ``W_Q``/``W_K``/``W_V`` (n_heads, d_model, d_head),
``W_O`` (n_heads, d_head, d_model). Grouped-query heads are expanded so head
``h`` reads key/value head ``h // (n_heads // n_kv_heads)``, as in HF. The FF
block is a key-value memory: ``ff_keys`` (d_ff, d_model) are the rows of the
input projection (``up_proj`` for gated MLPs, whose gate rows are
``ff_gate_keys``), ``ff_values`` (d_ff, d_model) the rows of the output
projection, and the coefficient ``m_i`` of unit ``i`` is the input of that
output projection, so ``mlp_out = sum_i m_i ff_values[i] + b_ff_out``.

Hook points (see :mod:`lmscope.hooks`) are named ``blocks.{l}.{point}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

Tensor = torch.Tensor


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def linear_weight(module: nn.Module) -> Tensor:
    """Weight in ``nn.Linear`` convention (out_features, in_features); GPT-2's Conv1D is transposed."""
    if type(module).__name__ == "Conv1D":
        return module.weight.T
    return module.weight


@dataclass(frozen=True)
class Family:
    """Where one architecture keeps each canonical piece (module paths)."""

    name: str
    layers: str  # ModuleList of blocks, from the model root
    embed: str  # input embedding, from the root
    final_norm: str  # from the root; BERT: the MLM head transform
    unembed: str  # from the root
    attn: str  # attention module (calls the attention interface), from a block
    attn_out_proj: str  # W_O, from a block; its input is z, its output attn_out
    ff_in: str  # FF input projection ('up' for gated MLPs), from a block
    ff_gate: str | None  # gate projection of gated MLPs
    ff_out: str  # FF output projection; its input is m, its output mlp_out
    resid_mid_module: str | None  # post-norm models: module whose output is resid_mid
    qkv: Callable[[nn.Module, "ModelConfig"], tuple[Tensor, ...]]  # block -> Wq, Wk, Wv, bq, bk, bv
    post_norm: bool = False  # BERT-style: LayerNorm after each residual add


def _qkv_separate(q: str, k: str, v: str):
    def read(block: nn.Module, cfg: "ModelConfig"):
        mods = [_get(block, p) for p in (q, k, v)]
        return (*[linear_weight(m) for m in mods], *[m.bias for m in mods])

    return read


def _qkv_gpt2(block: nn.Module, cfg: "ModelConfig"):
    c_attn = block.attn.c_attn
    w = linear_weight(c_attn)  # (3d, d): q, k, v stacked
    b = c_attn.bias
    d = cfg.d_model
    return w[:d], w[d : 2 * d], w[2 * d :], b[:d], b[d : 2 * d], b[2 * d :]


def _qkv_neox(block: nn.Module, cfg: "ModelConfig"):
    lin = block.attention.query_key_value
    h, dh = cfg.n_heads, cfg.d_head
    w = lin.weight.view(h, 3, dh, cfg.d_model)  # rows interleaved per head: [q, k, v]
    ws = [w[:, i].reshape(h * dh, cfg.d_model) for i in range(3)]
    bs = [None] * 3
    if lin.bias is not None:
        b = lin.bias.view(h, 3, dh)
        bs = [b[:, i].reshape(h * dh) for i in range(3)]
    return (*ws, *bs)


_LLAMA = Family(
    name="llama",
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    attn_out_proj="self_attn.o_proj",
    ff_in="mlp.up_proj",
    ff_gate="mlp.gate_proj",
    ff_out="mlp.down_proj",
    resid_mid_module=None,
    qkv=_qkv_separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
)

# config.model_type -> Family
FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        layers="transformer.h",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attn="attn",
        attn_out_proj="attn.c_proj",
        ff_in="mlp.c_fc",
        ff_gate=None,
        ff_out="mlp.c_proj",
        resid_mid_module=None,
        qkv=_qkv_gpt2,
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt_neox": Family(
        name="gpt_neox",
        layers="gpt_neox.layers",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        attn="attention",
        attn_out_proj="attention.dense",
        ff_in="mlp.dense_h_to_4h",
        ff_gate=None,
        ff_out="mlp.dense_4h_to_h",
        resid_mid_module=None,
        qkv=_qkv_neox,
    ),
    "bert": Family(
        name="bert",
        layers="bert.encoder.layer",
        embed="bert.embeddings.word_embeddings",
        final_norm="cls.predictions.transform",
        unembed="cls.predictions.decoder",
        attn="attention.self",
        attn_out_proj="attention.output.dense",
        ff_in="intermediate.dense",
        ff_gate=None,
        ff_out="output.dense",
        resid_mid_module="attention.output",
        qkv=_qkv_separate("attention.self.query", "attention.self.key", "attention.self.value"),
        post_norm=True,
    ),
}

SUPPORTED_MODEL_TYPES = frozenset(FAMILIES)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a model, in canonical names."""

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


def _model_config(model: nn.Module, family: Family) -> ModelConfig:
    c = model.config
    d_model = getattr(c, "hidden_size", None) or c.n_embd
    n_heads = getattr(c, "num_attention_heads", None) or c.n_head
    n_kv = getattr(c, "num_key_value_heads", None) or n_heads
    d_head = getattr(c, "head_dim", None) or d_model // n_heads
    layers = _get(model, family.layers)
    d_ff = linear_weight(_get(layers[0], family.ff_out)).shape[1]
    return ModelConfig(
        family=family.name,
        model_type=c.model_type,
        n_layers=len(layers),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_ff=d_ff,
        d_vocab=_get(model, family.unembed).weight.shape[0],
        gated=family.ff_gate is not None,
        parallel_residual=bool(getattr(c, "use_parallel_residual", False)),
        post_norm=family.post_norm,
    )


class LayerView:
    """Weights of one block in canonical shapes. Tensors share storage with the model: do not modify them."""

    def __init__(self, view: "ModelView", index: int):
        self.index = index
        self.block = view.blocks[index]
        self._view = view

    def _part(self, path: str | None) -> nn.Module | None:
        return None if path is None else _get(self.block, path)

    def _qkv(self):
        return self._view.family.qkv(self.block, self._view.cfg)

    def _heads_in(self, w: Tensor, n: int) -> Tensor:
        """(n*d_head, d_model) -> (n_heads, d_model, d_head), kv heads repeated for GQA."""
        cfg = self._view.cfg
        w = w.reshape(n, cfg.d_head, cfg.d_model).transpose(1, 2)
        return w.repeat_interleave(cfg.n_heads // n, dim=0) if n != cfg.n_heads else w

    def _heads_bias(self, b: Tensor | None, n: int) -> Tensor | None:
        if b is None:
            return None
        b = b.reshape(n, self._view.cfg.d_head)
        return b.repeat_interleave(self._view.cfg.n_heads // n, dim=0)

    @property
    def W_Q(self) -> Tensor:  # (n_heads, d_model, d_head)
        return self._heads_in(self._qkv()[0], self._view.cfg.n_heads)

    @property
    def W_K(self) -> Tensor:  # (n_heads, d_model, d_head)
        return self._heads_in(self._qkv()[1], self._view.cfg.n_kv_heads)

    @property
    def W_V(self) -> Tensor:  # (n_heads, d_model, d_head)
        return self._heads_in(self._qkv()[2], self._view.cfg.n_kv_heads)

    @property
    def b_Q(self) -> Tensor | None:  # (n_heads, d_head)
        return self._heads_bias(self._qkv()[3], self._view.cfg.n_heads)

    @property
    def b_K(self) -> Tensor | None:
        return self._heads_bias(self._qkv()[4], self._view.cfg.n_kv_heads)

    @property
    def b_V(self) -> Tensor | None:
        return self._heads_bias(self._qkv()[5], self._view.cfg.n_kv_heads)

    @property
    def W_O(self) -> Tensor:  # (n_heads, d_head, d_model)
        cfg = self._view.cfg
        w = linear_weight(self._part(self._view.family.attn_out_proj))  # (d_model, n_heads*d_head)
        return w.reshape(cfg.d_model, cfg.n_heads, cfg.d_head).permute(1, 2, 0)

    @property
    def b_O(self) -> Tensor | None:  # (d_model,)
        return self._part(self._view.family.attn_out_proj).bias

    @property
    def ff_keys(self) -> Tensor:  # (d_ff, d_model)
        return linear_weight(self._part(self._view.family.ff_in))

    @property
    def ff_gate_keys(self) -> Tensor | None:  # (d_ff, d_model), gated MLPs only
        gate = self._part(self._view.family.ff_gate)
        return None if gate is None else linear_weight(gate)

    @property
    def ff_values(self) -> Tensor:  # (d_ff, d_model)
        return linear_weight(self._part(self._view.family.ff_out)).T

    @property
    def b_ff_out(self) -> Tensor | None:  # (d_model,)
        return self._part(self._view.family.ff_out).bias

    def W_QK(self, head: int) -> tuple[Tensor, Tensor]:
        """Low-rank factors (A, B) of head ``head``'s W_QK = A @ B.T, each (d_model, d_head)."""
        return self.W_Q[head], self.W_K[head]

    def W_VO(self, head: int) -> tuple[Tensor, Tensor]:
        """Low-rank factors (A, B) of W_VO = A @ B.T: A = W_V (d_model, d_head), B = W_O.T (d_model, d_head)."""
        return self.W_V[head], self.W_O[head].T


class ModelView:
    """Uniform read-only view of a supported Hugging Face model, with hook points.

    >>> view = ModelView(model)                     # doctest: +SKIP
    >>> view.cfg.n_layers, view.layers[0].W_Q.shape  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in FAMILIES:
            raise ValueError(
                f"Unsupported architecture '{model_type}'. Supported families: "
                f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))}."
            )
        self.model = model
        self.family = FAMILIES[model_type]
        self.blocks = _get(model, self.family.layers)
        self.cfg = _model_config(model, self.family)
        self.layers = [LayerView(self, i) for i in range(self.cfg.n_layers)]
        from lmscope.hooks import HookPoints

        self.hooks = HookPoints(self)

    # -- embeddings and read-out -------------------------------------------------
    @property
    def W_E(self) -> Tensor:  # (d_vocab, d_model)
        return _get(self.model, self.family.embed).weight

    @property
    def W_U(self) -> Tensor:  # (d_model, d_vocab)
        return _get(self.model, self.family.unembed).weight.T

    @property
    def b_U(self) -> Tensor | None:  # (d_vocab,)
        return getattr(_get(self.model, self.family.unembed), "bias", None)

    @property
    def final_norm(self) -> nn.Module:
        return _get(self.model, self.family.final_norm)

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits of residual-stream vectors (..., d_model) -> (..., d_vocab): final norm, then U."""
        return _get(self.model, self.family.unembed)(self.final_norm(resid))

    logit_lens = unembed

    def layer(self, index: int) -> LayerView:
        """The view of block ``index``; a clear error for an index out of range."""
        if not isinstance(index, int) or not -self.cfg.n_layers <= index < self.cfg.n_layers:
            raise IndexError(
                f"Layer {index} does not exist: this model has layers 0..{self.cfg.n_layers - 1}."
            )
        return self.layers[index]

    # -- hooks ------------------------------------------------------------------
    def capture(self, names, detach: bool = True):
        """Context manager: record hook points while the model runs; yields a dict name -> tensor."""
        return self.hooks.capture(names, detach=detach)

    def overwrite(self, edits):
        """Context manager: replace hook point values, ``{name: tensor or fn(tensor) -> tensor}``."""
        return self.hooks.overwrite(edits)

    def hook_names(self, layer: int | None = None) -> list[str]:
        return self.hooks.names(layer)

    @torch.no_grad()
    def run_with_cache(self, input_ids: Tensor, names=None, **kwargs) -> tuple[Tensor, dict]:
        """Forward pass returning (logits (batch, pos, d_vocab), {hook name: tensor})."""
        names = self.hook_names() if names is None else names
        with self.capture(names) as cache:
            logits = self.model(input_ids=input_ids.to(self.device), **kwargs).logits
        return logits, cache

    def architecture_table(self) -> list[dict]:
        """Rows (name, value) describing the model, for display."""
        c = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        rows = {
            "family": c.family,
            "model_type": c.model_type,
            "parameters": f"{n_params / 1e6:.1f}M",
            "layers": c.n_layers,
            "d_model": c.d_model,
            "heads (query / key-value)": f"{c.n_heads} / {c.n_kv_heads}",
            "d_head": c.d_head,
            "d_ff (FF hidden units)": c.d_ff,
            "gated FF": c.gated,
            "vocabulary": c.d_vocab,
            "tied embeddings": bool(self.W_E.data_ptr() == _get(self.model, self.family.unembed).weight.data_ptr()),
            "parallel residual": c.parallel_residual,
            "norm placement": "post-norm" if c.post_norm else "pre-norm",
        }
        return [{"name": k, "value": v} for k, v in rows.items()]
