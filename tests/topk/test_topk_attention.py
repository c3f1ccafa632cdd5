"""lmscope.topk.attention (and its selection and CPU kernels): against references, masks, GQA, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lmscope.topk.attention as ta
from lmscope.topk.attention import select_topk, topk_attention, topk_attention_reference


def _gqa(x: torch.Tensor, g: int) -> torch.Tensor:
    return x.repeat_interleave(g, dim=1)


@pytest.fixture(params=["kernels", "gather"])
def path(request, monkeypatch):
    """Run a test on both backward implementations (CPU numba kernels and gathers)."""
    if request.param == "gather":
        monkeypatch.setattr(ta, "_use_kernels", lambda t: False)
    return request.param


def _qkv(B=2, Hq=4, Hk=2, Tq=23, Tk=23, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda h, t: torch.randn(B, h, t, D, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    return mk(Hq, Tq), mk(Hk, Tk), mk(Hk, Tk)


@pytest.mark.parametrize("causal", [False, True])
def test_equals_sdpa_when_topk_covers_all_keys(path, causal, monkeypatch):
    q, k, v = _qkv()
    out = topk_attention(q, k, v, topk=64, chunk_size=5, causal=causal)
    ref = F.scaled_dot_product_attention(q, _gqa(k, 2), _gqa(v, 2), is_causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    go = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q, k, v), go)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_against_reference(path, causal):
    q, k, v = _qkv(B=1, Hq=2, Hk=1, Tq=9, Tk=9, D=4)
    f = lambda q, k, v: topk_attention(q, k, v, topk=3, chunk_size=4, causal=causal)  # noqa: E731
    torch.autograd.gradcheck(f, (q, k, v))
    out, ref = f(q, k, v), topk_attention_reference(q, k, v, 3, causal=causal)
    torch.testing.assert_close(out, ref)
    go = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q, k, v), go)):
        torch.testing.assert_close(a, b)


def test_long_rows_use_exact_selection(path, monkeypatch):
    """Rows long enough for the block and threshold selectors still give the exact top-k;
    the gather backward runs in several steps."""
    monkeypatch.setattr(ta, "GATHER_ELEMENTS", 3000)
    q, k, v = _qkv(B=1, Hq=2, Hk=1, Tq=40, Tk=1100, D=8)
    out = topk_attention(q, k, v, topk=16, chunk_size=16, causal=True)
    ref = topk_attention_reference(q, k, v, 16, causal=True)
    torch.testing.assert_close(out, ref)
    go = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q, k, v), go)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("length", [600, 3000, 9000])
def test_select_topk_is_exact(length):
    s = torch.randn(40, length)
    s[:4, 10:] = float("-inf")  # fewer valid entries than k
    values, idx = select_topk(s, 128)
    torch.testing.assert_close(values.sort(-1).values, torch.topk(s, 128).values.sort(-1).values)
    assert torch.equal(torch.gather(s, 1, idx), values)


def _hard_rows(n: int) -> dict[str, np.ndarray]:
    """Rows that stress a threshold selector: ties, sorted runs, masked stretches, few finite entries."""
    rng = np.random.default_rng(n)
    rows = {
        "random": rng.standard_normal(n),
        "all equal": np.zeros(n),
        "ascending": np.arange(n, dtype=float),  # every entry beats the running threshold
        "descending": -np.arange(n, dtype=float),
        "few levels": rng.integers(0, 3, n).astype(float),  # many ties at the k-th value
        "one big block": np.where(np.arange(n) % 97 == 0, 5.0 + rng.random(n), rng.random(n)),
    }
    masked = rng.standard_normal(n)
    masked[rng.random(n) < 0.9] = -np.inf
    rows["mostly masked"] = masked
    few = np.full(n, -np.inf)
    few[rng.choice(n, 5, replace=False)] = rng.standard_normal(5)
    rows["fewer finite than k"] = few
    return rows


@pytest.mark.parametrize("n", [40, 200, 513, 1000, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_row_selection_is_exact_and_ascending(n, dtype):
    from lmscope.topk import cpu_kernels as kern

    k = 64
    vals, ids = np.empty(4 * k, dtype), np.empty(4 * k, np.int64)
    block_max, blocks, work = np.empty(4 * k, dtype), np.empty(4 * k, np.int64), np.empty(4 * k, dtype)
    for name, row in _hard_rows(n).items():
        x = row.astype(dtype)
        cnt = kern._select_row(x, n, k, vals, ids, block_max, blocks, work)
        finite = np.isfinite(x)
        assert cnt == min(k, int(finite.sum())), name
        got, where = vals[:cnt], ids[:cnt]
        assert np.all(np.diff(where) > 0), f"{name}: ids not ascending"
        assert np.array_equal(x[where], got), name
        want = np.sort(x[finite])[::-1][:cnt]
        assert np.array_equal(np.sort(got)[::-1], want), f"{name}: not the top {k}"


def test_kernel_forward_pads_and_handles_causal_rows():
    """forward_rows: short causal rows keep all their keys, padded with -1; outputs match the reference."""
    q, k, v = _qkv(B=1, Hq=2, Hk=1, Tq=300, Tk=300, D=8)
    out = topk_attention(q, k, v, topk=20, chunk_size=64, causal=True)
    torch.testing.assert_close(out, topk_attention_reference(q, k, v, 20, causal=True))
    idx = out.grad_fn.saved_tensors[3]  # (G, g, Tq, k): query t < 19 has t + 1 keys
    assert idx.dtype == torch.int16
    assert (idx[0, 0, 5, :6] == torch.arange(6, dtype=torch.int16)).all() and (idx[0, 0, 5, 6:] == -1).all()


def test_padding_mask_with_fewer_valid_keys_than_k(path):
    q, k, v = _qkv(B=2, Hq=4, Hk=2, Tq=6, Tk=10)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., 3:] = False  # batch 0 sees 3 keys, k = 5
    out = topk_attention(q, k, v, topk=5, mask=mask)
    torch.testing.assert_close(out, topk_attention_reference(q, k, v, 5, mask=mask))
    exact = F.scaled_dot_product_attention(q[:1], _gqa(k[:1, :, :3], 2), _gqa(v[:1, :, :3], 2))
    torch.testing.assert_close(out[:1], exact)  # the two extra slots got zero weight
    go = torch.randn_like(out)
    ref = topk_attention_reference(q, k, v, 5, mask=mask)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q, k, v), go)):
        torch.testing.assert_close(a, b)


def test_causal_queries_with_fewer_keys_than_k_and_float_mask(path):
    q, k, v = _qkv(Tq=12, Tk=12)
    add = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    add[..., 5] = torch.finfo(torch.float64).min  # HF-style additive mask
    out = topk_attention(q, k, v, topk=4, chunk_size=5, causal=True, mask=add)
    torch.testing.assert_close(out, topk_attention_reference(q, k, v, 4, causal=True, mask=add))


def test_per_head_mask_and_fully_masked_query():
    q, k, v = _qkv(B=1, Hq=4, Hk=2, Tq=5, Tk=7)
    mask = torch.rand(1, 4, 5, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[0, 1, 2] = False  # a query with no valid key outputs 0
    out = topk_attention(q, k, v, topk=3, mask=mask)
    ref = topk_attention_reference(q, k, v, 3, mask=mask)
    torch.testing.assert_close(out, ref)
    assert out[0, 1, 2].abs().max() == 0


def test_bfloat16_close_to_float32():
    """With k = all keys, bf16 matches float32 SDPA to bf16 precision (smaller k can flip near-ties)."""
    q, k, v = (t.detach().bfloat16().requires_grad_() for t in _qkv(Tq=40, Tk=40, D=16))
    out = topk_attention(q, k, v, topk=40, causal=True)
    assert out.dtype == torch.bfloat16
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, _gqa(k32, 2), _gqa(v32, 2), is_causal=True)
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    go = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (q, k, v), go.bfloat16())
    for a, b in zip(grads, torch.autograd.grad(ref, (q32, k32, v32), go)):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, atol=6e-2, rtol=6e-2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"topk": 0}, "topk"),
        ({"topk": -3}, "topk"),
        ({"topk": 4, "chunk_size": 0}, "chunk_size"),
        ({"topk": 4, "mask": torch.ones(1, 1, 3, 7, dtype=torch.bool)}, "mask"),
        ({"topk": 4, "mask": torch.ones(5, 7, dtype=torch.bool)}, "mask"),
        ({"topk": 4, "mask": torch.ones(1, 1, 5, 7, dtype=torch.int64)}, "mask"),
    ],
)
def test_bad_arguments(kwargs, match):
    q, k, v = (t.detach() for t in _qkv(B=1, Hq=2, Hk=1, Tq=5, Tk=7))
    with pytest.raises(ValueError, match=match):
        topk_attention(q, k, v, **kwargs)


def test_bad_tensors():
    q, k, v = (t.detach() for t in _qkv(B=1, Hq=2, Hk=1, Tq=5, Tk=7))
    with pytest.raises(ValueError, match="dtype"):
        topk_attention(q.float(), k, v, topk=2)
    with pytest.raises(ValueError, match="k and v"):
        topk_attention(q, k, v[:, :, :3], topk=2)
    with pytest.raises(ValueError, match="heads"):
        topk_attention(q[:, :1].expand(1, 3, 5, 8), torch.randn(1, 2, 7, 8, dtype=q.dtype), v.expand(1, 2, 7, 8), topk=2)
    with pytest.raises(ValueError, match="d_head"):
        topk_attention(q[..., :4], k, v, topk=2)
    with pytest.raises(ValueError, match="4-D"):
        topk_attention(q[0], k, v, topk=2)
    bad = q.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="q contains non-finite"):
        topk_attention(bad, k, v, topk=2)
    with pytest.raises(ValueError, match="v contains non-finite"):
        topk_attention(q, k, v * float("inf"), topk=2)
