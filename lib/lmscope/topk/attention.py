"""Top-k attention: each query attends only to its k highest-scoring keys.

Gupta et al., "Memory-efficient Transformers via Top-k Attention" (2021). This
implementation processes queries in chunks, so the dense score buffer is at
most (rows of one chunk) x (keys); a custom autograd function saves only the
selected key indices (plus one log-sum-exp per query), O(N k) memory, and its
backward touches only the selected keys and values, O(N k d) work:

* CPU, float32/float64: the scores of a chunk come from one BLAS ``bmm``; the
  numba kernels of :mod:`lmscope.topk.cpu_kernels` select, normalise and sum the
  values per row in one pass, and compute the backward from the kept entries
  (the softmax weights are recomputed from q.k and the log-sum-exp).
* everywhere else (CUDA, bfloat16): :func:`lmscope.topk.selection.select_topk` picks the keys of a
  chunk, the selected rows of K and V are gathered and multiplied with
  ``bmm``; the key/value gradients are scattered back with ``index_add_``.

Selection is exact (ties aside).
"""

from __future__ import annotations

import math
import mmap

import numpy as np
import torch

from lmscope.topk.selection import select_topk

Tensor = torch.Tensor

#: Largest dense score buffer of one chunk, in elements: 32 MiB of float32 on CPU, 256 MiB elsewhere.
CHUNK_ELEMENTS = {"cpu": 1 << 23, "other": 1 << 26}


#: Largest gathered (rows, k, d_head) block of the gather backward, in elements.
GATHER_ELEMENTS = 1 << 24


def _chunk_budget(device: torch.device) -> int:
    return CHUNK_ELEMENTS["cpu" if device.type == "cpu" else "other"]


# --------------------------------------------------------------------------- validation
def _check_inputs(q, k, v, topk, chunk_size, mask, scale) -> None:
    if not isinstance(topk, int) or isinstance(topk, bool) or topk <= 0:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor (batch, heads, length, d_head)")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError("q, k, v must be on the same device")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    bq, hq, _, dq = q.shape
    bk, hk, _, dk = k.shape
    if bq != bk or dq != dk:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree in batch or d_head")
    if hq % hk:
        raise ValueError(f"q heads ({hq}) must be a multiple of k/v heads ({hk})")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dim() != 4:
            raise ValueError("mask must be a 4-D tensor broadcastable to (batch, q_heads, q_len, k_len)")
        want = (bq, hq, q.shape[2], k.shape[2])
        for got, full in zip(mask.shape, want):
            if got not in (1, full):
                raise ValueError(f"mask shape {tuple(mask.shape)} does not broadcast to {want}")
        if mask.dtype != torch.bool and not mask.is_floating_point():
            raise ValueError(f"mask must be bool (True = attend) or float (additive), got {mask.dtype}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):  # a finite sum means finite entries; else look closer
        if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
            raise ValueError(f"{name} contains non-finite values (nan or inf)")


# --------------------------------------------------------------------------- forward pieces
def _chunk_scores(
    qg: Tensor,
    kg: Tensor,
    q0: int,
    q1: int,
    cfg: dict,
    grouped_mask: Tensor | None,
    buf: Tensor,
    causal_fill: bool = True,
) -> Tensor:
    """Masked, scaled scores of queries [q0, q1): (G, g, C, L) with L the keys this chunk can see.

    qg (G, g, Tq, D), kg (G, Tk, D); grouped_mask broadcastable to (B, Hkv, g, Tq, Tk).
    ``causal_fill=False`` leaves the causal mask inside the chunk to the caller.
    """
    G, g, Tq, D = qg.shape
    Tk = kg.shape[1]
    C = q1 - q0
    width = Tk
    if cfg["causal"]:  # later keys are masked for every query of the chunk; keep >= k columns
        width = min(Tk, max(q1 + Tk - Tq, cfg["k_eff"]))
    s = buf[: G * g * C * width].view(G, g * C, width)
    q_c = qg[:, :, q0:q1].reshape(G, g * C, D) * cfg["scale"]
    torch.bmm(q_c, kg[:, :width].transpose(1, 2), out=s)
    if grouped_mask is not None:
        m = grouped_mask[:, :, :, q0:q1, :width] if grouped_mask.shape[3] > 1 else grouped_mask[..., :width]
        s_grouped = s.view(-1, cfg["n_kv"], g, C, width)
        if m.dtype == torch.bool:
            s_grouped.masked_fill_(~m, float("-inf"))
        else:
            s_grouped.add_(m.to(s.dtype))
    first = q0 + Tk - Tq + 1  # first key that some query of the chunk must not see
    if cfg["causal"] and causal_fill and first < width:  # query t (absolute) sees keys <= t + (Tk - Tq)
        qpos = torch.arange(q0, q1, device=s.device) + (Tk - Tq)
        kpos = torch.arange(max(first, 0), width, device=s.device)
        s.view(G, g, C, width)[..., max(first, 0) :].masked_fill_(kpos.view(1, 1, 1, -1) > qpos.view(1, 1, -1, 1), float("-inf"))
    return s.view(G, g, C, width)


def _softmax_kept(values: Tensor) -> Tensor:
    """Softmax over kept scores (R, k), in float32 or wider; a row with no finite score gets zero weight."""
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    mx = values.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(values - mx)
    return e / e.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)


def _index_dtype(n_keys: int) -> torch.dtype:
    """Smallest signed integer type for key indices and the -1 of an empty slot."""
    return torch.int16 if n_keys < 2**15 else torch.int32 if n_keys < 2**31 else torch.int64


def _use_kernels(t: Tensor) -> bool:
    """Whether the numba CPU kernels handle this tensor (CPU, float32/float64)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _load_cpu_kernels():
    """:mod:`lmscope.topk.cpu_kernels`, imported on first use rather than with this module (numba
    compiles the kernels or loads them from its cache, seconds), with numba using as many threads as torch."""
    import numba

    from lmscope.topk import cpu_kernels

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    return cpu_kernels


def _scratch(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised buffer of n elements. On CPU an anonymous memory map, so it goes back to the OS
    when freed (malloc may keep a freed block of tens of MiB resident for the rest of the process)."""
    if device.type != "cpu":
        return torch.empty(n, dtype=dtype, device=device)
    size = n * torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=dtype, count=n)


def _numpy_view(t: Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor: no copy, so kernels write into the tensor itself."""
    assert t.is_contiguous(), "kernel arguments must be contiguous"
    return t.detach().numpy()


def _grouped_mask(mask: Tensor | None, n_kv: int, g: int) -> Tensor | None:
    """Mask (B|1, Hq|1, Tq|1, Tk|1) as a view per kv-head group (B|1, Hkv|1, g|1, Tq|1, Tk|1),
    g = Hq // Hkv query heads per group."""
    if mask is None:
        return None
    mb, mh, mq, mk = mask.shape
    if mh == 1:
        return mask.view(mb, 1, 1, mq, mk)
    return mask.reshape(mb, n_kv, g, mq, mk)


# --------------------------------------------------------------------------- autograd
class _TopkAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, cfg):
        B, Hq, Tq, D = q.shape
        Hk, Tk = k.shape[1], k.shape[2]
        g, G = Hq // Hk, B * Hk
        qg, kg, vg = q.reshape(G, g, Tq, D), k.reshape(G, Tk, D), v.reshape(G, Tk, D)
        grouped_mask = _grouped_mask(mask, Hk, g)
        k_eff, C = cfg["k_eff"], cfg["chunk"]
        kernels = _use_kernels(q)
        idx = torch.empty(G, g, Tq, k_eff, dtype=_index_dtype(Tk), device=q.device)
        out = torch.empty(G, g, Tq, D, dtype=q.dtype, device=q.device)
        buf = _scratch(G * g * C * Tk, q.dtype, q.device)
        if kernels:  # weights are recomputed in backward unless an additive mask changed the scores
            cpu_kernels = _load_cpu_kernels()
            lse = torch.empty(G * g, Tq, dtype=q.dtype)
            float_mask = mask is not None and mask.dtype != torch.bool
            weights = torch.empty(G * g, Tq, k_eff if float_mask else 0, dtype=q.dtype)
            shift = Tk - Tq + 1  # causal: query t reads keys < t + shift
            idx_n, out_n = _numpy_view(idx.view(G * g, Tq, k_eff)), _numpy_view(out.view(G * g, Tq, D))
            lse_n, w_n, v_n = _numpy_view(lse), _numpy_view(weights), _numpy_view(vg)
        else:
            lse = torch.empty(0, device=q.device)
            weights = torch.empty(G, g, Tq, k_eff, dtype=q.dtype, device=q.device)
        for q0 in range(0, Tq, C):
            q1 = min(Tq, q0 + C)
            n = q1 - q0
            s = _chunk_scores(qg, kg, q0, q1, cfg, grouped_mask, buf, causal_fill=not kernels)  # (G, g, n, L)
            L = s.shape[-1]
            rows = s.reshape(G * g * n, L)
            if kernels:
                cpu_kernels.forward_rows(_numpy_view(rows), q0, shift, cfg["causal"], v_n, g, idx_n, lse_n, out_n, w_n)
                continue
            if k_eff >= L:
                vals, sel = rows, torch.arange(L, device=q.device).expand(G * g * n, L)
            else:
                vals, sel = select_topk(rows, k_eff)
            w = _softmax_kept(vals).to(q.dtype).view(G, g, n, k_eff)
            idx[:, :, q0:q1] = sel.view(G, g, n, k_eff)
            weights[:, :, q0:q1] = w
            v_sel = _gather_rows(vg, sel.reshape(G, g * n * k_eff))  # out = sum_j w_j v_j
            w_v = torch.bmm(w.reshape(G * g * n, 1, k_eff), v_sel.view(G * g * n, k_eff, D))
            out[:, :, q0:q1] = w_v.view(G, g, n, D)
        del buf
        ctx.save_for_backward(q, k, v, idx, weights, out, lse)
        ctx.cfg, ctx.kernels = cfg, kernels
        return out.view(B, Hq, Tq, D)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, idx, weights, out, lse = ctx.saved_tensors
        scale = ctx.cfg["scale"]
        B, Hq, Tq, D = q.shape
        Hk, Tk = k.shape[1], k.shape[2]
        g, G = Hq // Hk, B * Hk
        k_eff = idx.shape[-1]
        R = g * Tq  # query rows per kv group
        do = grad_out.contiguous().reshape(G, R, D)
        if ctx.kernels:  # CPU kernels; delta = dO . O is formed inside
            dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
            scale_n = (np.float64 if q.dtype == torch.float64 else np.float32)(scale)  # keeps the kernel in q's dtype
            qh, oh, doh, idxh, wh, dqh = (_numpy_view(t.reshape(G * g, Tq, -1)) for t in (q, out, do, idx, weights, dq))
            kh, vh, dkh, dvh = (_numpy_view(t.view(G, Tk, D)) for t in (k, v, dk, dv))
            _load_cpu_kernels().backward(qh, kh, vh, oh, doh, idxh, _numpy_view(lse), wh, scale_n, g, dqh, dkh, dvh)
            return dq, dk, dv, None, None
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        # dS = P * (dP - delta), delta_i = dO_i . O_i
        delta = (do.to(acc) * out.reshape(G, R, D).to(acc)).sum(-1, keepdim=True)  # (G, R, 1)
        qg, kg, vg = q.reshape(G, R, D), k.reshape(G, Tk, D), v.reshape(G, Tk, D)
        idx, p_all = idx.view(G, R, k_eff), weights.view(G, R, k_eff)
        dq, dk, dv = torch.empty_like(qg), torch.zeros_like(kg), torch.zeros_like(vg)
        C = max(1, GATHER_ELEMENTS // max(1, G * k_eff * D))  # query rows per step
        off = (torch.arange(G, device=q.device) * Tk).view(G, 1, 1)
        kf, vf = kg.reshape(G * Tk, D), vg.reshape(G * Tk, D)
        dkf, dvf = dk.view(G * Tk, D), dv.view(G * Tk, D)
        for r0 in range(0, R, C):
            r1 = min(R, r0 + C)
            n = r1 - r0
            flat = (idx[:, r0:r1].long() + off).reshape(-1)  # (G*n*k,)
            k_sel = kf.index_select(0, flat).view(G * n, k_eff, D)
            v_sel = vf.index_select(0, flat).view(G * n, k_eff, D)
            q_c = qg[:, r0:r1].reshape(G * n, 1, D)
            do_c = do[:, r0:r1].reshape(G * n, 1, D)
            p = p_all[:, r0:r1].reshape(G * n, k_eff, 1)
            dp = torch.bmm(v_sel, do_c.transpose(1, 2))  # (G*n, k, 1)
            ds = (p.to(acc) * (dp.to(acc) - delta[:, r0:r1].reshape(G * n, 1, 1))).to(q.dtype)
            dq[:, r0:r1] = (torch.bmm(ds.transpose(1, 2), k_sel) * scale).view(G, n, D)
            dkf.index_add_(0, flat, (ds * q_c).view(-1, D), alpha=scale)
            dvf.index_add_(0, flat, (p * do_c).view(-1, D))
        return dq.view(B, Hq, Tq, D), dk.view(B, Hk, Tk, D), dv.view(B, Hk, Tk, D), None, None


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x (G, L, D), idx (G, M) -> (G, M, D) rows of each group."""
    G, L, D = x.shape
    off = (torch.arange(G, device=x.device) * L).view(G, 1)
    return x.reshape(G * L, D).index_select(0, (idx + off).reshape(-1)).view(G, -1, D)


# --------------------------------------------------------------------------- public API
def default_chunk_size(batch_heads: int, n_keys: int, device: torch.device | str = "cpu") -> int:
    """Query chunk that keeps the dense score buffer within :data:`CHUNK_ELEMENTS`."""
    c = _chunk_budget(torch.device(device)) // max(1, batch_heads * n_keys)
    return int(max(16, min(1024, 2 ** int(math.log2(max(c, 1))))))


def topk_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    topk: int,
    chunk_size: int | None = None,
    causal: bool = False,
    mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Attention where each query keeps only its ``topk`` highest-scoring keys.

    Args:
        q: (B, Hq, Tq, D) queries.
        k, v: (B, Hkv, Tk, D) keys and values; Hq must be a multiple of Hkv
            (grouped-query heads: query head h reads kv head h // (Hq // Hkv)).
        topk: keys kept per query; ``topk >= Tk`` gives exact attention.
        chunk_size: queries per chunk (per head); None picks one that keeps the
            score buffer within :data:`CHUNK_ELEMENTS`.
        causal: query t sees keys up to t + (Tk - Tq) (last query aligned with
            the last key, as in Hugging Face's causal mask).
        mask: bool (True = attend) or float (added to the scores), broadcastable
            to (B, Hq, Tq, Tk). Queries with fewer valid keys than ``topk`` give
            the extra slots zero weight; a query with no valid key outputs 0.
        scale: score scale, default D ** -0.5.

    Returns:
        (B, Hq, Tq, D), the dtype of q.

    >>> q = k = v = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    >>> exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    >>> torch.allclose(topk_attention(q, k, v, topk=5), exact)
    True
    """
    _check_inputs(q, k, v, topk, chunk_size, mask, scale)
    B, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    k_eff = min(topk, Tk)
    if chunk_size is None:
        chunk_size = default_chunk_size(B * Hq, Tk, q.device)
    cfg = {
        "k_eff": k_eff,
        "chunk": min(chunk_size, Tq),
        "causal": bool(causal),
        "scale": float(D**-0.5 if scale is None else scale),
        "n_kv": k.shape[1],
    }
    return _TopkAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), mask, cfg)


def topk_attention_reference(q, k, v, topk, causal=False, mask=None, scale=None) -> Tensor:
    """Plain dense top-k attention (differentiable by autograd), for tests: (B, Hq, Tq, D)."""
    B, Hq, Tq, D = q.shape
    Hk, Tk = k.shape[1], k.shape[2]
    g = Hq // Hk
    kk = k.repeat_interleave(g, dim=1)
    vv = v.repeat_interleave(g, dim=1)
    s = q @ kk.transpose(-1, -2) * (D**-0.5 if scale is None else scale)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    if causal:
        keep = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
        s = s.masked_fill(~keep, float("-inf"))
    kk_ = min(topk, Tk)
    vals, idx = torch.topk(s, kk_, dim=-1)
    sparse = torch.full_like(s, float("-inf")).scatter(-1, idx, vals)
    p = torch.softmax(sparse, dim=-1).nan_to_num(0.0)
    return p @ vv
