"""Assignment: the three new ops of a Llama block — RoPE, RMSNorm's backward and SwiGLU's backward — in NumPy.

Write four functions, in order:

    rope:      each head vector of size HS is split into halves a = x[..., :HS/2], b = x[..., HS/2:];
               pair i at position p is rotated by the angle p · θ_i, θ_i = theta^(−2i / HS):
               y = cat(a cos − b sin, b cos + a sin)          ("rotate half", as Hugging Face's Llama)
    RMSNorm:   y = x / √(mean(x²) + eps) · weight over the last axis (given); write its backward
    SwiGLU:    y = SiLU(gate) ⊙ up, SiLU(z) = z σ(z) (given); write its backward

Shapes: B batch, NH heads, T time steps, HS head size, C channels, I the MLP's width.  Conventions (the
same as npllm.layers):
* a forward returns its output and then a ``cache`` (a tuple is fine); no globals.
* a backward takes the upstream gradient and the cache and returns one gradient per float input of
  the forward, in order (``positions``, ``theta`` and ``eps`` are not floats to differentiate: no
  gradient for them).
* never modify an input in place.

Check your work: open the notebook for the expected output on a sample input, and run
``python grade.py`` for a score per part.
"""
import numpy as np


def rope_forward(x, positions, theta=10000.0):
    """x (B, NH, T, HS) with HS even, positions int (T,) or (B, T) (the same for every head) → y (B, NH, T, HS),
    cache."""
    # BEGIN SOLUTION hint: "angles = positions[..., None] * theta ** (-arange(0, HS, 2) / HS); for (B, T) positions add a head axis: angles[:, None]"
    half = x.shape[-1] // 2
    inv_freq = 1.0 / theta ** (np.arange(0, 2 * half, 2) / (2 * half))    # (HS/2,)
    angles = positions[..., None] * inv_freq                               # (T, HS/2) or (B, T, HS/2)
    if positions.ndim == 2:
        angles = angles[:, None]                                           # (B, 1, T, HS/2): every head
    cos, sin = np.cos(angles), np.sin(angles)
    a, b = x[..., :half], x[..., half:]
    y = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    cache = (cos, sin)
    # END SOLUTION
    return y, cache


def rope_backward(dy, cache):
    """dy (B, NH, T, HS) → dx (B, NH, T, HS)."""
    # BEGIN SOLUTION hint: "a rotation is orthogonal: its transpose, the rotation by minus the angle, carries dy back (sin → −sin)"
    cos, sin = cache
    half = dy.shape[-1] // 2
    da, db = dy[..., :half], dy[..., half:]
    dx = np.concatenate([da * cos + db * sin, db * cos - da * sin], axis=-1)
    # END SOLUTION
    return dx


def rms_norm_forward(x, weight, eps=1e-5):
    """Given.  x (..., C), weight (C,) → y (..., C), cache = (xhat, rstd, weight)."""
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)    # (..., 1)
    xhat = x * rstd
    return xhat * weight, (xhat, rstd, weight)


def rms_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dweight (C,)."""
    # BEGIN SOLUTION hint: "with g = dy * weight: dx = (g - xhat * mean(g * xhat)) * rstd (layer norm's without mean(g)); sum dweight over all rows"
    xhat, rstd, weight = cache
    C = xhat.shape[-1]
    dweight = (dy * xhat).reshape(-1, C).sum(axis=0)
    g = dy * weight
    dx = (g - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * rstd
    # END SOLUTION
    return dx, dweight


def swiglu_forward(gate, up):
    """Given.  gate (..., I), up (..., I) → y = SiLU(gate) ⊙ up (..., I), cache = (gate, up, sigmoid(gate))."""
    sigmoid = 1.0 / (1.0 + np.exp(-gate))
    return gate * sigmoid * up, (gate, up, sigmoid)


def swiglu_backward(dy, cache):
    """dy (..., I) → dgate (..., I), dup (..., I)."""
    # BEGIN SOLUTION hint: "dup = dy * SiLU(gate); dgate = dy * up * SiLU'(gate), SiLU'(z) = σ(z) (1 + z (1 − σ(z)))"
    gate, up, sigmoid = cache
    dup = dy * gate * sigmoid
    dgate = dy * up * sigmoid * (1.0 + gate * (1.0 - sigmoid))
    # END SOLUTION
    return dgate, dup
