"""Attention for a single query per head, the step of KV-cached decoding (Numba); used by ``attention.py``.

    s_j = q · k_j / √d,   p = softmax(s),   o = Σ_j p_j v_j                  (one query, Tk keys)

One new token attends to every cached key, so there is nothing to tile and nothing to mask (causal
or not, the last query sees all keys). The flash loops would copy the whole cache into their layout
and scratch tiles first, and the finiteness test reads it once more: three passes over the cache where
the arithmetic needs one. This kernel reads q, k and v where they are (any strides, e.g. the
``KVCache`` slices of ``npllm.models.gpt``), one (batch, head) per work item.

Non-finite inputs: every key's score and every value row is multiplied into the result (nothing is
skipped), so a NaN or ±inf in q, k or v makes a score or the output non-finite; the kernel reports that
and the caller hands the call to the reference, whose NaN pattern is the contract (``attention.py``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from npllm_kernels.cpu._flash import COMPILE_FLAGS
from npllm_kernels.cpu._math import fast_exp

# Below this much work (B·H·Tk·(d + dv) elements) the serial loop wins: waking a sleeping worker
# thread costs ~70-150 µs on the machine measured, more than one token's attention at GPT-2 sizes
# (12 heads × 200 keys: 31 µs serial, 145 µs parallel; × 1,000 keys: 225 vs 330 µs; 8 × 16 heads ×
# 2,000 keys: 10.2 vs 4.7 ms).
PARALLEL_MIN_WORK = 1 << 23


@njit(parallel=True, cache=True, **COMPILE_FLAGS)
def decode_kernel(qf, q_str, kf, k_str, vf, v_str, H, Hkv, Tk, d, dv, scale, out, scores):
    """One query per head: out's head blocks (B, 1, H·dv) from q (B, H, 1, d), k (B, Hkv, Tk, d) and
    v (B, Hkv, Tk, dv), each given as a flat view and its (4,) element strides (``flat_view``); H is a
    multiple of Hkv; scores (B·H, Tk) is scratch. Returns False when a score or an output is not
    finite (the caller then uses the reference)."""
    B = out.shape[0]
    group = H // Hkv
    n_bad = 0                                           # heads with a non-finite score or output
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kh = h // group                                 # the kv head this query head reads
        at = b * q_str[0] + h * q_str[1]
        q_row, s = qf[at:at + d], scores[bh]
        k_at, v_at = b * k_str[0] + kh * k_str[1], b * v_str[0] + kh * v_str[1]
        row_max = -np.inf
        finite = True
        for j in range(Tk):
            k_row = kf[k_at + j * k_str[2]:k_at + j * k_str[2] + d]
            total = qf.dtype.type(0)
            for c in range(d):
                total += q_row[c] * k_row[c]
            total *= scale                              # as the reference: (q · k) · 1/√d
            s[j] = total
            finite = finite and np.isfinite(total)
            row_max = max(row_max, total)
        if not finite:
            n_bad += 1
            continue
        l_sum = qf.dtype.type(0)
        for j in range(Tk):
            p = fast_exp(s[j] - row_max)
            s[j] = p
            l_sum += p
        o = out[b, 0, h * dv:(h + 1) * dv]
        o[:] = 0
        for j in range(Tk):                             # P V, a row of v at a time (contiguous)
            p, v_row = s[j], vf[v_at + j * v_str[2]:v_at + j * v_str[2] + dv]
            for c in range(dv):
                o[c] += p * v_row[c]
        inv = 1 / l_sum
        for c in range(dv):
            o[c] *= inv
            finite = finite and np.isfinite(o[c])
        if not finite:
            n_bad += 1
    return n_bad == 0


def flat_view(a):
    """A 4-D array whose rows (last axis) are contiguous → (1-D view from its first to its last element,
    (4,) int64 element strides); a copy first when its rows are not contiguous or a stride is negative.

    Why: Numba compiles a non-contiguous array (a ``KVCache`` slice) as layout "A", whose row loops
    cannot assume unit stride and stay scalar; rows of a 1-D contiguous view vectorize."""
    item = a.itemsize
    if a.size == 0 or a.strides[-1] != item or min(a.strides) < 0 or any(s % item for s in a.strides):
        a = np.ascontiguousarray(a)
    strides = np.array([s // item for s in a.strides], dtype=np.int64)
    span = int(sum((n - 1) * s for n, s in zip(a.shape, strides))) + 1 if a.size else 0
    return np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(item,)), strides
