"""Layer normalisation over the last axis (Ba, Kiros & Hinton 2016): y = (x − μ) / √(σ² + ε) · γ + β.

σ² is the biased variance (divide by C), as in PyTorch and GPT-2.  The backward is the compact form
derived in llm.c's doc/layernorm: with x̂ the normalised input and g = dy · γ,
dx = (g − mean(g) − x̂ · mean(g · x̂)) / √(σ² + ε).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream


class LayerNormCache(NamedTuple):
    xhat: np.ndarray    # (..., C) normalised input
    rstd: np.ndarray    # (..., 1) 1 / √(σ² + ε)
    gamma: np.ndarray   # (C,)


def check_layer_norm_inputs(x, gamma, beta, eps):
    """Validate x (..., C), gamma (C,), beta (C,) and eps > 0; kernels share these checks."""
    check_float("x", x)
    if x.ndim < 1:
        raise ValueError("x must have shape (..., C), got a 0-d array")
    C = x.shape[-1]
    check_float("gamma", gamma)
    check_shape("gamma", gamma, (C,))
    check_float("beta", beta)
    check_shape("beta", beta, (C,))
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """Normalise over the last axis.  x (..., C), gamma (C,), beta (C,) → y (..., C), cache."""
    check_layer_norm_inputs(x, gamma, beta, eps)
    C = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = centered * rstd
    y = xhat * gamma + beta
    return y, LayerNormCache(xhat, rstd, gamma)


def layer_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dgamma (C,), dbeta (C,)."""
    check_cache("cache", cache, LayerNormCache)
    xhat, rstd, gamma = cache
    dy = upstream("dy", dy, xhat)
    C = xhat.shape[-1]
    dgamma = (dy * xhat).reshape(-1, C).sum(axis=0)
    dbeta = dy.reshape(-1, C).sum(axis=0)
    g = dy * gamma
    dx = (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * rstd
    return dx, dgamma, dbeta
