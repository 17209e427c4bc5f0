"""Root-mean-square normalisation over the last axis (Zhang & Sennrich 2019), as Llama uses it:

    y = x / √(mean(x²) + ε) · w

exactly Hugging Face's ``LlamaRMSNorm``: ``weight * (x * rsqrt(x.pow(2).mean(-1) + eps))``, a weight and
no bias, no mean subtracted.  (Hugging Face upcasts to float32 inside; we compute in x's dtype, which
is float32 or float64 here, so the two agree.)  With r = 1/√(mean(x²) + ε), x̂ = x r and g = dy · w,
differentiating r = (mean(x²) + ε)^(−1/2) gives ∂r/∂x_j = −r³ x_j / C, so

    dx = r (g − x̂ · mean(g · x̂)),     dw = Σ dy · x̂ over every leading position

(layer norm's backward without its mean(g) term: there is no mean to subtract).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream


class RMSNormCache(NamedTuple):
    xhat: np.ndarray     # (..., C) normalised input x / √(mean(x²) + ε)
    rstd: np.ndarray     # (..., 1) 1 / √(mean(x²) + ε)
    weight: np.ndarray   # (C,)


def check_rms_norm_inputs(x, weight, eps):
    """Validate x (..., C), weight (C,) and eps > 0."""
    check_float("x", x)
    if x.ndim < 1:
        raise ValueError("x must have shape (..., C), got a 0-d array")
    check_float("weight", weight)
    check_shape("weight", weight, (x.shape[-1],))
    check_same_dtype(x=x, weight=weight)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def rms_norm_forward(x, weight, eps=1e-6):
    """x · rsqrt(mean(x²) + eps) · weight over the last axis.  x (..., C), weight (C,) → y (..., C), cache."""
    check_rms_norm_inputs(x, weight, eps)
    mean_square = (x * x).mean(axis=-1, keepdims=True)                 # (..., 1)
    rstd = 1.0 / np.sqrt(mean_square + x.dtype.type(eps))
    xhat = x * rstd
    return xhat * weight, RMSNormCache(xhat, rstd, weight)


def rms_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dweight (C,)."""
    check_cache("cache", cache, RMSNormCache)
    xhat, rstd, weight = cache
    dy = upstream("dy", dy, xhat)
    C = xhat.shape[-1]
    dweight = (dy * xhat).reshape(-1, C).sum(axis=0)
    g = dy * weight
    dx = (g - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * rstd
    return dx, dweight
