"""Scaled dot-product attention backward on the GPU, FlashAttention-2 style (the forward: attention.py).

Reference: ``npllm.layers.scaled_dot_product_attention_backward(dout, cache)`` → dq, dk, dv. With
P = softmax(S), S = scale · Q Kᵀ, O = P V and upstream dO:

    dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ⊙ (dP − δ),   δ_i = Σ_j P_ij dP_ij = dO_i · O_i,
    dQ = scale · dS K,   dK = scale · dSᵀ Q.

Nothing of size T×T was stored: P_ij = exp(S_ij − lse_i) is recomputed tile by tile from the cached
log-sum-exp, trading a second matmul for O(T²) memory. Three kernels, so that no two threads ever add
into the same gradient row (no atomics, results are deterministic):

1. delta: δ_i = dO_i · O_i, one thread per query row (the identity above saves a T×T reduction);
2. dq: one block per query tile, one thread per query, walking over key tiles (like the forward);
3. dkv: one block per (key tile, kv head), one thread per key, walking over the query tiles of every
   query head of the kv head's group (grouped-query attention; one head when Hkv = H), accumulating dK_j
   and dV_j in the thread's own registers/local memory, so each group's sum needs no atomics either.

Disallowed (query, key) pairs get P = 0, so they pass no gradient; a query with no allowed key has
lse = +inf and δ = 0 and contributes nothing.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from npllm.layers import attention as reference
from npllm.layers._validate import all_finite
from npllm_kernels.cuda._device import ceil_div, device_float
from npllm_kernels.cuda.attention import (AttentionCache, ReferenceAttentionCache, is_allowed, padded_dim,
                                          pick_block)

DELTA_THREADS = 128


@cuda.jit
def attention_delta_kernel(dout, out, delta):
    """δ[bh, i] = Σ_c dout[bh, i, c] · out[bh, i, c].  dout, out (BH, Tq, dv) → delta (BH, Tq)."""
    row = cuda.grid(1)
    Tq = out.shape[1]
    if row >= out.shape[0] * Tq:
        return
    bh, i = row // Tq, row % Tq
    total = out.dtype.type(0)
    for c in range(out.shape[2]):
        total += dout[bh, i, c] * out[bh, i, c]
    delta[bh, i] = total


@functools.cache
def dq_kernel(block: int, d_pad: int, dv_pad: int):
    """The dQ kernel for BLOCK queries per block and head sizes padded to ``d_pad``, ``dv_pad``."""

    @cuda.jit
    def attention_dq_kernel(q, k, v, dout, lse, delta, mask, has_mask, causal, n_head, group, scale, dq):
        """One block per (query tile, batch·head): dq[bh, i] = scale · Σ_j dS_ij k_j (k, v of kv head bh // group)."""
        q_tile = cuda.shared.array((d_pad, block), dtype=q.dtype)     # transposed: [component, query]
        do_tile = cuda.shared.array((dv_pad, block), dtype=q.dtype)
        k_tile = cuda.shared.array((block, d_pad), dtype=q.dtype)
        v_tile = cuda.shared.array((block, dv_pad), dtype=q.dtype)
        dq_acc = cuda.local.array(d_pad, dtype=q.dtype)
        dscores = cuda.local.array(block, dtype=q.dtype)
        r = cuda.threadIdx.x
        bh = cuda.blockIdx.y
        bkv = bh // group
        row0 = cuda.blockIdx.x * block
        query = row0 + r
        Tq, d, Tk, dv = q.shape[1], q.shape[2], k.shape[1], v.shape[2]
        zero = q.dtype.type(0)
        offset = Tk - Tq
        for idx in range(r, block * d, block):
            rr, c = idx // d, idx % d
            q_tile[c, rr] = q[bh, row0 + rr, c] if row0 + rr < Tq else zero
        for idx in range(r, block * dv, block):
            rr, c = idx // dv, idx % dv
            do_tile[c, rr] = dout[bh, row0 + rr, c] if row0 + rr < Tq else zero
        for c in range(d):
            dq_acc[c] = zero
        row_lse = lse[bh, query] if query < Tq else zero
        row_delta = delta[bh, query] if query < Tq else zero
        key_end = min(Tk, min(row0 + block, Tq) + offset) if causal else Tk
        for k0 in range(0, key_end, block):
            cuda.syncthreads()
            for idx in range(r, block * d, block):
                j, c = idx // d, idx % d
                k_tile[j, c] = k[bkv, k0 + j, c] if k0 + j < Tk else zero
            for idx in range(r, block * dv, block):
                j, c = idx // dv, idx % dv
                v_tile[j, c] = v[bkv, k0 + j, c] if k0 + j < Tk else zero
            cuda.syncthreads()
            if query < Tq:
                n_keys = min(block, Tk - k0)
                for j in range(n_keys):
                    ds = zero
                    if is_allowed(mask, has_mask, causal, bh // n_head, bh % n_head, query, k0 + j, offset):
                        s, dp = zero, zero
                        for c in range(d):
                            s += q_tile[c, r] * k_tile[j, c]
                        for c in range(dv):
                            dp += do_tile[c, r] * v_tile[j, c]
                        p = math.exp(s * scale - row_lse)     # the forward's probability, recomputed
                        ds = p * (dp - row_delta)
                    dscores[j] = ds
                for c in range(d):
                    a = zero
                    for j in range(n_keys):
                        a += dscores[j] * k_tile[j, c]
                    dq_acc[c] += a
        if query < Tq:
            for c in range(d):
                dq[bh, query, c] = dq_acc[c] * scale

    return attention_dq_kernel


@functools.cache
def dkv_kernel(block: int, d_pad: int, dv_pad: int):
    """The dK/dV kernel for BLOCK keys per block and head sizes padded to ``d_pad``, ``dv_pad``."""

    @cuda.jit
    def attention_dkv_kernel(q, k, v, dout, lse, delta, mask, has_mask, causal, n_head, group, scale, dk, dv_out):
        """One block per (key tile, batch·kv head): dv_j = Σ_i P_ij dO_i, dk_j = scale · Σ_i dS_ij q_i, the
        sums over every query i of the ``group`` query heads bkv·group … bkv·group + group − 1."""
        k_tile = cuda.shared.array((d_pad, block), dtype=q.dtype)     # transposed: [component, key]
        v_tile = cuda.shared.array((dv_pad, block), dtype=q.dtype)
        q_tile = cuda.shared.array((block, d_pad), dtype=q.dtype)
        do_tile = cuda.shared.array((block, dv_pad), dtype=q.dtype)
        lse_tile = cuda.shared.array(block, dtype=q.dtype)
        delta_tile = cuda.shared.array(block, dtype=q.dtype)
        dk_acc = cuda.local.array(d_pad, dtype=q.dtype)
        dv_acc = cuda.local.array(dv_pad, dtype=q.dtype)
        probs = cuda.local.array(block, dtype=q.dtype)
        dscores = cuda.local.array(block, dtype=q.dtype)
        r = cuda.threadIdx.x
        bkv = cuda.blockIdx.y
        col0 = cuda.blockIdx.x * block
        key = col0 + r
        Tq, d, Tk, dv = q.shape[1], q.shape[2], k.shape[1], v.shape[2]
        zero = q.dtype.type(0)
        offset = Tk - Tq
        for idx in range(r, block * d, block):
            rr, c = idx // d, idx % d
            k_tile[c, rr] = k[bkv, col0 + rr, c] if col0 + rr < Tk else zero
        for idx in range(r, block * dv, block):
            rr, c = idx // dv, idx % dv
            v_tile[c, rr] = v[bkv, col0 + rr, c] if col0 + rr < Tk else zero
        for c in range(d):
            dk_acc[c] = zero
        for c in range(dv):
            dv_acc[c] = zero
        # Causal: query i sees key j iff i ≥ j − offset, so queries before col0 − offset see no key here.
        query_begin = max(0, col0 - offset) if causal else 0
        # The group's query heads one after the other, then their query tiles: one loop over both, so
        # every thread makes the same trips past the barriers.
        n_q_tiles = ceil_div_device(Tq - query_begin, block)
        for step in range(group * n_q_tiles):
            bh = bkv * group + step // n_q_tiles
            q0 = query_begin + (step % n_q_tiles) * block
            cuda.syncthreads()
            for idx in range(r, block * d, block):
                i, c = idx // d, idx % d
                q_tile[i, c] = q[bh, q0 + i, c] if q0 + i < Tq else zero
            for idx in range(r, block * dv, block):
                i, c = idx // dv, idx % dv
                do_tile[i, c] = dout[bh, q0 + i, c] if q0 + i < Tq else zero
            lse_tile[r] = lse[bh, q0 + r] if q0 + r < Tq else zero
            delta_tile[r] = delta[bh, q0 + r] if q0 + r < Tq else zero
            cuda.syncthreads()
            if key < Tk:
                n_queries = min(block, Tq - q0)
                for i in range(n_queries):
                    p, ds = zero, zero
                    if is_allowed(mask, has_mask, causal, bh // n_head, bh % n_head, q0 + i, key, offset):
                        s, dp = zero, zero
                        for c in range(d):
                            s += q_tile[i, c] * k_tile[c, r]
                        for c in range(dv):
                            dp += do_tile[i, c] * v_tile[c, r]
                        p = math.exp(s * scale - lse_tile[i])
                        ds = p * (dp - delta_tile[i])
                    probs[i] = p
                    dscores[i] = ds
                for c in range(dv):
                    a = zero
                    for i in range(n_queries):
                        a += probs[i] * do_tile[i, c]
                    dv_acc[c] += a
                for c in range(d):
                    a = zero
                    for i in range(n_queries):
                        a += dscores[i] * q_tile[i, c]
                    dk_acc[c] += a
        if key < Tk:
            for c in range(d):
                dk[bkv, key, c] = dk_acc[c] * scale
            for c in range(dv):
                dv_out[bkv, key, c] = dv_acc[c]

    return attention_dkv_kernel


@cuda.jit(device=True)
def ceil_div_device(n, size):
    """Blocks of ``size`` covering ``n`` ≥ 0 items (0 for none)."""
    return (n + size - 1) // size


def backward_config(itemsize: int, d: int, dv: int):
    """(block, d_pad, dv_pad) for dq and dkv: shared tiles q, k (d) + dO, v (dv) per row, + lse, δ."""
    d_pad, dv_pad = padded_dim(d), padded_dim(dv)
    return pick_block(itemsize, 2 * (d_pad + dv_pad) + 2), d_pad, dv_pad


def scaled_dot_product_attention_backward_device(dout, cache):
    """Device attention backward: dout (B, H, Tq, dv) device array → dq, dk, dv device arrays."""
    if not isinstance(cache, AttentionCache):
        raise TypeError(f"cache must be the AttentionCache returned by the forward, got {type(cache).__name__}")
    B, H, Tq, Tk, d, dv = cache.shape
    Hkv = cache.n_kv_head
    q = cache.q
    dq = cuda.device_array((B * H, Tq, d), dtype=q.dtype)
    dk = cuda.device_array((B * Hkv, Tk, d), dtype=q.dtype)
    dv_out = cuda.device_array((B * Hkv, Tk, dv), dtype=q.dtype)
    if dout is None:   # no upstream gradient: all gradients are zero
        for grad in (dq, dk, dv_out):
            grad.copy_to_device(np.zeros(grad.shape, dtype=grad.dtype))
    else:
        dout = device_float(dout, "dout")
        if tuple(dout.shape) != (B, H, Tq, dv) or dout.dtype != q.dtype:
            raise ValueError(f"dout must have the forward output's shape {(B, H, Tq, dv)} and dtype {q.dtype}, "
                             f"got {tuple(dout.shape)} {dout.dtype}")
        _launch_backward(dout.reshape(B * H, Tq, dv), cache, dq, dk, dv_out)
    return dq.reshape(B, H, Tq, d), dk.reshape(B, Hkv, Tk, d), dv_out.reshape(B, Hkv, Tk, dv)


def _launch_backward(dout, cache, dq, dk, dv_out):
    B, H, Tq, Tk, d, dv = cache.shape
    if not (B * H and Tq and Tk):
        for grad in (dq, dk, dv_out):   # nothing attends: every gradient is zero
            if grad.size:
                grad.copy_to_device(np.zeros(grad.shape, dtype=grad.dtype))
        return
    q = cache.q
    delta = cuda.device_array((B * H, Tq), dtype=q.dtype)
    attention_delta_kernel[ceil_div(B * H * Tq, DELTA_THREADS), DELTA_THREADS](dout, cache.out, delta)
    block, d_pad, dv_pad = backward_config(q.dtype.itemsize, d, dv)
    scale = q.dtype.type(1.0 / math.sqrt(d))
    Hkv = cache.n_kv_head
    args = (cache.q, cache.k, cache.v, dout, cache.lse, delta, cache.mask, cache.has_mask, cache.causal, H, H // Hkv,
            scale)
    dq_kernel(block, d_pad, dv_pad)[(ceil_div(Tq, block), B * H), block](*args, dq)
    dkv_kernel(block, d_pad, dv_pad)[(ceil_div(Tk, block), B * Hkv), block](*args, dk, dv_out)


def scaled_dot_product_attention_backward(dout, cache):
    """dout (B, H, Tq, dv) → dq (B, H, Tq, d), dk (B, Hkv, Tk, d), dv (B, Hkv, Tk, dv) on the GPU (NumPy in and out).

    A non-finite dout (or a forward that had non-finite inputs) is computed by the reference."""
    if isinstance(cache, ReferenceAttentionCache):            # the forward's inputs were not finite
        return reference.scaled_dot_product_attention_backward(dout, cache.reference)
    if not isinstance(cache, AttentionCache):
        raise TypeError(f"cache must be the AttentionCache returned by the forward, got {type(cache).__name__}")
    if dout is not None:
        dout = np.asarray(dout, dtype=cache.q.dtype)
        B, H, Tq, Tk, d, dv = cache.shape
        if dout.shape != (B, H, Tq, dv):
            raise ValueError(f"dout must have the forward output's shape {(B, H, Tq, dv)}, got {dout.shape}")
        if not all_finite(dout):
            return reference.scaled_dot_product_attention_backward(dout, _reference_cache(cache))
    grads = scaled_dot_product_attention_backward_device(dout, cache)
    return tuple(g.copy_to_host() for g in grads)


def _reference_cache(cache):
    """The reference's AttentionCache for a device cache's inputs, copied to the host once."""
    B, H, Tq, Tk, d, dv = cache.shape
    q, k, v = (a.copy_to_host() for a in (cache.q, cache.k, cache.v))                  # (B·H, T, ·)
    Hkv = cache.n_kv_head
    q, k, v = q.reshape(B, H, Tq, d), k.reshape(B, Hkv, Tk, d), v.reshape(B, Hkv, Tk, dv)
    mask = cache.mask.copy_to_host() if cache.has_mask else None   # (mB, mH, mTq, mTk): broadcastable
    return reference.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=cache.causal)[1]
