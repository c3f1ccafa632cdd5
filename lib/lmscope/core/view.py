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

The exact decomposition of a block, for every family. ``attn_out`` and ``mlp_out`` are always the
sub-block's raw output, the sum of its parts: ``attn_out = sum_h head_h + b_O`` (``attn_heads``),
``mlp_out = sum_i m_i v_i + b_ff_out``. What the sub-block adds to the residual stream
(``attn_resid``, ``mlp_resid``) is that raw output, except in families with a norm after the
sub-block (Gemma 2/3 "sandwich" norms, OLMo 2's post-norms: ``LayerView.post_attn_norm`` /
``post_ff_norm`` are not None), where it is ``post_norm(raw)``. At one token an RMSNorm divides by
one number, ``rms(raw)``, so the norm is linear there (:meth:`ModelView.frozen_norm`) and each part's
contribution is ``part * gain / rms(raw)`` (``gain = weight``, or ``1 + weight`` for Gemma); these sum
exactly to the block's contribution (:meth:`LayerView.residual_parts`). The read-out in embedding space
of what an FF value writes is therefore ``ff_values_applied = v_i * gain`` (up to the token's positive
``1 / rms``), and of a head's output rows ``W_O_applied``. An intervention on a coefficient changes ``rms(raw)``: the predicted effect runs the
post-norm again on the new raw sum, it does not reuse the frozen map. Pre-norm families:
``resid_mid = resid_pre + attn_resid``, ``resid_post = resid_mid + mlp_resid`` (parallel residual:
``resid_post = resid_pre + attn_resid + mlp_resid``); BERT normalises after each add instead.
The embedding enters the residual as ``W_E_applied = W_E * cfg.embed_scale`` (Gemma: sqrt(d_model));
the logits are ``unembed(resid_post[-1])``: final norm, ``W_U`` (+ ``b_U``), then the final soft cap
``c * tanh(logits / c)`` where the family has one (Gemma 2). Queries and keys may pass a QK-norm
(``cfg.qk_norm``) and RoPE before the scores, so ``W_QK`` is the bilinear form of the raw
projections only.

Hook points (:mod:`lmscope.core.hooks`) are named ``hook_name(layer, point)``, e.g. ``blocks.3.mlp_out``.
"""

from __future__ import annotations

import inspect
import re

import torch
from torch import nn

from lmscope.core.families import Family, ModelConfig, family_of, linear_weight
from lmscope.core.hooks import HookPoints
from lmscope.core.norms import frozen_norm
from lmscope.core.tensors import blas_matmul

Tensor = torch.Tensor


def last_logits_kwargs(model: nn.Module) -> dict:
    """Forward kwargs that compute the logits of the last position only (``logits_to_keep=1``) when the
    model's forward takes them, else ``{}``: for forward passes that read the next token, or only hooks.
    On a 262k vocabulary the output layer over every position costs more than the layers."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


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
        return self._family.ff.read(self.block, self._cfg)[0]

    @property
    def ff_gate_keys(self) -> Tensor | None:  # (d_ff, d_model), gated MLPs only
        return self._family.ff.read(self.block, self._cfg)[1]

    @property
    def ff_values(self) -> Tensor:  # (d_ff, d_model)
        return linear_weight(self._part(self._family.ff_out)).T

    # -- norms around the sub-blocks ------------------------------------------------------
    @property
    def attn_norm(self) -> nn.Module | None:
        """The norm on the attention sub-block's input (None without a pre-norm: OLMo 2)."""
        return self._part(self._family.attn_norm)

    @property
    def ff_norm(self) -> nn.Module | None:
        """The norm on the FF sub-block's input (None without a pre-norm: OLMo 2)."""
        return self._part(self._family.ff_norm)

    @property
    def post_attn_norm(self) -> nn.Module | None:
        """The norm on the attention output before the residual add (Gemma 2/3, OLMo 2), else None."""
        return self._part(self._family.post_attn_norm)

    @property
    def post_ff_norm(self) -> nn.Module | None:
        """The norm on the FF output before the residual add (Gemma 2/3, OLMo 2), else None."""
        return self._part(self._family.post_ff_norm)

    @property
    def qk_norms(self) -> tuple[nn.Module, nn.Module] | None:
        """The query and key norms applied after the projections (QK-norm), or None.

        Gemma 3 and Qwen3 normalise each head's d_head; OLMo 2 all heads' n*d_head together.
        """
        paths = self._family.qk_norms
        return None if paths is None else (self._part(paths[0]), self._part(paths[1]))

    def _gain(self, norm: nn.Module) -> Tensor:  # (d_model,)
        return norm.weight + self._family.norm_gain_offset

    @property
    def ff_values_applied(self) -> Tensor:
        """What each FF value writes into the residual, up to the token's ``1 / rms``: (d_ff, d_model).

        ``v_i * gain`` of the post-FF norm (``1 + weight`` for Gemma), or ``v_i`` without one.
        """
        norm = self.post_ff_norm
        return self.ff_values if norm is None else self.ff_values * self._gain(norm).to(self.ff_values.dtype)

    @property
    def W_O_applied(self) -> Tensor:
        """What each head's output rows write into the residual, up to the token's ``1 / rms``: (n_heads, d_head, d_model).

        ``W_O * gain`` of the post-attention norm (``1 + weight`` for Gemma), or ``W_O`` without one.
        """
        norm = self.post_attn_norm
        return self.W_O if norm is None else self.W_O * self._gain(norm).to(self.W_O.dtype)

    def residual_parts(self, sub: str, parts: Tensor, total: Tensor) -> tuple[Tensor, Tensor]:
        """Each part's contribution to the residual stream, and the constant rest.

        ``sub`` is ``"attn"`` (parts: heads, ``attn_heads``) or ``"ff"`` (parts: ``m_i v_i``).
        ``parts`` (..., n, d_model) sum, with the sub-block's output bias, to ``total`` (..., d_model),
        the raw ``attn_out`` / ``mlp_out`` at the same positions. Returns ``(contributions
        (..., n, d_model), rest (..., d_model))`` with ``contributions.sum(-2) + rest`` equal to what
        the sub-block adds to the residual (``attn_resid`` / ``mlp_resid``): the post-norm frozen at
        ``total`` applied to each part (see the module docstring), or the parts themselves.
        """
        if sub not in ("attn", "ff"):
            raise ValueError(f"sub must be 'attn' or 'ff', got {sub!r}.")
        out = self._part(self._family.attn_out_proj if sub == "attn" else self._family.ff_out)
        bias = torch.zeros_like(total) if out.bias is None else out.bias.to(total.dtype).expand_as(total)
        norm = self.post_attn_norm if sub == "attn" else self.post_ff_norm
        if norm is None:
            return parts, bias
        apply, norm_bias = frozen_norm(norm, total, kind=self._family.norm, gain_offset=self._family.norm_gain_offset)
        return apply(parts), apply(bias) + norm_bias

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
        """The embedding as stored (Gemma scales it on the way in: see :attr:`W_E_applied`)."""
        return self.model.get_submodule(self.family.embed).weight

    @property
    def W_E_applied(self) -> Tensor:  # (d_vocab, d_model)
        """What a token puts into the residual stream: ``W_E * cfg.embed_scale`` (``W_E`` itself where the scale is 1)."""
        if self.family.embed_scale is None:
            return self.W_E
        scale = getattr(self.model.get_submodule(self.family.embed), self.family.embed_scale)
        return self.W_E * torch.as_tensor(scale).to(self.W_E.dtype)

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

    def unembed(self, resid: Tensor, softcap: bool = True) -> Tensor:
        """Logits of residual-stream vectors (..., d_model) -> (..., d_vocab): final norm, U, final soft cap.

        ``softcap=False`` stops before the cap (the logit that is linear in the residual's parts).
        """
        head = self.model.get_submodule(self.family.unembed)
        logits = blas_matmul(self.final_norm(resid), head.weight.T)  # = head(x): OpenBLAS, see blas_matmul
        if head.bias is not None:
            logits = logits + head.bias
        return self.softcap_logits(logits) if softcap else logits

    def softcap_logits(self, logits: Tensor) -> Tensor:
        """The family's final soft cap ``c * tanh(logits / c)`` (Gemma 2), or ``logits`` unchanged."""
        c = self.cfg.final_softcap
        return logits if c is None else torch.tanh(logits / c) * c

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

    def last_logits_only(self) -> dict:
        """:func:`last_logits_kwargs` of this view's model."""
        return last_logits_kwargs(self.model)

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
            "norms after sub-blocks": c.post_block_norms,
            "QK-norm": c.qk_norm,
            "embedding scale": round(c.embed_scale, 4),
            "soft caps (attention / final)": f"{c.attn_softcap} / {c.final_softcap}",
            "sliding-window layers": f"{len(c.sliding_layers)} (window {c.sliding_window})" if c.sliding_layers else 0,
            "layers without RoPE": len(c.nope_layers),
        }
        return [{"name": k, "value": v} for k, v in rows.items()]
