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

Non-finite inputs (a NaN or ±inf in q, k, v, or in the backward's dout) go to the reference, whose
answer is the contract, NaN positions included. The reference multiplies dense (Tq, Tk) matrices in
which a masked probability is a 0 that still multiplies, so one NaN in v[j] reaches every query's
output, even a query that may not see key j (0 · NaN = NaN), and a NaN in q[i] reaches dk for every
key. The flash loops skip exactly those products (masked keys, causal tiles), and reproducing them
would cost every call; the test costs one vectorized pass per input (``_finite.all_finite``, O(T·d) against
the O(T²·d) loops), and finite inputs never leave the fast path.

The tile products use ``np.dot`` on contiguous tiles (BLAS: faster than any loop we wrote; see
docs/performance.md, "Threads and BLAS pools") with BLAS held to one thread while the ``prange`` over
(batch·head, query tile) work items keeps the cores busy (see ``_threads``). Work items are dealt to
one loop per thread, so each thread owns its scratch (allocated here in Python, visible to
tracemalloc); the forward deals them costliest first in a snake order (``_flash.forward_kernel``) so
that causal tiles of different cost are spread evenly. The backward runs one item per batch·head when there are at least as
many as threads (dQ written in place); otherwise one per (batch·head, key tile), each thread summing its
dQ into its own buffer, added up at the end. ``fast_exp`` (``_math``) keeps the exp loops vectorized.
The loops live in ``_flash.py``; they read every head as a column block of a 3-D array, the (B, T, H·d)
parent of the ``split_heads`` views a model passes or a contiguous input seen as (B·H, T, d), so neither
costs a copy, and the output is returned as the same kind of view (``merge_heads`` of it is free).
Time and memory against the reference: docs/performance.md, "Flash attention".

One query (``Tq = 1``, no mask: a step of KV-cached decoding) takes ``_decode``'s kernel instead, which
reads q, k and v where they are (a ``KVCache`` slice is not copied into the loops' layout first).

Grouped-query attention (k, v with Hkv heads, H a multiple of Hkv) runs in the same loops: query head
h reads kv head h // (H / Hkv) where it is stored, with no repeated copy of K or V, and the backward
sums each group's dK and dV inside one work item (``_flash.py``). ``rope_attention.py`` reuses the
loops with RoPE applied to the q and k tiles as they are loaded.

``multi_head_attention_forward/backward`` (GPT-2's self-attention) run the q|k|v and output
projections with the reference's ``linear`` (BLAS) and the flash loops directly on the (B, T, 3C)
projection: no split, merge or concatenate copies, and dq|dk|dv land in one (B, T, 3C) gradient.
That removes eight activation-sized copies per layer of a GPT step.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from npllm.layers._validate import check_cache, upstream
from npllm.layers import attention as reference
from npllm.layers.attention import check_attention_inputs, check_multi_head_inputs, merge_heads, split_heads
from npllm.layers.linear import linear_backward, linear_forward
from npllm_kernels.cpu import _decode, _flash
from npllm_kernels.cpu._finite import all_finite
from npllm_kernels.cpu._flash import BLOCK_K, BLOCK_Q  # noqa: F401  (re-exported: the tile sizes)
from npllm_kernels.cpu._threads import for_thread_count, serial_twin, single_threaded_blas
from npllm_kernels.cpu._workspace import reused_buffer


class FlashAttentionCache(NamedTuple):
    q: np.ndarray             # (B, Tq, ·) or (B·H, Tq, d): head h in columns q_off + h·d … (_flash.py)
    k: np.ndarray             # (B, Tk, ·) or (B·H, Tk, d)
    v: np.ndarray             # (B, Tk, ·) or (B·H, Tk, dv)
    offsets: tuple            # (q_off, k_off, v_off) column offsets of head 0 in q, k, v
    n_head: int               # heads per row of q, k, v, out: H (rows layout) or 1 (one head per row)
    out: np.ndarray           # (B, Tq, H·dv) or (B·H, Tq, dv) the forward's output
    lse: np.ndarray           # (B·H, Tq) log Σ_j exp(s_ij) over allowed keys; −inf for a fully masked row
    mask: np.ndarray          # flat bool array read through mask_strides (a single True when no mask)
    mask_strides: np.ndarray  # (4,) int64 element strides of the mask over (B, H, Tq, Tk); 0 = broadcast
    has_mask: bool
    causal: bool
    shape: tuple              # (B, H, Tq, Tk, d, dv)
    n_kv_head: int            # Hkv, k's and v's heads (H for multi-head attention)
    kv_per_row: int           # heads per row of k and v: Hkv (rows layout) or 1 (one head per row)
    rope: object              # RopeTables when q and k are rotated in the loops (rope_attention), else None


class RopeTables(NamedTuple):
    """cos and sin of every position's angles, read by the flash loops to rotate q and k tiles."""
    cos: np.ndarray           # (1 or B, T, d/2), in q's dtype
    sin: np.ndarray
    interleaved: bool


class ReferenceAttentionCache(NamedTuple):
    """The cache of a call whose inputs were not finite, which the reference computed (module docstring)."""
    reference: object         # the reference's AttentionCache


class DecodeAttentionCache(NamedTuple):
    """The cache of a one-query call (``_decode``): its inputs, from which the backward recomputes the
    reference's (decoding never differentiates, so the forward keeps nothing else)."""
    q: np.ndarray             # (B, H, 1, d)
    k: np.ndarray             # (B, Hkv, Tk, d)
    v: np.ndarray             # (B, Hkv, Tk, dv)
    causal: bool


class FlashMultiHeadAttentionCache(NamedTuple):
    qkv: object               # the reference LinearCache of x @ W_qkv + b_qkv
    attention: object         # FlashAttentionCache reading q, k, v out of the (B, T, 3C) projection,
                              # or ReferenceAttentionCache when they were not finite
    out: object               # the reference LinearCache of the output projection
    n_head: int


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


def _layout(a):
    """(B, H, T, w) → (3-D array, heads per row of it) without a copy when ``a`` allows.

    "rows" (B, T, H·w) when a is split_heads of such an array (a model's q, k, v); "heads"
    (B·H, T, w) when a is C-contiguous; otherwise a copy in the rows layout."""
    B, H, T, w = a.shape
    rows = a.transpose(0, 2, 1, 3)
    if rows.flags.c_contiguous:
        return rows.reshape(B, T, H * w), H
    if a.flags.c_contiguous:
        return a.reshape(B * H, T, w), 1
    return np.ascontiguousarray(rows).reshape(B, T, H * w), H


def _in_layout(a, n_head):
    """(B, H, T, w) as the 3-D array of the layout with ``n_head`` heads per row (a copy if needed)."""
    B, H, T, w = a.shape
    if n_head == 1:
        return np.ascontiguousarray(a).reshape(B * H, T, w)
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(B, T, H * w)


def _heads(a3, n_head, H):
    """The 3-D array of a layout → its (B, H, T, w) view (the inverse of _layout, no copy)."""
    batch, T, width = a3.shape
    if n_head == 1:
        return a3.reshape(batch // H, H, T, width)
    return a3.reshape(batch, T, n_head, width // n_head).transpose(0, 2, 1, 3)


# With one Numba thread, or little work, a parallel region only adds a hand-off (see ``_threads``).
_forward_serial = serial_twin(_flash.forward_kernel, **_flash.COMPILE_FLAGS)
_backward_serial = serial_twin(_flash.backward_kernel, **_flash.COMPILE_FLAGS)


def _rope_arrays(rope, dtype):
    """(cos, sin, interleaved, has_rope) for the loops; 1×1×1 placeholders without RoPE."""
    if rope is None:
        placeholder = np.zeros((1, 1, 1), dtype=dtype)
        return placeholder, placeholder, False, False
    return rope.cos, rope.sin, bool(rope.interleaved), True


def _attend(q3, k3, v3, offsets, n_head, shape, mask, causal, o3, n_kv_head=None, kv_per_row=None, rope=None):
    """Run the forward loops (``n_head`` heads per row of q3 and o3, ``kv_per_row`` of k3 and v3, which hold
    ``n_kv_head`` heads; default: as q); write o3's head blocks; return the cache (inputs already checked)."""
    B, H, Tq, Tk, d, dv = shape
    n_kv_head = H if n_kv_head is None else n_kv_head
    kv_per_row = n_head if kv_per_row is None else kv_per_row
    dtype = q3.dtype
    flat_mask, mask_strides, has_mask = _mask_layout(mask)
    lse = np.empty((B * H, Tq), dtype=dtype)
    scratch = np.empty((numba.get_num_threads(), _flash.forward_scratch_size(d, dv)), dtype=dtype)
    kernel = for_thread_count(_flash.forward_kernel, _forward_serial, B * H * Tq * Tk * d)
    cos, sin, interleaved, has_rope = _rope_arrays(rope, dtype)
    with single_threaded_blas():
        kernel(q3, offsets[0], k3, offsets[1], v3, offsets[2], n_head, kv_per_row, H // n_kv_head, d, dv,
               dtype.type(1 / np.sqrt(d)), flat_mask, mask_strides, H, has_mask, bool(causal), cos, sin,
               interleaved, has_rope, o3, 0, lse, scratch)
    return FlashAttentionCache(q3, k3, v3, offsets, n_head, o3, lse, flat_mask, mask_strides, has_mask,
                               bool(causal), shape, n_kv_head, kv_per_row, rope)


def _attend_backward(cache, do3, dq3, dk3, dv3, grad_offsets):
    """Run the backward loops: write the head blocks of dq3, dk3, dv3 at grad_offsets."""
    B, H, Tq, Tk, d, dv = cache.shape
    dtype = cache.q.dtype
    workers = numba.get_num_threads()
    group = H // cache.n_kv_head
    # Fewer kv heads than threads: split the keys too, and give each thread its own dQ to sum into.
    per_tile = B * cache.n_kv_head < workers
    dq_parts = np.zeros((workers, B * H, Tq, d) if per_tile else (0, 1, 1, d), dtype=dtype)
    scratch = np.empty((workers, _flash.backward_scratch_size(Tq, d, dv, group)), dtype=dtype)
    kernel = for_thread_count(_flash.backward_kernel, _backward_serial, B * H * Tq * Tk * d)
    q_off, k_off, v_off = cache.offsets
    cos, sin, interleaved, has_rope = _rope_arrays(cache.rope, dtype)
    with single_threaded_blas():
        kernel(cache.q, q_off, cache.k, k_off, cache.v, v_off, cache.out, 0, do3, 0, cache.lse, cache.n_head,
               cache.kv_per_row, group, d, dv, dtype.type(1 / np.sqrt(d)), cache.mask, cache.mask_strides, H,
               cache.has_mask, cache.causal, cos, sin, interleaved, has_rope,
               dq3, grad_offsets[0], dk3, grad_offsets[1], dv3, grad_offsets[2], dq_parts, scratch,
               _flash.backward_block_k(Tk))


def flash_inputs(cache):
    """q (B, H, Tq, d), k, v (B, Hkv, Tk, ·) and the mask (or None) of a flash cache, as views."""
    B, H, Tq, Tk, d, dv = cache.shape
    q = _heads(cache.q[:, :, cache.offsets[0]:cache.offsets[0] + cache.n_head * d], cache.n_head, H)
    k, v = (_heads(a[:, :, off:off + cache.kv_per_row * width], cache.kv_per_row, cache.n_kv_head)
            for a, off, width in zip((cache.k, cache.v), cache.offsets[1:], (d, dv)))
    mask = None
    if cache.has_mask:   # the flat mask read through its element strides (bool: 1 byte an element)
        mask = np.lib.stride_tricks.as_strided(cache.mask, (B, H, Tq, Tk), tuple(cache.mask_strides))
    return q, k, v, mask


def _reference_cache(cache):
    """The reference's AttentionCache for this op's cache (recomputed from a flash or one-query cache's
    inputs)."""
    if isinstance(cache, ReferenceAttentionCache):
        return cache.reference
    if isinstance(cache, DecodeAttentionCache):
        return reference.scaled_dot_product_attention_forward(cache.q, cache.k, cache.v, causal=cache.causal)[1]
    q, k, v, mask = flash_inputs(cache)
    return reference.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=cache.causal)[1]


_decode_serial = serial_twin(_decode.decode_kernel, **_flash.COMPILE_FLAGS)


def _attend_one_query(q, k, v, causal):
    """The ``_decode`` kernel on checked (B, H, 1, d) q and its (B, Hkv, Tk, ·) k, v → out, cache, or None
    when an input was not finite (then the reference must run)."""
    B, H, _, d = q.shape
    Tk, dv = k.shape[2], v.shape[3]
    out3 = np.empty((B, 1, H * dv), dtype=q.dtype)              # heads side by side: merge_heads is free
    scores = np.empty((B * H, Tk), dtype=q.dtype)
    kernel = for_thread_count(_decode.decode_kernel, _decode_serial, B * H * Tk * (d + dv), _decode.PARALLEL_MIN_WORK)
    (qf, q_str), (kf, k_str), (vf, v_str) = (_decode.flat_view(a) for a in (q, k, v))
    if not kernel(qf, q_str, kf, k_str, vf, v_str, H, k.shape[1], Tk, d, dv, q.dtype.type(1 / np.sqrt(d)), out3, scores):
        return None
    return _heads(out3, H, H), DecodeAttentionCache(q, k, v, bool(causal))


def _check_causal(causal):
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")


def attend_heads(q, k, v, mask, causal, rope=None):
    """The flash forward on checked, finite (B, H, Tq, d), (B, Hkv, Tk, ·) inputs → out, FlashAttentionCache."""
    B, H, Tq, d = q.shape
    Hkv, Tk, dv = k.shape[1], k.shape[2], v.shape[3]
    q3, n_head = _layout(q)
    kv_per_row = 1 if n_head == 1 else Hkv
    k3, v3 = _in_layout(k, kv_per_row), _in_layout(v, kv_per_row)
    o3 = np.empty((B, Tq, H * dv) if n_head > 1 else (B * H, Tq, dv), dtype=q.dtype)
    cache = _attend(q3, k3, v3, (0, 0, 0), n_head, (B, H, Tq, Tk, d, dv), mask, causal, o3, Hkv, kv_per_row, rope)
    return _heads(o3, n_head, H), cache


def attend_heads_backward(dout, cache):
    """The flash backward of a FlashAttentionCache on a finite dout (B, H, Tq, dv) → dq, dk, dv."""
    B, H, Tq, Tk, d, dv = cache.shape
    dtype = cache.q.dtype
    rows, kv_rows = (B, B) if cache.n_head > 1 else (B * H, B * cache.n_kv_head)   # rows of each layout
    dq3 = np.empty((rows, Tq, cache.n_head * d), dtype=dtype)
    dk3 = np.empty((kv_rows, Tk, cache.kv_per_row * d), dtype=dtype)
    dv3 = np.empty((kv_rows, Tk, cache.kv_per_row * dv), dtype=dtype)
    _attend_backward(cache, _in_layout(dout, cache.n_head), dq3, dk3, dv3, (0, 0, 0))
    return (_heads(dq3, cache.n_head, H), _heads(dk3, cache.kv_per_row, cache.n_kv_head),
            _heads(dv3, cache.kv_per_row, cache.n_kv_head))


def scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False):
    """softmax(q kᵀ/√d) v.  q (B, H, Tq, d), k (B, Hkv, Tk, d), v (B, Hkv, Tk, dv) with H % Hkv == 0
    → out (B, H, Tq, dv), cache."""
    # The reference's checks, in its order; causal=False there so it builds no (Tq, Tk) causal mask.
    check_attention_inputs(q, k, v, None, False, grouped=True)
    _check_causal(causal)
    check_attention_inputs(q, k, v, mask, False, grouped=True)
    if q.shape[2] == 1 and k.shape[2] > 0 and mask is None:     # one query (decoding): no tiles, no copies
        result = _attend_one_query(q, k, v, causal)
        if result is not None:
            return result
    if not all_finite(q, k, v):          # the reference's NaN pattern (see the module docstring)
        out, cache = reference.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
        return out, ReferenceAttentionCache(cache)
    return attend_heads(q, k, v, mask, causal)


def scaled_dot_product_attention_backward(dout, cache):
    """dout (B, H, Tq, dv) → dq (B, H, Tq, d), dk (B, Hkv, Tk, d), dv (B, Hkv, Tk, dv)."""
    # Inputs that were not finite, or one query (decoding, which the reference differentiates).
    if isinstance(cache, (ReferenceAttentionCache, DecodeAttentionCache)):
        return reference.scaled_dot_product_attention_backward(dout, _reference_cache(cache))
    check_cache("cache", cache, FlashAttentionCache)
    if cache.rope is not None:
        raise TypeError("cache must be the FlashAttentionCache of scaled_dot_product_attention_forward, "
                        "got one of rope_attention_forward")
    dout = upstream("dout", dout, _heads(cache.out, cache.n_head, cache.shape[1]))
    if not all_finite(dout):
        return reference.scaled_dot_product_attention_backward(dout, _reference_cache(cache))
    return attend_heads_backward(dout, cache)


def multi_head_attention_forward(x, W_qkv, b_qkv, W_out, b_out, n_head, causal=False, mask=None):
    """GPT-2 self-attention.  x (B, T, C), W_qkv (C, 3C) laid out [q | k | v], b_qkv (3C,), W_out (C, C),
    b_out (C,) → y (B, T, C), cache."""
    check_multi_head_inputs(x, W_qkv, W_out, n_head)
    B, T, C = x.shape
    qkv, qkv_cache = linear_forward(x, W_qkv, b_qkv)                 # (B, T, 3C), contiguous
    # q, k, v come from one projection, so only causal and the mask can be wrong (the reference's order).
    _check_causal(causal)
    q, k, v = (split_heads(part, n_head) for part in np.split(qkv, 3, axis=-1))   # views, (B, NH, T, HS)
    check_attention_inputs(q, k, v, mask, False)
    if all_finite(qkv):
        HS = C // n_head
        o3 = np.empty((B, T, C), dtype=qkv.dtype)                     # merged heads, as c_proj wants them
        attention = _attend(qkv, qkv, qkv, (0, C, 2 * C), n_head, (B, n_head, T, T, HS, HS), mask, causal, o3)
    else:                                 # the reference's NaN pattern (see the module docstring)
        heads, reference_cache = reference.scaled_dot_product_attention_forward(q, k, v, mask, causal)
        o3, attention = merge_heads(heads), ReferenceAttentionCache(reference_cache)
    y, out_cache = linear_forward(o3, W_out, b_out)
    return y, FlashMultiHeadAttentionCache(qkv_cache, attention, out_cache, int(n_head))


def multi_head_attention_backward(dy, cache):
    """dy (B, T, C) → dx (B, T, C), dW_qkv (C, 3C), db_qkv (3C,), dW_out (C, C), db_out (C,)."""
    check_cache("cache", cache, FlashMultiHeadAttentionCache)
    dmerged, dW_out, db_out = linear_backward(dy, cache.out)
    if isinstance(cache.attention, ReferenceAttentionCache) or not all_finite(dmerged):
        grads = reference.scaled_dot_product_attention_backward(split_heads(dmerged, cache.n_head),
                                                                _reference_cache(cache.attention))
        dqkv = np.concatenate([merge_heads(g) for g in grads], axis=-1)   # (B, T, 3C), as the reference
    else:
        # dq | dk | dv, laid out as c_attn's output. It lives only until c_attn's backward below has read
        # it, so one buffer serves every call (``_workspace``: a fresh one cost about 250 page faults).
        B, T, C = cache.attention.out.shape
        dqkv = reused_buffer("multi_head_attention.dqkv", (B, T, 3 * C), dmerged.dtype)
        _attend_backward(cache.attention, np.ascontiguousarray(dmerged), dqkv, dqkv, dqkv, (0, C, 2 * C))
    dx, dW_qkv, db_qkv = linear_backward(dqkv, cache.qkv)
    return dx, dW_qkv, db_qkv, dW_out, db_out
