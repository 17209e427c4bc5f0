"""Fused GELU forward/backward (Numba CPU); reference: ``npllm.layers.activations``.

GELU(x) = x Φ(x) (Hendrycks & Gimpel 2016).  GPT-2's tanh approximation is rewritten with a sigmoid,
    0.5 x (1 + tanh(u)) = x σ(2u),   u = √(2/π) (x + 0.044715 x³),
    GELU'(x) = σ(2u) + 2 x σ(2u) (1 − σ(2u)) u',   u' = √(2/π) (1 + 3 · 0.044715 x²),
which is the same function with one exp and no cancellation: 1 + tanh(u) loses all its digits for
x ≲ −5, σ(2u) keeps them.  ``fast_sigmoid`` (a polynomial exp, ``_math.py``) lets the loop vectorize;
with ``np.tanh`` it would be one libm call per element (docs/performance.md, "Small kernels").

``approximate="none"`` (the exact erf form) uses ``math.erf``, a scalar libm call per element, still
fused into one parallel pass.  The cache keeps x by reference, as the reference's does.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, check_float, upstream
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_exp, fast_sigmoid
from npllm_kernels.cpu._threads import for_thread_count, serial_twin

_GELU_APPROXIMATIONS = ("tanh", "none")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_BLOCK = 4096   # elements per prange task: large enough to amortise scheduling, small enough to balance


class FusedGeluCache(NamedTuple):
    x: np.ndarray        # the input (the caller's array, never written)
    approximate: str     # "tanh" or "none"


# The GELU(tanh) formula once, for this file's kernel and mlp.py's fused ones (inlined into each).
# Numba's on-disk cache keys a kernel on its own file only: after editing these two, clear
# npllm_kernels/cpu/__pycache__ so that mlp.py's kernels are compiled again (as for _math.py).
@njit(inline="always", fastmath=KERNEL_FASTMATH, error_model="numpy")
def gelu_tanh(v):
    """GELU(v), tanh form, for one float32/float64 scalar in an ``@njit`` loop: v σ(2u)."""
    dtype = type(v)
    return v * fast_sigmoid(dtype(2.0 * _SQRT_2_OVER_PI) * (v + dtype(0.044715) * v * v * v))


@njit(inline="always", fastmath=KERNEL_FASTMATH, error_model="numpy")
def gelu_tanh_grad(v):
    """GELU'(v), tanh form, for one scalar: σ(2u) + 2 v σ(2u)(1 − σ(2u)) u'."""
    dtype = type(v)
    one, two = dtype(1.0), dtype(2.0)
    s = fast_sigmoid(dtype(2.0 * _SQRT_2_OVER_PI) * (v + dtype(0.044715) * v * v * v))     # σ(2u)
    du = dtype(_SQRT_2_OVER_PI) * (one + dtype(3 * 0.044715) * v * v)
    return s + two * v * s * (one - s) * du


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _gelu_tanh_kernel(x, dy, out, backward):
    """out = GELU(x), or dy · GELU'(x) when ``backward``; all 1-D of one length, tanh form."""
    for block in prange((x.size + _BLOCK - 1) // _BLOCK):
        # Slices indexed from 0: LLVM can then drop numba's negative-index check and vectorize.
        lo, hi = block * _BLOCK, (block + 1) * _BLOCK
        xb, dyb, outb = x[lo:hi], dy[lo:hi], out[lo:hi]
        if backward:
            for i in range(xb.size):
                outb[i] = dyb[i] * gelu_tanh_grad(xb[i])
        else:
            for i in range(xb.size):
                outb[i] = gelu_tanh(xb[i])


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _gelu_erf_kernel(x, dy, out, backward):
    """out = x Φ(x), or dy · (Φ(x) + x φ(x)) when ``backward``; all 1-D of one length."""
    dtype = x.dtype.type
    half = dtype(0.5)
    for block in prange((x.size + _BLOCK - 1) // _BLOCK):
        lo, hi = block * _BLOCK, (block + 1) * _BLOCK
        xb, dyb, outb = x[lo:hi], dy[lo:hi], out[lo:hi]
        for i in range(xb.size):
            v = xb[i]
            cdf = half * (dtype(1.0) + dtype(math.erf(v * dtype(_INV_SQRT_2))))
            if backward:
                pdf = fast_exp(-half * v * v) * dtype(_INV_SQRT_2PI)
                outb[i] = dyb[i] * (cdf + v * pdf)
            else:
                outb[i] = v * cdf


_SERIAL_OPTIONS = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")
_gelu_tanh_serial = serial_twin(_gelu_tanh_kernel, **_SERIAL_OPTIONS)
_gelu_erf_serial = serial_twin(_gelu_erf_kernel, **_SERIAL_OPTIONS)


def gelu_into(x, dy, approximate, out):
    """out = GELU(x) (dy None) or dy · GELU'(x); out is a contiguous array of x's size (may be dy)."""
    flat_x = np.ascontiguousarray(x).reshape(-1)
    flat_dy = flat_x if dy is None else np.ascontiguousarray(dy).reshape(-1)
    backward = dy is not None
    if approximate == "tanh":
        kernel = for_thread_count(_gelu_tanh_kernel, _gelu_tanh_serial, flat_x.size)
    else:
        kernel = for_thread_count(_gelu_erf_kernel, _gelu_erf_serial, flat_x.size)
    kernel(flat_x, flat_dy, out.reshape(-1), backward)
    return out


def _run(x, dy, approximate, backward):
    return gelu_into(x, dy if backward else None, approximate, np.empty(x.shape, dtype=x.dtype))


def gelu_forward(x, approximate="tanh"):
    """GELU(x), any shape; approximate="tanh" (GPT-2) or "none" (exact x Φ(x)) → y, cache."""
    check_float("x", x)
    if approximate not in _GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
    return _run(x, None, approximate, False), FusedGeluCache(x, approximate)


def gelu_backward(dy, cache):
    """dx = dy · GELU'(x), differentiating whichever form the forward used."""
    check_cache("cache", cache, FusedGeluCache)
    dy = upstream("dy", dy, cache.x)
    return _run(cache.x, dy, cache.approximate, True)
