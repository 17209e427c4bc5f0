"""Fused layer norm over the last axis (Numba CPU); reference: ``npllm.layers.layer_norm``.

    y = (x − μ) · rstd · γ + β,   rstd = 1 / √(σ² + ε)       (σ² the biased variance, as in GPT-2)
    dx = (g − mean(g) − x̂ · mean(g · x̂)) · rstd,   g = dy · γ,   x̂ = (x − μ) · rstd

What the fusion buys over the NumPy reference (which makes about ten passes and as many temporaries):
* forward: one row at a time in ``prange``; two passes over a row that sits in L1 (mean, then the
  centred variance — the one-pass E[x²] − μ² form loses digits when |μ| ≫ σ), then one pass writing y;
* the cache keeps x (by reference, as the reference's GELU does), μ and rstd per row — not x̂, so the
  forward writes only y and the backward recomputes x̂ on the fly, as llm.c does;
* backward: one pass per row for the two means, one pass for dx, and dγ/dβ summed without races: rows
  are split into at most ``_N_CHUNKS`` fixed chunks, each chunk sums into its own row of a partial
  buffer, then the partials are added — the result does not depend on the number of threads.
Precision for float32 inputs: the sums whose error grows with C or N (μ, σ², the two means of the
backward, dγ/dβ) run in float64, and so does the centring x − μ: rounding μ to float32 first would
shift every x̂ of a row by up to ulp(μ)/σ, visible when |μ| ≫ σ.  The rest stays in float32 (the cost
of the float64 centring: docs/performance.md, "Small kernels"; x̂ is then as accurate as float32 holds it).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, upstream
from npllm.layers.layer_norm import check_layer_norm_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH
from npllm_kernels.cpu._threads import for_thread_count, serial_twin

_N_CHUNKS = 16   # row chunks for the dγ/dβ partial sums (fixed, so results do not depend on threads)


class FusedLayerNormCache(NamedTuple):
    x: np.ndarray       # (N, C) the input, rows flattened (a view of the caller's array, never written)
    mean: np.ndarray    # (N,) float64 row means
    rstd: np.ndarray    # (N,) float64 1 / √(σ² + ε)
    gamma: np.ndarray   # (C,)
    x_shape: tuple      # the input's shape (..., C)


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _layer_norm_forward_kernel(x, gamma, beta, eps, y, mean, rstd):
    N, C = x.shape
    for row in prange(N):
        total = 0.0
        for col in range(C):
            total += x[row, col]
        mu = total / C
        sq = 0.0
        for col in range(C):
            centred = x[row, col] - mu
            sq += centred * centred
        r = 1.0 / np.sqrt(sq / C + eps)
        mean[row] = mu
        rstd[row] = r
        for col in range(C):
            xhat = x.dtype.type((x[row, col] - mu) * r)
            y[row, col] = xhat * gamma[col] + beta[col]


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _layer_norm_backward_kernel(dy, x, mean, rstd, gamma, dx, dgamma_parts, dbeta_parts):
    N, C = x.shape
    n_chunks = dgamma_parts.shape[0]
    rows_per_chunk = (N + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        dgamma_acc = dgamma_parts[chunk]
        dbeta_acc = dbeta_parts[chunk]
        for row in range(chunk * rows_per_chunk, min(N, (chunk + 1) * rows_per_chunk)):
            mu = mean[row]
            r = rstd[row]
            r_t = x.dtype.type(r)
            sum_g = 0.0
            sum_g_xhat = 0.0
            for col in range(C):
                xhat = x.dtype.type((x[row, col] - mu) * r)
                g = dy[row, col] * gamma[col]
                sum_g += g
                sum_g_xhat += g * xhat
                dgamma_acc[col] += dy[row, col] * xhat
                dbeta_acc[col] += dy[row, col]
            mean_g = x.dtype.type(sum_g / C)
            mean_g_xhat = x.dtype.type(sum_g_xhat / C)
            for col in range(C):
                xhat = x.dtype.type((x[row, col] - mu) * r)
                dx[row, col] = (dy[row, col] * gamma[col] - mean_g - xhat * mean_g_xhat) * r_t


_SERIAL_OPTIONS = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")
_layer_norm_forward_serial = serial_twin(_layer_norm_forward_kernel, **_SERIAL_OPTIONS)
_layer_norm_backward_serial = serial_twin(_layer_norm_backward_kernel, **_SERIAL_OPTIONS)


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """Normalise over the last axis.  x (..., C), gamma (C,), beta (C,) → y (..., C), cache."""
    check_layer_norm_inputs(x, gamma, beta, eps)
    C = x.shape[-1]
    x2d = np.ascontiguousarray(x).reshape(-1, C)                      # (N, C), a view when contiguous
    N = x2d.shape[0]
    y = np.empty((N, C), dtype=x.dtype)
    mean = np.empty(N, dtype=np.float64)
    rstd = np.empty(N, dtype=np.float64)
    kernel = for_thread_count(_layer_norm_forward_kernel, _layer_norm_forward_serial, x2d.size)
    kernel(x2d, np.ascontiguousarray(gamma), np.ascontiguousarray(beta), float(eps), y, mean, rstd)
    return y.reshape(x.shape), FusedLayerNormCache(x2d, mean, rstd, gamma, x.shape)


def layer_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dgamma (C,), dbeta (C,)."""
    check_cache("cache", cache, FusedLayerNormCache)
    x2d, mean, rstd, gamma, x_shape = cache
    N, C = x2d.shape
    dy = upstream("dy", dy, x2d.reshape(x_shape))
    dy2d = np.ascontiguousarray(dy).reshape(N, C)
    dx = np.empty((N, C), dtype=x2d.dtype)
    n_chunks = max(1, min(N, _N_CHUNKS))
    dgamma_parts = np.zeros((n_chunks, C), dtype=np.float64)
    dbeta_parts = np.zeros((n_chunks, C), dtype=np.float64)
    kernel = for_thread_count(_layer_norm_backward_kernel, _layer_norm_backward_serial, x2d.size)
    kernel(dy2d, x2d, mean, rstd, np.ascontiguousarray(gamma), dx, dgamma_parts, dbeta_parts)
    dgamma = dgamma_parts.sum(axis=0).astype(x2d.dtype)
    dbeta = dbeta_parts.sum(axis=0).astype(x2d.dtype)
    return dx.reshape(x_shape), dgamma, dbeta
