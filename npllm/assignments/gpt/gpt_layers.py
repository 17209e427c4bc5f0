"""Assignment: a tiny GPT's own layers — causal multi-head self-attention and layer norm, in NumPy.

Write three functions, in order; part 4 then trains a small GPT (tiny_gpt.py, provided) with them.

    attention:  q | k | v = x W_qkv + b_qkv, split into n_head heads of HS = C / n_head columns;
                per head softmax(q kᵀ / √HS, query t sees keys 0..t) v; heads merged; y = (·) W_out + b_out
    layer norm: y = (x − mean) / √(var + eps) · gamma + beta over the last axis (var divides by C)

Shapes: B batch, T time steps, C channels, NH heads, HS = C / NH head size.  Conventions (the same
as npllm.layers):
* a forward returns its output and then a ``cache`` (a tuple is fine); no globals.
* a backward takes the upstream gradient and the cache and returns one gradient per float input of
  the forward, in order (``n_head`` and ``eps`` are options: no gradient).
* never modify an input in place.

Check your work: open the notebook for the expected output on a sample input, and run
``python grade.py`` for a score per part.
"""
import numpy as np


def causal_self_attention_forward(x, W_qkv, b_qkv, W_out, b_out, n_head):
    """x (B, T, C), W_qkv (C, 3C) laid out [q | k | v], b_qkv (3C,), W_out (C, C), b_out (C,) →
    y (B, T, C), cache."""
    # BEGIN SOLUTION hint: "qkv = x @ W_qkv + b_qkv; reshape each third to (B, NH, T, HS); mask j > t with -inf before the softmax"
    B, T, C = x.shape
    HS = C // n_head
    qkv = x @ W_qkv + b_qkv                                            # (B, T, 3C)
    q, k, v = (part.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
               for part in np.split(qkv, 3, axis=-1))
    scale = 1.0 / np.sqrt(HS)
    scores = (q @ k.swapaxes(-1, -2)) * scale                          # (B, NH, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)                 # key j > query t
    scores = np.where(future, -np.inf, scores)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))            # each row has key 0: max is finite
    probs = e / e.sum(axis=-1, keepdims=True)
    heads = probs @ v                                                  # (B, NH, T, HS)
    merged = heads.transpose(0, 2, 1, 3).reshape(B, T, C)
    y = merged @ W_out + b_out
    cache = (x, W_qkv, W_out, q, k, v, probs, merged, scale)
    # END SOLUTION
    return y, cache


def causal_self_attention_backward(dy, cache):
    """dy (B, T, C) → dx (B, T, C), dW_qkv (C, 3C), db_qkv (3C,), dW_out (C, C), db_out (C,)."""
    # BEGIN SOLUTION hint: "go back through W_out, merge_heads, P v, the softmax (dS = P * (dP - rowsum(dP * P))), the scale and W_qkv"
    x, W_qkv, W_out, q, k, v, probs, merged, scale = cache
    B, T, C = x.shape
    n_head = q.shape[1]
    dW_out = merged.reshape(-1, C).T @ dy.reshape(-1, C)
    db_out = dy.reshape(-1, C).sum(axis=0)
    dheads = (dy @ W_out.T).reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)
    dv = probs.swapaxes(-1, -2) @ dheads
    dprobs = dheads @ v.swapaxes(-1, -2)
    dscores = probs * (dprobs - np.sum(dprobs * probs, axis=-1, keepdims=True)) * scale   # masked: probs = 0
    dq = dscores @ k
    dk = dscores.swapaxes(-1, -2) @ q
    dqkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C) for d in (dq, dk, dv)], axis=-1)
    dW_qkv = x.reshape(-1, C).T @ dqkv.reshape(-1, 3 * C)
    db_qkv = dqkv.reshape(-1, 3 * C).sum(axis=0)
    dx = dqkv @ W_qkv.T
    # END SOLUTION
    return dx, dW_qkv, db_qkv, dW_out, db_out


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """Given.  x (..., C), gamma (C,), beta (C,) → y (..., C), cache = (xhat, rstd, gamma)."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1.0 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)   # (..., 1)
    xhat = centered * rstd
    return xhat * gamma + beta, (xhat, rstd, gamma)


def layer_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dgamma (C,), dbeta (C,)."""
    # BEGIN SOLUTION hint: "with g = dy * gamma: dx = (g - mean(g) - xhat * mean(g * xhat)) * rstd; sum dgamma, dbeta over all rows"
    xhat, rstd, gamma = cache
    C = xhat.shape[-1]
    dgamma = (dy * xhat).reshape(-1, C).sum(axis=0)
    dbeta = dy.reshape(-1, C).sum(axis=0)
    g = dy * gamma
    dx = (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * rstd
    # END SOLUTION
    return dx, dgamma, dbeta
