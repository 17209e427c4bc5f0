"""Scaled dot-product attention (Vaswani et al. 2017) and GPT-2's multi-head self-attention.

    S = Q Kᵀ / √d,   P = softmax(S) over keys (disallowed keys get probability 0),   O = P V

The scale is 1/√d with d the *query/key* width: without it the dot products grow like √d and the
softmax saturates.  Masks: ``mask`` is a bool array broadcastable to (B, H, Tq, Tk), True = may attend;
``causal=True`` lets query i see keys j ≤ i + (Tk − Tq), so with a key/value cache (Tk > Tq) the new
queries see the whole past.  A query with no allowed key outputs zeros and passes no gradient (never
NaN): its softmax denominator is 0, and we define the row as all-zero probabilities.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream_shaped
from npllm.layers.linear import linear_backward, linear_forward


class AttentionCache(NamedTuple):
    q: np.ndarray       # (B, H, Tq, d)
    k: np.ndarray       # (B, H, Tk, d)
    v: np.ndarray       # (B, H, Tk, dv)
    probs: np.ndarray   # (B, H, Tq, Tk) attention weights
    scale: float


def check_attention_inputs(q, k, v, mask, causal):
    """Validate q, k, v, mask and causal; return the boolean mask of allowed (query, key) pairs or None."""
    check_float("q", q, 4, "(B, H, Tq, d)")
    check_float("k", k, 4, "(B, H, Tk, d)")
    check_float("v", v, 4, "(B, H, Tk, dv)")
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    check_shape("k", k, (B, H, None, d))
    check_shape("v", v, (B, H, Tk, None))
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
    """softmax(q kᵀ/√d) v.  q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, dv) → out (B, H, Tq, dv), cache."""
    allowed = check_attention_inputs(q, k, v, mask, causal)
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * q.dtype.type(scale)          # (B, H, Tq, Tk)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)           # fully masked rows: avoid −inf − −inf
    e = np.exp(scores - row_max)
    denom = e.sum(axis=-1, keepdims=True)
    probs = e / np.where(denom > 0, denom, 1.0)                      # fully masked rows stay all-zero
    out = probs @ v                                                  # (B, H, Tq, dv)
    return out, AttentionCache(q, k, v, probs.astype(q.dtype, copy=False), scale)


def scaled_dot_product_attention_backward(dout, cache):
    """dout (B, H, Tq, dv) → dq (B, H, Tq, d), dk (B, H, Tk, d), dv (B, H, Tk, dv)."""
    check_cache("cache", cache, AttentionCache)
    q, k, v, probs, scale = cache
    dout = upstream_shaped("dout", dout, q.shape[:-1] + (v.shape[-1],), q.dtype)
    dv = probs.swapaxes(-1, -2) @ dout                               # (B, H, Tk, dv)
    dprobs = dout @ v.swapaxes(-1, -2)                               # (B, H, Tq, Tk)
    # Softmax backward per row; masked entries have probs = 0, so they get no gradient.
    dscores = probs * (dprobs - np.sum(dprobs * probs, axis=-1, keepdims=True))
    dscores *= q.dtype.type(scale)
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


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
