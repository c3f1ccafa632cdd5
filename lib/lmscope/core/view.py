"""A uniform, read-only view of a Hugging Face transformer: canonical weights and hook points.

Every study reads weights and activations through :class:`ModelView`; where each piece lives in
each architecture is the family table's business (:mod:`lmscope.core.families`).

Names follow TransformerLens: ``W_E`` (d_vocab, d_model), ``W_U`` (d_model, d_vocab) and per layer
``W_Q``/``W_K``/``W_V`` (n_heads, d_model, d_head), ``W_O`` (n_heads, d_head, d_model).
Grouped-query heads are expanded so head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``,
as in HF. The FF block is a key-value memory: ``ff_keys`` (d_ff, d_model) are the rows of the input
projection (``up_proj`` for gated MLPs, whose gate rows are ``ff_gate_keys``), ``ff_values``
(d_ff, d_model) the rows of the output projection, and the coefficient ``m_i`` of unit ``i`` is the
input of that output projection, so ``mlp_out = sum_i m_i ff_values[i] + b_ff_out``.

Hook points (:mod:`lmscope.core.hooks`) are named ``hook_name(layer, point)``, e.g. ``blocks.3.mlp_out``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from lmscope.core.families import Family, ModelConfig, family_of, linear_weight
from lmscope.core.hooks import HookPoints
from lmscope.core.norms import frozen_norm

Tensor = torch.Tensor


class LayerView:
    """Weights of one block in canonical shapes. Tensors share storage with the model: do not modify them."""

    def __init__(self, view: "ModelView", index: int):
        self.index = index
        self.block = view.blocks[index]
        self._family, self._cfg = view.family, view.cfg

    def _part(self, path: str | None) -> nn.Module | None:
        return None if path is None else self.block.get_submodule(path)

    def _qkv(self) -> tuple[Tensor | None, ...]:
        return self._family.qkv.read(self.block, self._cfg)

    def _heads_in(self, w: Tensor, n: int) -> Tensor:
        """(n*d_head, d_model) -> (n_heads, d_model, d_head), kv heads repeated for GQA."""
        cfg = self._cfg
        w = w.reshape(n, cfg.d_head, cfg.d_model).transpose(1, 2)
        return w.repeat_interleave(cfg.n_heads // n, dim=0) if n != cfg.n_heads else w

    def _heads_bias(self, b: Tensor | None, n: int) -> Tensor | None:
        if b is None:
            return None
        b = b.reshape(n, self._cfg.d_head)
        return b.repeat_interleave(self._cfg.n_heads // n, dim=0)

    @property
    def W_Q(self) -> Tensor:  # (n_heads, d_model, d_head)
        return self._heads_in(self._qkv()[0], self._cfg.n_heads)

    @property
    def W_K(self) -> Tensor:  # (n_heads, d_model, d_head)
        return self._heads_in(self._qkv()[1], self._cfg.n_kv_heads)

    @property
    def W_V(self) -> Tensor:  # (n_heads, d_model, d_head)
        return self._heads_in(self._qkv()[2], self._cfg.n_kv_heads)

    @property
    def b_Q(self) -> Tensor | None:  # (n_heads, d_head)
        return self._heads_bias(self._qkv()[3], self._cfg.n_heads)

    @property
    def b_K(self) -> Tensor | None:
        return self._heads_bias(self._qkv()[4], self._cfg.n_kv_heads)

    @property
    def b_V(self) -> Tensor | None:
        return self._heads_bias(self._qkv()[5], self._cfg.n_kv_heads)

    @property
    def W_O(self) -> Tensor:  # (n_heads, d_head, d_model)
        cfg = self._cfg
        w = linear_weight(self._part(self._family.attn_out_proj))  # (d_model, n_heads*d_head)
        return w.reshape(cfg.d_model, cfg.n_heads, cfg.d_head).permute(1, 2, 0)

    @property
    def b_O(self) -> Tensor | None:  # (d_model,)
        return self._part(self._family.attn_out_proj).bias

    @property
    def ff_keys(self) -> Tensor:  # (d_ff, d_model)
        return linear_weight(self._part(self._family.ff_in))

    @property
    def ff_gate_keys(self) -> Tensor | None:  # (d_ff, d_model), gated MLPs only
        gate = self._part(self._family.ff_gate)
        return None if gate is None else linear_weight(gate)

    @property
    def ff_values(self) -> Tensor:  # (d_ff, d_model)
        return linear_weight(self._part(self._family.ff_out)).T

    @property
    def b_ff_out(self) -> Tensor | None:  # (d_model,)
        return self._part(self._family.ff_out).bias

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
        self.model = model
        self.family: Family = family_of(getattr(getattr(model, "config", None), "model_type", None))
        self.blocks = model.get_submodule(self.family.layers)
        self.cfg: ModelConfig = self.family.read_config(model)
        self.layers = [LayerView(self, i) for i in range(self.cfg.n_layers)]
        self.hooks = HookPoints(self)

    @property
    def name(self) -> str:
        """A short, file-name-safe name: the last part of the name or path the model was loaded from."""
        raw = str(getattr(self.model.config, "name_or_path", "") or "").rstrip("/").split("/")[-1]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw or self.cfg.model_type)

    # -- embeddings and read-out -------------------------------------------------
    @property
    def W_E(self) -> Tensor:  # (d_vocab, d_model)
        return self.model.get_submodule(self.family.embed).weight

    @property
    def W_U(self) -> Tensor:  # (d_model, d_vocab)
        return self.model.get_submodule(self.family.unembed).weight.T

    @property
    def b_U(self) -> Tensor | None:  # (d_vocab,)
        return getattr(self.model.get_submodule(self.family.unembed), "bias", None)

    @property
    def final_norm(self) -> nn.Module:
        return self.model.get_submodule(self.family.final_norm)

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def frozen_norm(self, norm: nn.Module, x: Tensor):
        """``(apply, bias)`` with ``norm(x) == apply(x) + bias``, ``apply`` linear (see :mod:`lmscope.core.norms`)."""
        return frozen_norm(norm, x, kind=self.family.norm, gain_offset=self.family.norm_gain_offset)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits of residual-stream vectors (..., d_model) -> (..., d_vocab): final norm, then U."""
        return self.model.get_submodule(self.family.unembed)(self.final_norm(resid))

    logit_lens = unembed

    def layer(self, index: int) -> LayerView:
        """The view of block ``index``; a clear error for an index out of range."""
        if not isinstance(index, int) or not -self.cfg.n_layers <= index < self.cfg.n_layers:
            raise IndexError(
                f"Layer {index} does not exist: this model has layers 0..{self.cfg.n_layers - 1}."
            )
        return self.layers[index]

    def attention_modules(self) -> list[nn.Module]:
        """Each block's attention module (the one that calls the attention interface)."""
        return [block.get_submodule(self.family.attn) for block in self.blocks]

    def block_linears(self, layer: int) -> list[nn.Module]:
        """Every linear projection of block ``layer`` (W_Q/W_K/W_V, W_O, FF), in the block's module order."""
        block = self.blocks[layer]
        wanted = {id(block.get_submodule(p)) for p in self.family.block_linears}
        return [m for m in block.modules() if id(m) in wanted]

    # -- hooks ------------------------------------------------------------------
    def capture(self, names, detach: bool = True):
        """Context manager: record hook points while the model runs; yields a dict name -> tensor."""
        return self.hooks.capture(names, detach=detach)

    def overwrite(self, edits):
        """Context manager: replace hook point values, ``{name: tensor or fn(tensor) -> tensor}``."""
        return self.hooks.overwrite(edits)

    def hook_names(self, layer: int | None = None) -> list[str]:
        """Every hook point of ``layer`` (or of every layer)."""
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
        unembed = self.model.get_submodule(self.family.unembed).weight
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
            "tied embeddings": bool(self.W_E.data_ptr() == unembed.data_ptr()),
            "parallel residual": c.parallel_residual,
            "norm placement": "post-norm" if c.post_norm else "pre-norm",
        }
        return [{"name": k, "value": v} for k, v in rows.items()]
