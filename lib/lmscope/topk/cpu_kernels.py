"""CPU kernels of top-k attention, compiled with numba.

:func:`forward_rows` takes one chunk of dense scores (written by a BLAS ``bmm``)
and, per query row, selects the top k keys, takes the softmax over them and the
weighted sum of their values, in one pass over the row. :func:`backward` then
touches only the selected keys and values: five length-d products per kept
entry, O(N k d) work and no temporaries of size N k.

Selection (:func:`_select_row`) takes the maxima of up to 4k blocks of a row
(one vectorised pass) and finds by bisection a threshold that a little over k
of them reach, so at least k scores reach it; it collects the scores above it
from the blocks that can hold any, in ascending key order, and keeps the k
largest in that order (a branch-free quickselect finds the k-th). Ascending
keys make the reads of V, K and the writes of dK, dV of a row more local.
Scores equal to -inf (masked) are never kept; a row with fewer than k finite
scores pads with index -1.

Conventions: a head-row ``h`` indexes (batch, query head) pairs, ``h // g`` is
its key/value group; ``q``/``out`` are (heads, Tq, D), ``k``/``v`` (groups, Tk, D).
"""

from __future__ import annotations

import math
import os

import numba as nb
import numpy as np

# numba's own thread pool, not OpenMP: with the "omp" layer (numba's default pick where libgomp is found),
# every torch op of the process ran about 4x slower after the first parallel kernel (two OpenMP runtimes
# in one process). An explicit NUMBA_THREADING_LAYER is left alone.
if "NUMBA_THREADING_LAYER" not in os.environ:
    nb.config.THREADING_LAYER = "workqueue"

#: Float rewrites allowed: reassociation etc. so reductions vectorise; no "ninf" (masked scores are -inf).
FAST = {"nnan", "nsz", "arcp", "contract", "reassoc"}
#: Query rows per parallel task of the forward (one candidate buffer per task).
ROWS_PER_TASK = 32


@nb.njit(cache=True, fastmath=FAST)
def _kth_largest(work, n, k):
    """The k-th largest of work[:n] (reorders it): quickselect with branch-free partitions.

    A data-dependent branch per entry would be mispredicted half the time.
    """
    lo, hi = 0, n
    while lo < k < hi:  # [0, lo) >= [lo, hi) >= [hi, n)
        a, b, c = work[lo], work[(lo + hi) >> 1], work[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        p = lo
        for i in range(lo, hi):  # entries above the pivot to the front
            v = work[i]
            work[i] = work[p]
            work[p] = v
            p += v > pivot
        if p >= k:
            hi = p
            continue
        for i in range(p, hi):  # then those equal to it
            v = work[i]
            work[i] = work[p]
            work[p] = v
            p += v == pivot
        if p >= k:
            return pivot
        lo = p
    kth = work[0]
    for i in range(1, k):
        kth = min(kth, work[i])
    return kth


@nb.njit(cache=True, fastmath=FAST)
def _keep_top(vals, ids, n, k, work):
    """Keep the k largest of vals[:n] (and their ids) in vals[:k], in their order; returns the k-th largest."""
    work[:n] = vals[:n]
    kth = _kth_largest(work, n, k)
    ties = k
    for i in range(n):
        ties -= vals[i] > kth
    out = 0
    for i in range(n):  # branch-free, order-keeping compaction
        v = vals[i]
        keep = v > kth or (v == kth and ties > 0)
        ties -= v == kth and keep
        vals[out] = v
        ids[out] = ids[i]
        out += keep
    return kth


@nb.njit(cache=True, fastmath=FAST, inline="always")
def _dot(a, b):
    """a . b over their length, accumulated in their dtype."""
    s = a[0] * b[0]
    for d in range(1, a.shape[0]):
        s += a[d] * b[d]
    return s


@nb.njit(cache=True, fastmath=FAST)
def _block_max(x, n, m, out):
    """out[i] = max of the strided block i of x[:n]: entries i, i + m, i + 2m, ... (one vectorised pass)."""
    b = n // m
    out[:m] = x[:m]
    for e in range(1, b):
        seg = x[e * m : (e + 1) * m]
        for i in range(m):
            if seg[i] > out[i]:
                out[i] = seg[i]
    tail = x[b * m : n]
    for i in range(tail.shape[0]):
        if tail[i] > out[i]:
            out[i] = tail[i]


@nb.njit(cache=True, fastmath=FAST)
def _threshold(block_max, m, k):
    """A value that at least k of block_max[:m] reach and few more (bisection on counts); -inf if under k are finite.

    Every block holds its maximum, so at least k entries of the row reach the
    result: a valid threshold for the row's top k.
    """
    lo, hi, finite = np.inf, -np.inf, 0
    for i in range(m):
        v = block_max[i]
        if v > -np.inf:
            finite += 1
            lo = min(lo, v)
            hi = max(hi, v)
    if finite <= k:
        return -np.inf
    for _ in range(24):  # count(block_max >= lo) >= k throughout
        mid = lo + (hi - lo) * 0.5
        if not (lo < mid < hi):
            break
        c = 0
        for i in range(m):
            c += 1 if block_max[i] >= mid else 0
        if c >= k:
            lo = mid
            if 8 * c <= 9 * k:
                break
        else:
            hi = mid
    return lo


@nb.njit(cache=True, fastmath=FAST)
def _select_row(x, n, k, vals, ids, block_max, blocks, work):
    """Top k of x[:n] (finite entries only) into vals[:k], ids[:k] with ascending ids; returns how many (<= k).

    Rows of up to 4k entries keep every finite entry. Longer rows are cut into
    m = min(4k, n // 2) strided blocks (block i: entries i, i + m, i + 2m, ...);
    a threshold reached by at least k block maxima (:func:`_threshold`) is
    reached by at least k entries, so only the blocks whose maximum reaches it
    are read, segment by segment (which keeps the ids ascending). When
    ``vals`` (capacity cap > k) fills, its k largest are kept and the k-th
    becomes the threshold. Scratch ``ids``, ``work``: cap entries;
    ``block_max``, ``blocks``: 4k.
    """
    cap = vals.shape[0]
    count = 0
    if n <= 4 * k:
        for j in range(n):
            if x[j] > -np.inf:
                vals[count] = x[j]
                ids[count] = j
                count += 1
    else:
        m = min(4 * k, n // 2)
        _block_max(x, n, m, block_max)
        thr = _threshold(block_max, m, k)
        n_blocks = 0
        for i in range(m):
            if block_max[i] >= thr and block_max[i] > -np.inf:
                blocks[n_blocks] = i
                n_blocks += 1
        for start in range(0, n, m):
            for t in range(n_blocks):
                j = start + blocks[t]
                if j >= n:
                    break
                s = x[j]
                if s >= thr and s > -np.inf:
                    vals[count] = s
                    ids[count] = j
                    count += 1
                    if count == cap:  # keep the k largest; the k-th is the new threshold
                        thr = _keep_top(vals, ids, count, k, work)
                        count = k
    if count > k:
        _keep_top(vals, ids, count, k, work)
        count = k
    return count


@nb.njit(parallel=True, cache=True, fastmath=FAST)
def forward_rows(scores, q0, shift, causal, v, g, idx, lse, out, weights):
    """Top-k softmax attention for one chunk of query rows, from their dense scores.

    scores (R, W): row r is head-row ``r // n`` and query ``q0 + r % n``, with
    n = R // heads; masked entries are -inf. With ``causal``, query t reads
    keys < t + shift only (the causal mask need not be written into ``scores``).
    Writes, per row: idx (heads, Tq, k) kept keys (-1 = empty slot), lse
    (heads, Tq) log-sum-exp of the kept scores (-inf if none), out (heads, Tq,
    D), and the softmax weights if ``weights`` has k columns.
    """
    R, W = scores.shape
    heads, _, k = idx.shape
    n = R // heads
    D = v.shape[2]
    save_w = weights.shape[2] == k
    n_tasks = (R + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in nb.prange(n_tasks):
        vals = np.empty(4 * k, scores.dtype)
        ids = np.empty(4 * k, np.int64)
        block_max = np.empty(4 * k, scores.dtype)
        blocks = np.empty(4 * k, np.int64)
        work = np.empty(4 * k, scores.dtype)
        acc = np.empty(D, scores.dtype)
        for r in range(task * ROWS_PER_TASK, min(R, (task + 1) * ROWS_PER_TASK)):
            h, t = r // n, q0 + r % n
            grp = h // g
            length = max(0, min(W, t + shift)) if causal else W
            cnt = _select_row(scores[r], length, k, vals, ids, block_max, blocks, work)
            mx = -np.inf
            for j in range(cnt):
                mx = max(mx, vals[j])
            total = 0.0
            for j in range(cnt):
                vals[j] = math.exp(vals[j] - mx)
                total += vals[j]
            lse[h, t] = mx + math.log(total) if cnt else -np.inf
            acc[:] = 0.0
            for j in range(cnt):
                vals[j] = vals[j] / total
                w = vals[j]  # typed like the scores
                row = v[grp, ids[j]]
                for d in range(D):
                    acc[d] += w * row[d]
            out[h, t] = acc
            for j in range(k):
                idx[h, t, j] = ids[j] if j < cnt else -1
            if save_w:
                for j in range(k):
                    weights[h, t, j] = vals[j] if j < cnt else 0.0


#: Bytes of K, V, dK and dV rows one backward tile covers (kept in the L2 cache while its entries are processed).
TILE_BYTES = 1 << 20


@nb.njit(parallel=True, cache=True, fastmath=FAST)
def backward(q, k, v, out, do, idx, lse, weights, scale, g, dq, dk, dv):
    """Gradients of top-k attention from the kept keys only; dk and dv must be zero on entry.

    ``scale`` is a scalar of the inputs' dtype (np.float32 / np.float64).
    p = weights if ``weights`` has k columns, else exp(scale q.k - lse);
    dS = p (dO.v - delta) with delta = dO.out (out: the forward's output);
    dq = scale sum dS k, dk += scale dS q, dv += p dO. Parallel over key/value groups (each owns its
    rows of dk and dv). Keys are visited in tiles of :data:`TILE_BYTES` of K,
    V, dK, dV rows: every query row handles its kept keys of one tile (its keys
    are ascending, so a cursor per row walks through them) before the next
    tile, so the scattered reads and writes hit the cache.
    """
    heads, Tq, K = idx.shape
    G, Tk, D = k.shape
    saved_w = weights.shape[2] == K
    tile = max(16, TILE_BYTES // (4 * D * k.itemsize))
    for grp in nb.prange(G):
        kg, vg, dkg, dvg = k[grp], v[grp], dk[grp], dv[grp]
        cursor = np.zeros((g, Tq), np.int64)
        a = np.empty(D, q.dtype)
        delta = np.empty((g, Tq), q.dtype)
        for hh in range(g):
            h = grp * g + hh
            dq[h] = 0.0
            for t in range(Tq):
                delta[hh, t] = _dot(do[h, t], out[h, t])
        for k1 in range(tile, Tk + tile, tile):
            for hh in range(g):
                h = grp * g + hh
                for t in range(Tq):
                    c = cursor[hh, t]
                    if c >= K or idx[h, t, c] < 0 or idx[h, t, c] >= k1:
                        continue
                    qt, dot, lt, dt = q[h, t], do[h, t], lse[h, t], delta[hh, t]
                    a[:] = 0.0
                    while c < K:
                        key = idx[h, t, c]
                        if key < 0 or key >= k1:
                            break
                        krow, vrow = kg[key], vg[key]
                        if saved_w:
                            p = weights[h, t, c]
                        else:
                            p = math.exp(_dot(qt, krow) * scale - lt)
                        ds = p * (_dot(dot, vrow) - dt)
                        dks = ds * scale
                        dkrow, dvrow = dkg[key], dvg[key]
                        for d in range(D):  # three loops: each vectorises on its own
                            a[d] += ds * krow[d]
                        for d in range(D):
                            dkrow[d] += dks * qt[d]
                        for d in range(D):
                            dvrow[d] += p * dot[d]
                        c += 1
                    cursor[hh, t] = c
                    for d in range(D):
                        dq[h, t, d] += a[d] * scale
