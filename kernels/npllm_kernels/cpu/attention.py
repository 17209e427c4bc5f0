"""Flash attention forward and backward on the CPU (Numba); reference: ``npllm.layers.attention``.

    S = Q Kᵀ/√d,   P = softmax(S) over allowed keys,   O = P V                 (Vaswani et al. 2017)

The reference materialises S, P and dP: three (B, H, Tq, Tk) arrays, 208 MiB at B=H=4, T=1024. This
kernel follows FlashAttention-2 (Dao 2023): the forward holds one BLOCK_Q × BLOCK_K tile of them per
thread, the backward one Tq × BLOCK_K column strip per thread:

* forward: for a tile of BLOCK_Q queries, sweep the keys in tiles of BLOCK_K with an *online softmax*
  (Milakov & Gimelshein 2018): keep each row's running max m and running sum l of exp(s − m), and when
  a new tile raises the max, rescale what was accumulated by exp(m_old − m_new). At the end O = acc / l.
  The cache keeps only O and the per-row log-sum-exp L = m + log l (plus q, k, v and the mask), O(T·d).
* backward: D = rowsum(dO ⊙ O) first (it equals Σ_j P_ij dP_ij, the softmax backward's row term). Then
  for each key tile, sweep the query tiles, *recompute* P = exp(S − L) (cheaper than storing T×T),
  form dS = P ⊙ (dO Vᵀ − D) and accumulate dQ += dS K/√d. P and dS of the key tile's column (all
  queries × BLOCK_K keys: O(T) memory) are kept, so dV = Pᵀ dO and dK = dSᵀ Q/√d are one product each.
* causal: tiles entirely above the diagonal are skipped, so causal attention does about half the work.
* a query with no allowed key keeps m = −inf and l = 0: it outputs zeros, stores L = −inf, and the
  backward's exp(S − L) is forced to 0 for it, so it passes no gradient and nothing is NaN.

The tile products use ``np.dot`` on contiguous tiles (BLAS: faster than any loop we wrote, PERF-NOTES
lesson 1) with BLAS held to one thread while the ``prange`` over (batch·head, query tile) work items
keeps the cores busy (see ``_threads``). Work items are dealt round-robin to one loop per thread, so each
thread owns its scratch tiles (allocated here in Python, visible to tracemalloc) and causal rows of
different cost are spread evenly. The backward runs one item per batch·head when there are at least as
many as threads (dQ written in place); otherwise one per (batch·head, key tile), each thread summing its
dQ into its own buffer, added up at the end. ``fast_exp`` (``_math``) keeps the exp loops vectorized.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, upstream
from npllm.layers.attention import check_attention_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_exp
from npllm_kernels.cpu._threads import for_thread_count, serial_twin, single_threaded_blas

BLOCK_Q = 64    # queries per tile; a 64 × 128 score tile is 32 KiB in float32 and stays in L1 (48 KiB)
BLOCK_K = 128   # keys per tile


class FlashAttentionCache(NamedTuple):
    q: np.ndarray             # (B·H, Tq, d) contiguous
    k: np.ndarray             # (B·H, Tk, d)
    v: np.ndarray             # (B·H, Tk, dv)
    out: np.ndarray           # (B·H, Tq, dv) the forward's output
    lse: np.ndarray           # (B·H, Tq) log Σ_j exp(s_ij) over allowed keys; −inf for a fully masked row
    mask: np.ndarray          # flat bool array read through mask_strides (a single True when no mask)
    mask_strides: np.ndarray  # (4,) int64 element strides of the mask over (B, H, Tq, Tk); 0 = broadcast
    has_mask: bool
    causal: bool
    shape: tuple              # (B, H, Tq, Tk, d, dv)


def _mask_layout(mask):
    """A bool mask broadcastable to ``shape`` as (flat array, (4,) strides), without materialising it."""
    if mask is None:
        return np.ones(1, dtype=np.bool_), np.zeros(4, dtype=np.int64), False
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    # Undo broadcasting the caller may have done already (stride 0), so the copy below stays small.
    m = m[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in m.strides)]
    m = np.ascontiguousarray(m)
    strides = np.array([0 if m.shape[a] == 1 else m.strides[a] for a in range(4)], dtype=np.int64)  # bytes = elements
    return m.reshape(-1), strides, True


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _scaled_copy(src, scale, dst):
    """dst[:] = src * scale for 2-D arrays, without the temporary an array expression allocates."""
    for r in range(src.shape[0]):
        for c in range(src.shape[1]):
            dst[r, c] = src[r, c] * scale


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _row_max(row, start):
    """max(start, max(row)).  Four running maxima: one alone is a chain of dependent compares (each
    waits for the previous, about 4 cycles); four independent chains let the CPU overlap them (2x).
    LLVM will not vectorize a float max reduction unless told there are no NaNs (``nnan``), which we
    do not promise."""
    m0 = m1 = m2 = m3 = start
    n = row.shape[0]
    full = n - n % 4
    for c in range(0, full, 4):
        m0 = max(m0, row[c])
        m1 = max(m1, row[c + 1])
        m2 = max(m2, row[c + 2])
        m3 = max(m3, row[c + 3])
    for c in range(full, n):
        m0 = max(m0, row[c])
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _mask_tile(s, bh, n_head, i0, j0, mask, mstr, has_mask, causal, offset):
    """Set s[r, c] = −inf where query i0 + r may not see key j0 + c (causal and/or the boolean mask)."""
    rows, cols = s.shape
    for r in range(rows):
        if causal:   # keys j > i + offset are in the future
            for c in range(max(0, i0 + r + offset - j0 + 1), cols):
                s[r, c] = -np.inf
        if has_mask:
            base = (bh // n_head) * mstr[0] + (bh % n_head) * mstr[1] + (i0 + r) * mstr[2] + j0 * mstr[3]
            for c in range(cols):
                if not mask[base + c * mstr[3]]:
                    s[r, c] = -np.inf


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH)
def _forward_kernel(q, k, v, scale, mask, mstr, has_mask, causal, n_head, out, lse, scratch):
    """q (BH, Tq, d), k (BH, Tk, d), v (BH, Tk, dv) → writes out (BH, Tq, dv) and lse (BH, Tq)."""
    BH, Tq, d = q.shape
    Tk, dv = k.shape[1], v.shape[2]
    offset = Tk - Tq                                    # causal: query i sees keys j ≤ i + offset
    q_buf, s_buf, pv_buf, acc_buf, m_buf, l_buf = scratch
    n_workers = q_buf.shape[0]
    n_q_tiles = (Tq + BLOCK_Q - 1) // BLOCK_Q
    for worker in prange(n_workers):
        for item in range(worker, BH * n_q_tiles, n_workers):
            bh, i0 = item // n_q_tiles, (item % n_q_tiles) * BLOCK_Q
            rows = min(BLOCK_Q, Tq - i0)
            q_tile = q_buf[worker, :rows * d].reshape((rows, d))
            _scaled_copy(q[bh, i0:i0 + rows], scale, q_tile)   # fold 1/√d into Q once per tile
            acc = acc_buf[worker, :rows * dv].reshape((rows, dv))
            acc[:] = 0
            m, l = m_buf[worker], l_buf[worker]
            m[:] = -np.inf
            l[:] = 0
            key_stop = min(Tk, i0 + rows + offset) if causal else Tk   # later keys: masked for every row
            for j0 in range(0, max(key_stop, 0), BLOCK_K):
                cols = min(BLOCK_K, key_stop - j0)
                s = s_buf[worker, :rows * cols].reshape((rows, cols))
                np.dot(q_tile, k[bh, j0:j0 + cols].T, s)                # scores (rows, cols), BLAS
                _mask_tile(s, bh, n_head, i0, j0, mask, mstr, has_mask,
                           causal and j0 + cols - 1 > i0 + offset, offset)
                for r in range(rows):
                    row_max = _row_max(s[r], m[r])
                    if row_max == -np.inf:                # nothing allowed yet: contributes nothing
                        s[r, :] = 0
                        continue
                    alpha = fast_exp(m[r] - row_max)      # rescales the old sums (0 when m was −inf)
                    total = s.dtype.type(0)
                    for c in range(cols):
                        p = fast_exp(s[r, c] - row_max)
                        s[r, c] = p
                        total += p
                    l[r] = l[r] * alpha + total
                    m[r] = row_max
                    for c in range(dv):
                        acc[r, c] *= alpha
                pv = pv_buf[worker, :rows * dv].reshape((rows, dv))
                np.dot(s, v[bh, j0:j0 + cols], pv)                     # P V for this tile, BLAS
                acc += pv
            for r in range(rows):
                if l[r] > 0:
                    inv = 1 / l[r]
                    for c in range(dv):
                        out[bh, i0 + r, c] = acc[r, c] * inv
                    lse[bh, i0 + r] = m[r] + np.log(l[r])
                else:                                     # fully masked query: zeros, L = −inf
                    out[bh, i0 + r, :] = 0
                    lse[bh, i0 + r] = -np.inf


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH)
def _row_dot_kernel(dout, out, result):
    """result[bh, i] = Σ_c dout[bh, i, c] · out[bh, i, c]   (D in FlashAttention-2)."""
    BH, T, dv = out.shape
    for bh in prange(BH):
        for i in range(T):
            total = out.dtype.type(0)
            for c in range(dv):
                total += dout[bh, i, c] * out[bh, i, c]
            result[bh, i] = total


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH)
def _backward_kernel(q, k, v, dout, lse, row_dot, scale, mask, mstr, has_mask, causal, n_head,
                     dq_parts, dk, dv, scratch):
    """dout (BH, Tq, dv) → adds dQ into dq_parts (slots, BH, Tq, d); writes dk (BH, Tk, d), dv (BH, Tk, dv)."""
    BH, Tq, d = q.shape
    Tk, dv_width = k.shape[1], v.shape[2]
    offset = Tk - Tq
    q_buf, p_buf, ds_buf, tmp_q_buf = scratch
    n_workers = q_buf.shape[0]
    n_k_tiles = (Tk + BLOCK_K - 1) // BLOCK_K
    # One item per batch·head (dQ written in place, dq_parts has 1 slot) or per (batch·head, key tile)
    # (each worker sums dQ into its own slot of dq_parts).
    per_tile = dq_parts.shape[0] > 1
    n_items = BH * n_k_tiles if per_tile else BH
    for worker in prange(n_workers):
        dq = dq_parts[worker] if per_tile else dq_parts[0]
        for item in range(worker, n_items, n_workers):
            bh = item // n_k_tiles if per_tile else item
            first_tile = item % n_k_tiles if per_tile else 0
            last_tile = first_tile + 1 if per_tile else n_k_tiles
            for j0 in range(first_tile * BLOCK_K, min(Tk, last_tile * BLOCK_K), BLOCK_K):
                cols = min(BLOCK_K, Tk - j0)
                k_tile, v_tile = k[bh, j0:j0 + cols], v[bh, j0:j0 + cols]
                # Under causal masking the first query that sees key j0 is i = j0 − offset.
                i_start = (max(0, j0 - offset) // BLOCK_Q) * BLOCK_Q if causal else 0
                if i_start >= Tq:
                    continue                                   # no query sees these keys: dK = dV = 0
                # P and dS for this key tile and every query that sees it: a (Tq − i_start) × cols
                # column strip, O(T) memory, so dV and dK come out of one product each at the end.
                p_strip = p_buf[worker, :(Tq - i_start) * cols].reshape((Tq - i_start, cols))
                ds_strip = ds_buf[worker, :(Tq - i_start) * cols].reshape((Tq - i_start, cols))
                for i0 in range(i_start, Tq, BLOCK_Q):
                    rows = min(BLOCK_Q, Tq - i0)
                    q_tile = q_buf[worker, :rows * d].reshape((rows, d))
                    _scaled_copy(q[bh, i0:i0 + rows], scale, q_tile)
                    p = p_strip[i0 - i_start:i0 - i_start + rows]
                    np.dot(q_tile, k_tile.T, p)                                 # scores S
                    _mask_tile(p, bh, n_head, i0, j0, mask, mstr, has_mask,
                               causal and j0 + cols - 1 > i0 + offset, offset)
                    for r in range(rows):                                       # P = exp(S − L)
                        row_lse = lse[bh, i0 + r]
                        if row_lse == -np.inf:                                  # fully masked query
                            p[r, :] = 0
                        else:
                            for c in range(cols):
                                p[r, c] = fast_exp(p[r, c] - row_lse)
                    ds = ds_strip[i0 - i_start:i0 - i_start + rows]
                    np.dot(dout[bh, i0:i0 + rows], v_tile.T, ds)                # dP = dO Vᵀ
                    for r in range(rows):                                       # dS = P ⊙ (dP − D)
                        row_d = row_dot[bh, i0 + r]
                        for c in range(cols):
                            ds[r, c] = p[r, c] * (ds[r, c] - row_d)
                    tmp_q = tmp_q_buf[worker, :rows * d].reshape((rows, d))
                    np.dot(ds, k_tile, tmp_q)                                   # dQ += dS K / √d
                    for r in range(rows):
                        for c in range(d):
                            dq[bh, i0 + r, c] += tmp_q[r, c] * scale
                dk_tile, dv_tile = dk[bh, j0:j0 + cols], dv[bh, j0:j0 + cols]   # only this item writes them
                np.dot(p_strip.T, dout[bh, i_start:Tq], dv_tile)                # dV = Pᵀ dO
                np.dot(ds_strip.T, q[bh, i_start:Tq], dk_tile)                  # dK = dSᵀ Q / √d
                for r in range(cols):
                    for c in range(d):
                        dk_tile[r, c] *= scale


# With one Numba thread a parallel region only adds a hand-off to a worker (see ``_threads``): run the
# same loops compiled serially.  Measured on the bench's GPT step (T = 64), one Numba + one BLAS thread.
_forward_serial = serial_twin(_forward_kernel, fastmath=KERNEL_FASTMATH)
_row_dot_serial = serial_twin(_row_dot_kernel, fastmath=KERNEL_FASTMATH)
_backward_serial = serial_twin(_backward_kernel, fastmath=KERNEL_FASTMATH)


def _check_causal(causal):
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")


def scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False):
    """softmax(q kᵀ/√d) v.  q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, dv) → out (B, H, Tq, dv), cache."""
    # The reference's checks, in its order; causal=False there so it builds no (Tq, Tk) causal mask.
    check_attention_inputs(q, k, v, None, False)
    _check_causal(causal)
    check_attention_inputs(q, k, v, mask, False)
    B, H, Tq, d = q.shape
    Tk, dv = k.shape[2], v.shape[3]
    dtype = q.dtype
    q3 = np.ascontiguousarray(q).reshape(B * H, Tq, d)
    k3 = np.ascontiguousarray(k).reshape(B * H, Tk, d)
    v3 = np.ascontiguousarray(v).reshape(B * H, Tk, dv)
    flat_mask, mask_strides, has_mask = _mask_layout(mask)
    out = np.empty((B * H, Tq, dv), dtype=dtype)
    lse = np.empty((B * H, Tq), dtype=dtype)
    workers = numba.get_num_threads()
    scratch = (np.empty((workers, BLOCK_Q * d), dtype), np.empty((workers, BLOCK_Q * BLOCK_K), dtype),
               np.empty((workers, BLOCK_Q * dv), dtype), np.empty((workers, BLOCK_Q * dv), dtype),
               np.empty((workers, BLOCK_Q), dtype), np.empty((workers, BLOCK_Q), dtype))
    with single_threaded_blas():
        for_thread_count(_forward_kernel, _forward_serial)(
            q3, k3, v3, dtype.type(1 / np.sqrt(d)), flat_mask, mask_strides, has_mask, bool(causal),
            H, out, lse, scratch)
    cache = FlashAttentionCache(q3, k3, v3, out, lse, flat_mask, mask_strides, has_mask, bool(causal),
                                (B, H, Tq, Tk, d, dv))
    return out.reshape(B, H, Tq, dv), cache


def scaled_dot_product_attention_backward(dout, cache):
    """dout (B, H, Tq, dv) → dq (B, H, Tq, d), dk (B, H, Tk, d), dv (B, H, Tk, dv)."""
    check_cache("cache", cache, FlashAttentionCache)
    B, H, Tq, Tk, d, dv = cache.shape
    dtype = cache.q.dtype
    dout = upstream("dout", dout, cache.out.reshape(B, H, Tq, dv))
    dout3 = np.ascontiguousarray(dout).reshape(B * H, Tq, dv)
    row_dot = np.empty((B * H, Tq), dtype=dtype)
    for_thread_count(_row_dot_kernel, _row_dot_serial, dout3.size)(dout3, cache.out, row_dot)
    workers = numba.get_num_threads()
    # Fewer batch·heads than threads: split the keys too, and give each thread its own dQ to sum into.
    dq_parts = np.zeros((workers if B * H < workers else 1, B * H, Tq, d), dtype=dtype)
    dk = np.zeros((B * H, Tk, d), dtype=dtype)
    dv_out = np.zeros((B * H, Tk, dv), dtype=dtype)
    scratch = (np.empty((workers, BLOCK_Q * d), dtype), np.empty((workers, Tq * BLOCK_K), dtype),
               np.empty((workers, Tq * BLOCK_K), dtype), np.empty((workers, BLOCK_Q * d), dtype))
    with single_threaded_blas():
        for_thread_count(_backward_kernel, _backward_serial)(
            cache.q, cache.k, cache.v, dout3, cache.lse, row_dot, dtype.type(1 / np.sqrt(d)),
            cache.mask, cache.mask_strides, cache.has_mask, cache.causal, H, dq_parts, dk, dv_out, scratch)
    dq = dq_parts[0] if dq_parts.shape[0] == 1 else dq_parts.sum(axis=0)
    return dq.reshape(B, H, Tq, d), dk.reshape(B, H, Tk, d), dv_out.reshape(B, H, Tk, dv)
