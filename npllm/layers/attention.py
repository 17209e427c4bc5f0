"""Scaled dot-product attention (Vaswani et al. 2017) and GPT-2's multi-head self-attention.

    S = Q Kᵀ / √d,   P = softmax(S) over keys (disallowed keys get probability 0),   O = P V

The scale is 1/√d with d the *query/key* width: without it the dot products grow like √d and the
softmax saturates.  Masks: ``mask`` is a bool array broadcastable to (B, H, Tq, Tk), True = may attend;
``causal=True`` lets query i see keys j ≤ i + (Tk − Tq), so with a key/value cache (Tk > Tq) the new
queries see the whole past.  A query with no allowed key outputs zeros and passes no gradient (never
NaN): its softmax denominator is 0, and we define the row as all-zero probabilities.

Grouped-query attention (Ainslie et al. 2023, "GQA"): k and v may have Hkv heads, fewer than q's H,
with H a multiple of Hkv; query head h reads kv head h // (H // Hkv), as Hugging Face's ``repeat_kv``.
Hkv = H is multi-head attention, Hkv = 1 multi-query (Shazeer 2019).  Instead of repeating k and v,
q is viewed as (B, Hkv, G·Tq, d) with G = H // Hkv: the G query heads of a group become G·Tq rows
against the same keys, so one product serves them, and in the backward dk = dSᵀ Q and dv = Pᵀ dO
sum over the group inside the product; dk and dv come back with k's and v's shapes.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream_shaped
from npllm.layers.linear import linear_backward, linear_forward


class AttentionCache(NamedTuple):
    q: np.ndarray       # (B, H, Tq, d)
    k: np.ndarray       # (B, Hkv, Tk, d), Hkv dividing H
    v: np.ndarray       # (B, Hkv, Tk, dv)
    probs: np.ndarray   # (B, H, Tq, Tk) attention weights
    scale: float


def check_attention_inputs(q, k, v, mask, causal, grouped=False):
    """Validate q, k, v, mask and causal; return the boolean mask of allowed (query, key) pairs or None.

    ``grouped=True`` accepts k and v with fewer heads than q (grouped-query attention, H a multiple of
    Hkv); the reference passes it.  Kernels that call this check without it keep requiring Hkv = H, so
    a backend without grouped-query support raises a clear error instead of reading the wrong heads.
    """
    check_float("q", q, 4, "(B, H, Tq, d)")
    check_float("k", k, 4, "(B, Hkv, Tk, d)")
    check_float("v", v, 4, "(B, Hkv, Tk, dv)")
    B, H, Tq, d = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if Hkv != H and (Hkv == 0 or H % Hkv):
        raise ValueError(f"k's head count Hkv (axis 1) must divide q's H = {H} (grouped-query attention: "
                         f"each kv head serves H // Hkv query heads), got {Hkv} in shape {k.shape}")
    if Hkv != H and not grouped:
        raise ValueError(f"k has {Hkv} heads and q {H}: grouped-query attention (fewer k/v heads than q "
                         f"heads) is computed by the NumPy reference (npllm.layers), not by this kernel")
    check_shape("k", k, (B, Hkv, None, d))
    check_shape("v", v, (B, Hkv, Tk, None))
    check_same_dtype(q=q, k=k, v=v)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    allowed = None
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
            raise TypeError(f"mask must be a bool numpy.ndarray (True = may attend), got {got}")
        try:
            allowed = np.broadcast_to(mask, (B, H, Tq, Tk))
        except ValueError:
            raise ValueError(f"mask must be broadcastable to (B, H, Tq, Tk) = {(B, H, Tq, Tk)}, got {mask.shape}") from None
    if causal:
        offset = Tk - Tq
        causal_mask = np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + offset   # (Tq, Tk)
        allowed = causal_mask if allowed is None else allowed & causal_mask
    return allowed


def scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False):
    """softmax(q kᵀ/√d) v.  q (B, H, Tq, d), k (B, Hkv, Tk, d), v (B, Hkv, Tk, dv) with H % Hkv == 0
    → out (B, H, Tq, dv), cache."""
    allowed = check_attention_inputs(q, k, v, mask, causal, grouped=True)
    B, H, Tq, d = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    rows = H // Hkv * Tq if Hkv else 0                               # G·Tq query rows per kv head
    scale = 1.0 / np.sqrt(d)
    grouped_q = q.reshape(B, Hkv, rows, d)                           # a group's query heads as extra rows
    scores = (grouped_q @ k.swapaxes(-1, -2)).reshape(B, H, Tq, Tk) * q.dtype.type(scale)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)           # fully masked rows: avoid −inf − −inf
    e = np.exp(scores - row_max)
    denom = e.sum(axis=-1, keepdims=True)
    probs = e / np.where(denom > 0, denom, 1.0)                      # fully masked rows stay all-zero
    out = (probs.reshape(B, Hkv, rows, Tk) @ v).reshape(B, H, Tq, v.shape[-1])   # (B, H, Tq, dv)
    return out, AttentionCache(q, k, v, probs.astype(q.dtype, copy=False), scale)


def scaled_dot_product_attention_backward(dout, cache):
    """dout (B, H, Tq, dv) → dq (B, H, Tq, d), dk (B, Hkv, Tk, d), dv (B, Hkv, Tk, dv)."""
    check_cache("cache", cache, AttentionCache)
    q, k, v, probs, scale = cache
    B, H, Tq, d = q.shape
    Hkv, Tk, dv_size = k.shape[1], k.shape[2], v.shape[-1]
    rows = H // Hkv * Tq if Hkv else 0                               # G·Tq query rows per kv head
    dout = upstream_shaped("dout", dout, q.shape[:-1] + (v.shape[-1],), q.dtype)
    grouped_probs = probs.reshape(B, Hkv, rows, Tk)
    grouped_dout = dout.reshape(B, Hkv, rows, dv_size)
    # The product over the G·Tq rows sums each kv head's gradient over the query heads that read it.
    dv = grouped_probs.swapaxes(-1, -2) @ grouped_dout               # (B, Hkv, Tk, dv)
    dprobs = (grouped_dout @ v.swapaxes(-1, -2)).reshape(B, H, Tq, Tk)
    # Softmax backward per row; masked entries have probs = 0, so they get no gradient.
    dscores = probs * (dprobs - np.sum(dprobs * probs, axis=-1, keepdims=True))
    dscores *= q.dtype.type(scale)
    grouped_dscores = dscores.reshape(B, Hkv, rows, Tk)
    dq = (grouped_dscores @ k).reshape(B, H, Tq, d)
    dk = grouped_dscores.swapaxes(-1, -2) @ q.reshape(B, Hkv, rows, d)   # (B, Hkv, Tk, d)
    return dq, dk, dv


class MultiHeadAttentionCache(NamedTuple):
    qkv: object          # LinearCache of the fused q|k|v projection
    attention: object    # cache of scaled_dot_product_attention_forward
    out: object          # LinearCache of the output projection
    n_head: int


def split_heads(x, n_head):
    """(B, T, C) → (B, NH, T, HS) with HS = C / NH."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(y):
    """(B, NH, T, HS) → (B, T, C): the inverse of split_heads."""
    B, NH, T, HS = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, NH * HS)


def check_multi_head_inputs(x, W_qkv, W_out, n_head) -> None:
    """The checks of x, the weights and n_head (shared with the kernels that replace this op)."""
    check_float("x", x, 3, "(B, T, C)")
    C = x.shape[-1]
    if not isinstance(n_head, (int, np.integer)) or n_head < 1 or C % n_head:
        raise ValueError(f"n_head must be a positive integer dividing C = {C}, got {n_head!r}")
    check_float("W_qkv", W_qkv, 2, "(C, 3C)")
    check_shape("W_qkv", W_qkv, (C, 3 * C))
    check_float("W_out", W_out, 2, "(C, C)")
    check_shape("W_out", W_out, (C, C))


def multi_head_attention_forward(x, W_qkv, b_qkv, W_out, b_out, n_head, causal=False, mask=None):
    """GPT-2 self-attention.  x (B, T, C), W_qkv (C, 3C) laid out [q | k | v], b_qkv (3C,), W_out (C, C),
    b_out (C,) → y (B, T, C), cache."""
    check_multi_head_inputs(x, W_qkv, W_out, n_head)
    qkv, qkv_cache = linear_forward(x, W_qkv, b_qkv)                 # (B, T, 3C)
    q, k, v = (split_heads(part, n_head) for part in np.split(qkv, 3, axis=-1))   # each (B, NH, T, HS)
    attn, attn_cache = scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
    y, out_cache = linear_forward(merge_heads(attn), W_out, b_out)   # (B, T, C)
    return y, MultiHeadAttentionCache(qkv_cache, attn_cache, out_cache, int(n_head))


def multi_head_attention_backward(dy, cache):
    """dy (B, T, C) → dx (B, T, C), dW_qkv (C, 3C), db_qkv (3C,), dW_out (C, C), db_out (C,)."""
    check_cache("cache", cache, MultiHeadAttentionCache)
    dmerged, dW_out, db_out = linear_backward(dy, cache.out)
    dattn = split_heads(dmerged, cache.n_head)                       # (B, NH, T, HS)
    dq, dk, dv = scaled_dot_product_attention_backward(dattn, cache.attention)
    dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)   # (B, T, 3C)
    dx, dW_qkv, db_qkv = linear_backward(dqkv, cache.qkv)
    return dx, dW_qkv, db_qkv, dW_out, db_out
