"""Additive attention (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning to
Align and Translate", eq. 6 and appendix A.1.2), the seq2seq decoder's look back at the source.

For a query q (the decoder state) and keys k_1 … k_Tk (the encoder states):
    e_j = vᵀ tanh(q W_q + k_j W_k)                     a score per source position
    α   = softmax(e) over the valid positions j        the alignment weights (masked: α_j = 0 at padding)
    ctx = Σ_j α_j k_j                                  the context vector
The score is a one-hidden-layer network, so query and keys may have different sizes (Hq, Hk); A is the
width of that hidden layer.  A row whose mask is all False gets zero weights and a zero context and passes
no gradient (never NaN), as ``scaled_dot_product_attention`` does.

Two pairs live here:
* :func:`additive_attention_forward` / ``_backward`` — the op as written above (the op table in docs/architecture.md).
* :func:`additive_attention_projected_forward` / ``_backward`` — the same computation from the
  projections ``q W_q`` and ``k W_k`` already made.  A decoder attends to the same keys at every output
  step, so a model projects the keys once per sequence and calls this at each step; the first pair is
  this one plus the two projections, so both are checked by the same tests.

Both accept one query per row, query (B, Hq), or Tq queries against the same keys, query (B, Tq, Hq):
teacher forcing then scores every decoder step in one call.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream, upstream_shaped


class AdditiveAttentionProjectedCache(NamedTuple):
    keys: np.ndarray       # (B, Tk, Hk)
    hidden: np.ndarray     # (B, Tq, Tk, A) tanh(q W_q + k W_k)
    v: np.ndarray          # (A,)
    weights: np.ndarray    # (B, Tq, Tk) the alignment α (zeros where masked)
    single_query: bool     # the query was (B, ·) rather than (B, Tq, ·): squeeze Tq on the way out


class AdditiveAttentionCache(NamedTuple):
    query: np.ndarray      # (B, Hq) or (B, Tq, Hq)
    keys: np.ndarray       # (B, Tk, Hk)
    W_q: np.ndarray        # (Hq, A)
    W_k: np.ndarray        # (Hk, A)
    attend: AdditiveAttentionProjectedCache


def _check_mask(mask, B: int, Tk: int):
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask must be a bool numpy.ndarray (True = a valid key), got {got}")
    check_shape("mask", mask, (B, Tk))
    return mask


def _check_query(name: str, query, B=None):
    """query (B, H) or (B, Tq, H) → the same array viewed as (B, Tq, H), and whether Tq was absent."""
    check_float(name, query, (2, 3), "(B, H) or (B, Tq, H)")
    if B is not None and query.shape[0] != B:
        raise ValueError(f"{name} must have batch size {B} (the keys'), got shape {query.shape}")
    single = query.ndim == 2
    return (query[:, None, :] if single else query), single


def additive_attention_projected_forward(query_proj, keys, keys_proj, v, mask=None):
    """Attention from projections.  query_proj (B, A) or (B, Tq, A) = query W_q, keys (B, Tk, Hk),
    keys_proj (B, Tk, A) = keys W_k, v (A,), mask bool (B, Tk) or None →
    context (B, Hk) or (B, Tq, Hk), weights (B, Tk) or (B, Tq, Tk), cache."""
    check_float("keys", keys, 3, "(B, Tk, Hk)")
    B, Tk, _ = keys.shape
    if Tk < 1:
        raise ValueError(f"keys must hold at least one position, got shape {keys.shape}")
    q, single = _check_query("query_proj", query_proj, B)
    A = q.shape[2]
    check_float("keys_proj", keys_proj, 3, "(B, Tk, A)")
    check_shape("keys_proj", keys_proj, (B, Tk, A))
    check_float("v", v, 1, "(A,)")
    check_shape("v", v, (A,))
    check_same_dtype(query_proj=query_proj, keys=keys, keys_proj=keys_proj, v=v)
    mask = _check_mask(mask, B, Tk)

    hidden = np.tanh(q[:, :, None, :] + keys_proj[:, None, :, :])            # (B, Tq, Tk, A)
    scores = hidden @ v                                                      # (B, Tq, Tk)
    if mask is not None:
        scores = np.where(mask[:, None, :], scores, -np.inf)
    # Softmax over the keys; the max is taken over valid keys only.  A row with no valid key has
    # max −inf: shift it by 0 instead so exp gives zeros, not NaN, and its weights stay all zero.
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    exp = np.exp(scores - row_max)
    total = exp.sum(axis=-1, keepdims=True)
    weights = exp / np.where(total > 0, total, 1.0)                          # (B, Tq, Tk)
    context = weights @ keys                                                 # (B, Tq, Hk)
    cache = AdditiveAttentionProjectedCache(keys, hidden, v, weights, single)
    if single:
        return context[:, 0], weights[:, 0], cache
    return context, weights, cache


def additive_attention_projected_backward(dcontext, dweights, cache):
    """dcontext like context, dweights like weights (either may be None) →
    dquery_proj (like query_proj), dkeys (B, Tk, Hk), dkeys_proj (B, Tk, A), dv (A,)."""
    check_cache("cache", cache, AdditiveAttentionProjectedCache)
    keys, hidden, v, weights, single = cache
    B, Tq, Tk, A = hidden.shape
    context_shape = (B, keys.shape[2]) if single else (B, Tq, keys.shape[2])
    dcontext = upstream_shaped("dcontext", dcontext, context_shape, keys.dtype)
    dweights = upstream("dweights", dweights, weights[:, 0] if single else weights)
    if single:
        dcontext, dweights = dcontext[:, None], dweights[:, None]
    # context = α @ keys: keys get α-weighted copies of dcontext; α gets dcontext · k_j.
    dkeys = np.swapaxes(weights, 1, 2) @ dcontext                           # (B, Tk, Hk)
    dalpha = dweights + dcontext @ np.swapaxes(keys, 1, 2)                   # (B, Tq, Tk)
    # Softmax backward; masked keys have α = 0, so their scores get no gradient.
    dscores = weights * (dalpha - np.sum(dalpha * weights, axis=-1, keepdims=True))
    dv = np.einsum("bqta,bqt->a", hidden, dscores)
    dpre = dscores[..., None] * v * (1.0 - hidden * hidden)                 # (B, Tq, Tk, A) through tanh
    dquery_proj = dpre.sum(axis=2)                                           # (B, Tq, A)
    dkeys_proj = dpre.sum(axis=1)                                            # (B, Tk, A)
    return (dquery_proj[:, 0] if single else dquery_proj), dkeys, dkeys_proj, dv


def additive_attention_forward(query, keys, W_q, W_k, v, mask=None):
    """Bahdanau attention.  query (B, Hq) or (B, Tq, Hq), keys (B, Tk, Hk), W_q (Hq, A), W_k (Hk, A),
    v (A,), mask bool (B, Tk), True = valid key (None: all valid) →
    context (B, Hk) or (B, Tq, Hk), weights (B, Tk) or (B, Tq, Tk), cache."""
    check_float("keys", keys, 3, "(B, Tk, Hk)")
    _check_query("query", query, keys.shape[0])
    check_float("W_q", W_q, 2, "(Hq, A)")
    check_shape("W_q", W_q, (query.shape[-1], None))
    check_float("W_k", W_k, 2, "(Hk, A)")
    check_shape("W_k", W_k, (keys.shape[2], W_q.shape[1]))
    check_float("v", v, 1, "(A,)")
    check_same_dtype(query=query, keys=keys, W_q=W_q, W_k=W_k, v=v)
    context, weights, attend = additive_attention_projected_forward(query @ W_q, keys, keys @ W_k, v, mask)
    return context, weights, AdditiveAttentionCache(query, keys, W_q, W_k, attend)


def additive_attention_backward(dcontext, dweights, cache):
    """dcontext, dweights (None = zeros) → dquery, dkeys (B, Tk, Hk), dW_q (Hq, A), dW_k (Hk, A), dv (A,)."""
    check_cache("cache", cache, AdditiveAttentionCache)
    query, keys, W_q, W_k, attend = cache
    dquery_proj, dkeys, dkeys_proj, dv = additive_attention_projected_backward(dcontext, dweights, attend)
    # The keys reach the output twice: directly (the weighted sum) and through keys W_k (the scores).
    dkeys = dkeys + dkeys_proj @ W_k.T
    dW_k = keys.reshape(-1, keys.shape[2]).T @ dkeys_proj.reshape(-1, W_k.shape[1])
    dW_q = query.reshape(-1, query.shape[-1]).T @ dquery_proj.reshape(-1, W_q.shape[1])
    return dquery_proj @ W_q.T, dkeys, dW_q, dW_k, dv
