"""Fused RMSNorm over the last axis (Numba CPU); reference: ``npllm.layers.rms_norm``.

    y = x̂ · w,   x̂ = x · r,   r = 1 / √(mean(x²) + ε)              (Zhang & Sennrich 2019; Llama)
    dx = r (g − x̂ · mean(g · x̂)),   g = dy · w,   dw = Σ_rows dy · x̂

layer_norm.py's kernel without the mean (no centring, no mean(g) term), and the same plan:
* forward: one row at a time in ``prange``, one pass for Σ x² (the row sits in L1), one pass writing y;
  the cache keeps x (by reference) and r per row, not x̂, so the forward writes only y;
* backward: one pass per row for Σ g x̂ (accumulating dw's partial in the same pass), one pass for dx;
  dw is summed without races in at most ``_N_CHUNKS`` fixed row chunks, each into its own row of a
  partial buffer, so the result does not depend on the number of threads;
* with one Numba thread or little work the serial twin runs (``_threads.for_thread_count``).
Precision: the sums whose error grows with C or N (Σ x², Σ g x̂, dw) run in float64 for float32
inputs; the rest stays in the input's dtype, rounded where the reference rounds (x̂ to the dtype before
it multiplies w).  Non-finite values need no special path: each row's arithmetic is the reference's, so a
NaN or inf gives NaN/inf exactly where the reference does (its row, and dw's columns).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, upstream
from npllm.layers.rms_norm import check_rms_norm_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH
from npllm_kernels.cpu._threads import for_thread_count, serial_twin

_N_CHUNKS = 16   # row chunks for dw's partial sums (fixed, so results do not depend on threads)


class FusedRMSNormCache(NamedTuple):
    x: np.ndarray        # (N, C) the input, rows flattened (a view of the caller's array, never written)
    rstd: np.ndarray     # (N,) float64 1 / √(mean(x²) + ε)
    weight: np.ndarray   # (C,)
    x_shape: tuple       # the input's shape (..., C)


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _rms_norm_forward_kernel(x, weight, eps, y, rstd):
    N, C = x.shape
    for row in prange(N):
        x_row, y_row = x[row], y[row]
        sq = 0.0
        for col in range(C):
            sq += np.float64(x_row[col]) * x_row[col]
        r = 1.0 / np.sqrt(sq / C + eps)
        rstd[row] = r
        r_t = x.dtype.type(r)
        for col in range(C):
            y_row[col] = (x_row[col] * r_t) * weight[col]


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _rms_norm_backward_kernel(dy, x, rstd, weight, dx, dweight_parts):
    N, C = x.shape
    n_chunks = dweight_parts.shape[0]
    rows_per_chunk = (N + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        dweight_acc = dweight_parts[chunk]
        for row in range(chunk * rows_per_chunk, min(N, (chunk + 1) * rows_per_chunk)):
            x_row, dy_row, dx_row = x[row], dy[row], dx[row]
            r_t = x.dtype.type(rstd[row])
            sum_g_xhat = 0.0
            for col in range(C):
                xhat = x_row[col] * r_t
                sum_g_xhat += np.float64(dy_row[col] * weight[col]) * xhat
                dweight_acc[col] += np.float64(dy_row[col]) * xhat
            mean_g_xhat = x.dtype.type(sum_g_xhat / C)
            for col in range(C):
                xhat = x_row[col] * r_t
                dx_row[col] = (dy_row[col] * weight[col] - xhat * mean_g_xhat) * r_t


_SERIAL_OPTIONS = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")
_rms_norm_forward_serial = serial_twin(_rms_norm_forward_kernel, **_SERIAL_OPTIONS)
_rms_norm_backward_serial = serial_twin(_rms_norm_backward_kernel, **_SERIAL_OPTIONS)


def rms_norm_forward(x, weight, eps=1e-6):
    """x · rsqrt(mean(x²) + eps) · weight over the last axis.  x (..., C), weight (C,) → y (..., C), cache."""
    check_rms_norm_inputs(x, weight, eps)
    C = x.shape[-1]
    x2d = np.ascontiguousarray(x).reshape(-1, C)                      # (N, C), a view when contiguous
    N = x2d.shape[0]
    y = np.empty((N, C), dtype=x.dtype)
    rstd = np.empty(N, dtype=np.float64)
    kernel = for_thread_count(_rms_norm_forward_kernel, _rms_norm_forward_serial, x2d.size)
    kernel(x2d, np.ascontiguousarray(weight), float(eps), y, rstd)
    return y.reshape(x.shape), FusedRMSNormCache(x2d, rstd, weight, x.shape)


def rms_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dweight (C,)."""
    check_cache("cache", cache, FusedRMSNormCache)
    x2d, rstd, weight, x_shape = cache
    N, C = x2d.shape
    dy = upstream("dy", dy, x2d.reshape(x_shape))
    dy2d = np.ascontiguousarray(dy).reshape(N, C)
    dx = np.empty((N, C), dtype=x2d.dtype)
    dweight_parts = np.zeros((max(1, min(N, _N_CHUNKS)), C), dtype=np.float64)
    kernel = for_thread_count(_rms_norm_backward_kernel, _rms_norm_backward_serial, x2d.size)
    kernel(dy2d, x2d, rstd, np.ascontiguousarray(weight), dx, dweight_parts)
    return dx.reshape(x_shape), dweight_parts.sum(axis=0).astype(x2d.dtype)
