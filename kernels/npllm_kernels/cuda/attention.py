"""Scaled dot-product attention on the GPU, FlashAttention style: the forward (backward: attention_backward).

Reference: ``npllm.layers.scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False)``:
softmax(q kᵀ / √d) v over the keys a query may attend to (``mask`` True and, if ``causal``, key
j ≤ i + Tk − Tq); a query with no allowed key outputs zeros.

The reference builds the (Tq, Tk) score matrix; at T = 8192 that is 256 MiB per head. FlashAttention
(Dao et al. 2022; Dao 2023 for the loop order used here) never builds it:

* a block takes a tile of BLOCK queries (one thread each) and stages it in shared memory;
* it walks over the keys in tiles of BLOCK, staging each K and V tile in shared memory once for all
  the block's queries;
* each thread keeps an *online softmax* for its query: a running max m, a running denominator l and
  an unnormalised output accumulator; when a tile raises the max, l and the accumulator are rescaled
  by exp(m_old − m_new), so after the last tile out = acc / l is exact;
* it writes out and the log-sum-exp m + log l per query (the backward recomputes the probabilities
  from it instead of storing them). A query with no allowed key writes zeros and lse = +inf, which
  makes every recomputed probability exp(s − inf) = 0.

With ``causal``, key tiles that lie wholly after the block's last visible key are skipped.

Grouped-query attention (Ainslie et al. 2023): k and v may have Hkv heads, H a multiple of Hkv; the
block of query head bh stages its K and V tiles from kv head bh // (H / Hkv), so no repeated copy of
K or V is made (the backward's dK/dV kernel sums each group's query heads: attention_backward.py).

Non-finite inputs (a NaN or ±inf in q, k, v or dout) are computed by the reference in the host functions,
so its NaN positions are the contract on every backend (``npllm_kernels.cpu.attention`` says why);
the device functions, for data that stays on the GPU, do not check.

v1: the kernel above (one version: the point of the file is the algorithm, not a tuning ladder).

Shared arrays need sizes fixed at compile time, so the kernel is built per tile configuration:
head sizes are padded to a power of two (≥ 16, ≤ HEAD_DIM_MAX) and BLOCK is the largest of
BLOCK_CHOICES whose tiles fit in SHARED_BYTES. The query tile is stored transposed, q_tile[c, r],
so the 32 threads of a warp reading "their" query's component c hit 32 different memory banks.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from npllm.layers import attention as reference
from npllm.layers._validate import all_finite, check_float
from npllm_kernels.cuda._device import SIMULATOR, as_device, ceil_div, device_float

HEAD_DIM_MAX = 128            # largest d and dv the kernels accept
SHARED_BYTES = 48 * 1024      # static shared memory a block may use without an opt-in
# Queries per block (one thread each) = keys per tile, largest first. 8 (a quarter of a warp: slow)
# only serves float64 with d = dv = 128, whose backward tiles do not fit at 16; float64 is for
# gradient checks, not speed. The simulator uses small tiles so that the tests' short sequences
# (T ≤ 40) still cross several tiles, including partial ones.
BLOCK_CHOICES = (16, 8) if SIMULATOR else (64, 32, 16, 8)


def padded_dim(n: int) -> int:
    """Head size rounded up to a power of two, at least 16: how wide the shared tiles are built."""
    return max(16, 1 << (int(n) - 1).bit_length())


def pick_block(itemsize: int, elements_per_row: int) -> int:
    """Largest BLOCK whose tiles (BLOCK rows of ``elements_per_row`` values) fit in SHARED_BYTES."""
    for block in BLOCK_CHOICES:
        if block * elements_per_row * itemsize <= SHARED_BYTES:
            return block
    raise ValueError(f"no tile of {BLOCK_CHOICES} rows × {elements_per_row} values fits in {SHARED_BYTES} bytes")


@cuda.jit(device=True)
def is_allowed(mask, has_mask, causal, batch, head, query, key, offset):
    """Whether ``query`` may attend to ``key``: the causal rule and the (broadcast) boolean mask."""
    if causal and key > query + offset:
        return False
    if has_mask:
        # A mask axis of size 1 is broadcast: index 0 instead of the position.
        b = batch if mask.shape[0] > 1 else 0
        h = head if mask.shape[1] > 1 else 0
        i = query if mask.shape[2] > 1 else 0
        j = key if mask.shape[3] > 1 else 0
        return bool(mask[b, h, i, j])
    return True


@functools.cache
def forward_kernel(block: int, d_pad: int, dv_pad: int):
    """The forward kernel for BLOCK queries per block and head sizes padded to ``d_pad``, ``dv_pad``."""

    @cuda.jit
    def attention_forward_kernel(q, k, v, mask, has_mask, causal, n_head, group, scale, out, lse):
        """One block per (query tile, batch·head).  q (BH, Tq, d), k (BH / group, Tk, d), v (BH / group,
        Tk, dv) → out (BH, Tq, dv), lse (BH, Tq); query head bh reads kv head bh // group; mask
        (mB, mH, mTq, mTk) bool, each axis 1 or full."""
        q_tile = cuda.shared.array((d_pad, block), dtype=q.dtype)    # transposed: [component, query]
        k_tile = cuda.shared.array((block, d_pad), dtype=k.dtype)
        v_tile = cuda.shared.array((block, dv_pad), dtype=v.dtype)
        acc = cuda.local.array(dv_pad, dtype=q.dtype)                # unnormalised output row
        scores = cuda.local.array(block, dtype=q.dtype)              # this query's scores for a tile
        r = cuda.threadIdx.x
        bh = cuda.blockIdx.y
        bkv = bh // group                                            # the kv head this query head reads
        row0 = cuda.blockIdx.x * block
        query = row0 + r
        Tq, d, Tk, dv = q.shape[1], q.shape[2], k.shape[1], v.shape[2]
        zero, one, neg_inf = q.dtype.type(0), q.dtype.type(1), q.dtype.type(-math.inf)
        offset = Tk - Tq
        # Stage the query tile; consecutive threads read consecutive elements of a row (coalesced).
        for idx in range(r, block * d, block):
            rr, c = idx // d, idx % d
            q_tile[c, rr] = q[bh, row0 + rr, c] if row0 + rr < Tq else zero
        for c in range(dv):
            acc[c] = zero
        row_max, row_sum = neg_inf, zero
        # Causal: the block's last query sees keys < min(row0 + block, Tq) + offset; later tiles are skipped.
        # key_end depends only on the block, so every thread makes the same trips past the barriers.
        key_end = min(Tk, min(row0 + block, Tq) + offset) if causal else Tk
        for k0 in range(0, key_end, block):
            cuda.syncthreads()      # the previous tile has been used by everyone (and q_tile is staged)
            for idx in range(r, block * d, block):
                j, c = idx // d, idx % d
                k_tile[j, c] = k[bkv, k0 + j, c] if k0 + j < Tk else zero
            for idx in range(r, block * dv, block):
                j, c = idx // dv, idx % dv
                v_tile[j, c] = v[bkv, k0 + j, c] if k0 + j < Tk else zero
            cuda.syncthreads()      # the K and V tiles are complete
            if query < Tq:
                n_keys = min(block, Tk - k0)
                tile_max = neg_inf
                for j in range(n_keys):
                    s = neg_inf
                    if is_allowed(mask, has_mask, causal, bh // n_head, bh % n_head, query, k0 + j, offset):
                        s = zero
                        for c in range(d):
                            s += q_tile[c, r] * k_tile[j, c]
                        s *= scale
                    scores[j] = s
                    tile_max = max(tile_max, s)
                if tile_max > neg_inf:   # some key of this tile is allowed
                    new_max = max(row_max, tile_max)
                    correction = math.exp(row_max - new_max)     # 0 on the first allowed tile
                    tile_sum = zero
                    for j in range(n_keys):
                        scores[j] = math.exp(scores[j] - new_max)   # masked keys: exp(−inf) = 0
                        tile_sum += scores[j]
                    row_sum = row_sum * correction + tile_sum
                    for c in range(dv):
                        a = acc[c] * correction
                        for j in range(n_keys):
                            a += scores[j] * v_tile[j, c]
                        acc[c] = a
                    row_max = new_max
        if query < Tq:
            if row_sum > zero:
                inverse = one / row_sum
                for c in range(dv):
                    out[bh, query, c] = acc[c] * inverse
                lse[bh, query] = row_max + math.log(row_sum)
            else:                    # no allowed key: zeros, and lse = +inf makes every p = 0 later
                for c in range(dv):
                    out[bh, query, c] = zero
                lse[bh, query] = -neg_inf

    return attention_forward_kernel


def forward_config(itemsize: int, d: int, dv: int):
    """(block, d_pad, dv_pad) for the forward: shared tiles q (d) + k (d) + v (dv) per row."""
    d_pad, dv_pad = padded_dim(d), padded_dim(dv)
    return pick_block(itemsize, 2 * d_pad + dv_pad), d_pad, dv_pad


class AttentionCache(NamedTuple):
    q: object        # (B·H, Tq, d) device array
    k: object        # (B·Hkv, Tk, d)
    v: object        # (B·Hkv, Tk, dv)
    out: object      # (B·H, Tq, dv)
    lse: object      # (B·H, Tq): log Σ exp(scores), +inf for a query with no allowed key
    mask: object     # (mB, mH, mTq, mTk) device bool (a dummy 1×1×1×1 when has_mask is False)
    has_mask: bool
    causal: bool
    shape: tuple     # (B, H, Tq, Tk, d, dv)
    n_kv_head: int   # Hkv, k's and v's heads (H unless grouped-query)


class ReferenceAttentionCache(NamedTuple):
    """The cache of a host call whose inputs were not finite, which the reference computed."""
    reference: object   # the reference's AttentionCache (host arrays)


def check_qkv_shapes(q, k, v):
    """(B, H, Tq, Tk, d, dv, Hkv) from q, k, v's shapes, with the reference's checks and a head-size cap."""
    for name, x, layout in (("q", q, "(B, H, Tq, d)"), ("k", k, "(B, Hkv, Tk, d)"), ("v", v, "(B, Hkv, Tk, dv)")):
        if len(x.shape) != 4:
            raise ValueError(f"{name} must have 4 dimensions {layout}, got shape {tuple(x.shape)}")
    B, H, Tq, d = tuple(q.shape)
    Hkv, Tk, dv = k.shape[1], k.shape[2], v.shape[3]
    if Hkv != H and (Hkv == 0 or H % Hkv):
        raise ValueError(f"k's head count Hkv (axis 1) must divide q's H = {H} (grouped-query attention: "
                         f"each kv head serves H // Hkv query heads), got {Hkv} in shape {tuple(k.shape)}")
    if tuple(k.shape) != (B, Hkv, Tk, d):
        raise ValueError(f"k must have shape ({B}, {Hkv}, *, {d}), got {tuple(k.shape)}")
    if tuple(v.shape) != (B, Hkv, Tk, dv):
        raise ValueError(f"v must have shape ({B}, {Hkv}, {Tk}, *), got {tuple(v.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"all floating inputs must share one dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    for name, size in (("d (q and k's last axis)", d), ("dv (v's last axis)", dv)):
        if size > HEAD_DIM_MAX:
            raise ValueError(f"the CUDA attention kernels support head sizes up to {HEAD_DIM_MAX}; "
                             f"{name} is {size}")
    return B, H, Tq, Tk, d, dv, Hkv


def device_mask(mask, full_shape):
    """``mask`` (bool, broadcastable to ``full_shape``) as a 4-D device array with axes of 1 or full size."""
    if mask is None:
        return cuda.to_device(np.ones((1, 1, 1, 1), dtype=np.bool_)), False
    if not (isinstance(mask, np.ndarray) or hasattr(mask, "__cuda_array_interface__")
            or getattr(mask, "__cuda_ndarray__", False)):
        raise TypeError(f"mask must be a bool array (True = may attend), got {type(mask).__name__}")
    if np.dtype(mask.dtype) != np.bool_:
        raise TypeError(f"mask must be a bool array (True = may attend), got {mask.dtype}")
    shape = tuple(mask.shape)
    padded = (1,) * (4 - len(shape)) + shape
    if len(shape) > 4 or any(m not in (1, n) for m, n in zip(padded, full_shape)):
        raise ValueError(f"mask must be broadcastable to (B, H, Tq, Tk) = {tuple(full_shape)}, got {shape}")
    if isinstance(mask, np.ndarray):
        return cuda.to_device(np.ascontiguousarray(mask.reshape(padded))), True
    return as_device(mask, "mask").reshape(*padded), True


def scaled_dot_product_attention_forward_device(q, k, v, mask=None, causal=False):
    """Device attention forward: q (B, H, Tq, d), k (B, Hkv, Tk, d), v (B, Hkv, Tk, dv) device arrays with
    H % Hkv == 0 → out (B, H, Tq, dv) device array, cache (device arrays)."""
    q, k, v = device_float(q, "q"), device_float(k, "k"), device_float(v, "v")
    B, H, Tq, Tk, d, dv, Hkv = check_qkv_shapes(q, k, v)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    mask_d, has_mask = device_mask(mask, (B, H, Tq, Tk))
    q3, k3, v3 = q.reshape(B * H, Tq, d), k.reshape(B * Hkv, Tk, d), v.reshape(B * Hkv, Tk, dv)   # (B·heads, T, ·)
    out = cuda.device_array((B * H, Tq, dv), dtype=q.dtype)
    lse = cuda.device_array((B * H, Tq), dtype=q.dtype)
    if B * H and Tq and dv:
        block, d_pad, dv_pad = forward_config(q.dtype.itemsize, d, dv)
        scale = q.dtype.type(1.0 / math.sqrt(d))   # in the data's dtype, so float32 stays float32
        forward_kernel(block, d_pad, dv_pad)[(ceil_div(Tq, block), B * H), block](
            q3, k3, v3, mask_d, has_mask, bool(causal), H, H // Hkv, scale, out, lse)
    cache = AttentionCache(q3, k3, v3, out, lse, mask_d, has_mask, bool(causal), (B, H, Tq, Tk, d, dv), Hkv)
    return out.reshape(B, H, Tq, dv), cache


def scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False):
    """softmax(q kᵀ/√d) v on the GPU.  q (B, H, Tq, d), k (B, Hkv, Tk, d), v (B, Hkv, Tk, dv) with H % Hkv == 0
    → out (B, H, Tq, dv), cache.

    Non-finite inputs are computed by the reference (a ReferenceAttentionCache holds its cache)."""
    check_float("q", q, 4, "(B, H, Tq, d)")
    check_float("k", k, 4, "(B, H, Tk, d)")
    check_float("v", v, 4, "(B, H, Tk, dv)")
    if mask is not None and not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a bool numpy.ndarray (True = may attend), got {type(mask).__name__}")
    if not all_finite(q, k, v):
        # A NaN or ±inf: the reference's answer is the contract, NaN positions included (its dense
        # products spread 0 · NaN to entries these tiles never compute; see npllm_kernels.cpu.attention).
        check_qkv_shapes(q, k, v)
        out, cache = reference.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
        return out, ReferenceAttentionCache(cache)
    out, cache = scaled_dot_product_attention_forward_device(q, k, v, mask, causal)
    return out.copy_to_host(), cache



VERSIONS = {"v1": scaled_dot_product_attention_forward_device}   # forward; the backward has one version too
DEFAULT_VERSION = "v1"
