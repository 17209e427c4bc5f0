"""Assignment: scaled dot-product attention with masks, forward and backward, in NumPy.

    scores = q kᵀ / √d                 (B, H, Tq, Tk), d = the query/key width q.shape[-1]
    P      = softmax(scores) over the keys (the last axis), disallowed keys getting probability 0
    out    = P v                       (B, H, Tq, dv)

Masks: ``mask`` is None or a bool array broadcastable to (B, H, Tq, Tk), True = may attend.
``causal=True`` lets query i see keys j <= i + (Tk - Tq) (with Tq == Tk: j <= i).  Both may be given;
a key must then be allowed by both.  A query with no allowed key at all must output zeros and pass
no gradient — never NaN.

Conventions (the same as npllm.layers):
* the forward returns its output and then a ``cache`` (a tuple is fine); no globals.
* the backward takes the upstream gradient and the cache and returns (dq, dk, dv), each shaped like
  its input.  ``mask`` and ``causal`` are options: they get no gradient.
* never modify an input in place.

Check your work: open the notebook for the expected output on a sample input, and run
``python grade.py`` for a score per part.
"""
import numpy as np


def scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False):
    """softmax(q kᵀ / √d) v.  q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, dv) → out (B, H, Tq, dv), cache."""
    # BEGIN SOLUTION hint: "mask the scores with -inf BEFORE the softmax; subtract each row's max; 0/0 rows -> 0"
    Tq, Tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * scale                         # (B, H, Tq, Tk)
    allowed = np.ones(scores.shape, dtype=bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        allowed = allowed & (np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq))
    scores = np.where(allowed, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)            # a fully masked row has max -inf
    e = np.exp(scores - row_max)                                      # exp(-inf) = 0 for masked keys
    denom = e.sum(axis=-1, keepdims=True)
    probs = e / np.where(denom > 0, denom, 1.0)                       # a fully masked row stays all 0
    out = probs @ v
    cache = (q, k, v, probs, scale)
    # END SOLUTION
    return out, cache


def scaled_dot_product_attention_backward(dout, cache):
    """dout (B, H, Tq, dv) → dq (B, H, Tq, d), dk (B, H, Tk, d), dv (B, H, Tk, dv)."""
    # BEGIN SOLUTION hint: "dv = Pᵀ dout; dP = dout vᵀ; softmax backward dS = P * (dP - rowsum(dP * P)); scale"
    q, k, v, probs, scale = cache
    dv = probs.swapaxes(-1, -2) @ dout
    dprobs = dout @ v.swapaxes(-1, -2)
    dscores = probs * (dprobs - np.sum(dprobs * probs, axis=-1, keepdims=True)) * scale
    dq = dscores @ k
    dk = dscores.swapaxes(-1, -2) @ q
    # END SOLUTION
    return dq, dk, dv
