"""Element-wise nonlinearities: tanh, sigmoid, ReLU, GELU (tanh approximation and exact erf form), SiLU.

GELU: Hendrycks & Gimpel (2016), GELU(x) = x Φ(x); GPT-2 uses the tanh approximation
0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
SiLU (swish): Elfwing et al. (2017), Ramachandran et al. (2017), SiLU(x) = x σ(x), whose derivative is
σ(x) (1 + x (1 − σ(x))); Llama's SwiGLU MLP gates with it (npllm.layers.swiglu).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, upstream


class TanhCache(NamedTuple):
    y: np.ndarray   # tanh(x): the derivative 1 − y² needs only the output


class SigmoidCache(NamedTuple):
    y: np.ndarray   # σ(x): the derivative σ(1 − σ) needs only the output


class ReluCache(NamedTuple):
    x: np.ndarray


class GeluCache(NamedTuple):
    x: np.ndarray
    approximate: str


class SiluCache(NamedTuple):
    x: np.ndarray
    sigmoid: np.ndarray   # σ(x), computed once for the output and reused by the derivative


def tanh_forward(x):
    """y = tanh(x), any shape → y, cache."""
    check_float("x", x)
    y = np.tanh(x)
    return y, TanhCache(y)


def tanh_backward(dy, cache):
    """dx = dy (1 − y²)."""
    check_cache("cache", cache, TanhCache)
    dy = upstream("dy", dy, cache.y)
    return dy * (1.0 - cache.y * cache.y)


def sigmoid(x):
    """σ(x) = 1 / (1 + e^−x) without overflow: e^−|x| never exceeds 1."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype, copy=False)


def sigmoid_forward(x):
    """y = σ(x), any shape → y, cache."""
    check_float("x", x)
    y = sigmoid(x)
    return y, SigmoidCache(y)


def sigmoid_backward(dy, cache):
    """dx = dy σ (1 − σ)."""
    check_cache("cache", cache, SigmoidCache)
    dy = upstream("dy", dy, cache.y)
    return dy * cache.y * (1.0 - cache.y)


def relu_forward(x):
    """y = max(x, 0), any shape → y, cache."""
    check_float("x", x)
    return np.maximum(x, 0), ReluCache(x)


def relu_backward(dy, cache):
    """dx = dy where x > 0, else 0 (the subgradient at 0 is taken as 0)."""
    check_cache("cache", cache, ReluCache)
    dy = upstream("dy", dy, cache.x)
    return dy * (cache.x > 0)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_APPROXIMATIONS = ("tanh", "none")


def gelu_forward(x, approximate="tanh"):
    """GELU(x), any shape; approximate="tanh" (GPT-2) or "none" (exact x Φ(x)) → y, cache."""
    check_float("x", x)
    if approximate not in _GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
    if approximate == "tanh":
        # x * x * x, not x ** 3: NumPy sends a float32 power to the generic pow loop, 20x slower here.
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        y = 0.5 * x * (1.0 + np.tanh(inner))
    else:
        from scipy.special import erf
        y = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    return y.astype(x.dtype, copy=False), GeluCache(x, approximate)


def gelu_backward(dy, cache):
    """dx = dy · GELU'(x), differentiating whichever form the forward used."""
    check_cache("cache", cache, GeluCache)
    x = cache.x
    dy = upstream("dy", dy, x)
    if cache.approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        t = np.tanh(inner)
        dinner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
        grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
    else:
        from scipy.special import erf
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        grad = cdf + x * pdf
    return (dy * grad).astype(x.dtype, copy=False)


def silu_forward(x):
    """y = x σ(x) (SiLU, swish), any shape → y, cache."""
    check_float("x", x)
    s = sigmoid(x)
    return x * s, SiluCache(x, s)


def silu_backward(dy, cache):
    """dx = dy σ(x) (1 + x (1 − σ(x)))."""
    check_cache("cache", cache, SiluCache)
    x, s = cache
    dy = upstream("dy", dy, x)
    return dy * (s * (1.0 + x * (1.0 - s)))
