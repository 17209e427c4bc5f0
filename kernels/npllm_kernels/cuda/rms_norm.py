"""RMSNorm over the last axis on the GPU; reference: ``npllm.layers.rms_norm``.

    y = x̂ · w,   x̂ = x · r,   r = 1 / √(mean(x²) + ε)
    dx = r (g − x̂ · mean(g · x̂)),   g = dy · w,   dw = Σ_rows dy · x̂

v1 (one version): the rows of a C-contiguous (N, C) array, as softmax v2 does them:
* forward: one block of ROW_THREADS threads per row; threads stride through the row (coalesced reads),
  a shared-memory tree reduction (``_reduce.block_sum``) gives Σ x², then each thread writes its
  strided entries of y; thread 0 stores r for the backward (the cache keeps x and r, not x̂);
* backward: one block per row for Σ g x̂ and dx, and a second kernel with one thread per column that
  sums dw over the rows in order, so no two threads add into one entry (no atomics, deterministic).
Everything is computed in the input's dtype, in the reference's order of operations, so a NaN or inf
lands where the reference puts it (its row, and dw's columns) without a separate path.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from npllm.layers._validate import check_cache, upstream_shaped
from npllm.layers.rms_norm import check_rms_norm_inputs
from npllm_kernels.cuda._device import ceil_div, device_float
from npllm_kernels.cuda._reduce import ROW_THREADS, block_sum

COLUMN_THREADS = 128   # dw kernel: threads per block, one column each


class RMSNormCache(NamedTuple):
    x: object          # (N, C) device array, the input's rows
    rstd: object       # (N,) device array, 1 / √(mean(x²) + ε)
    weight: object     # (C,) device array
    x_shape: tuple     # the input's shape (..., C)


@cuda.jit
def rms_norm_forward_kernel(x, weight, eps, y, rstd):
    """Block ``row``: rstd[row] = 1/√(mean(x[row]²) + eps), y[row] = x[row] · rstd[row] · weight.  x, y (N, C)."""
    scratch = cuda.shared.array(ROW_THREADS, dtype=x.dtype)
    row, tid = cuda.blockIdx.x, cuda.threadIdx.x
    if row >= x.shape[0]:
        return
    C = x.shape[1]
    partial = x.dtype.type(0)
    for j in range(tid, C, ROW_THREADS):
        partial += x[row, j] * x[row, j]
    total = block_sum(scratch, partial)
    r = x.dtype.type(1) / math.sqrt(total / x.dtype.type(C) + eps)
    if tid == 0:
        rstd[row] = r
    for j in range(tid, C, ROW_THREADS):
        y[row, j] = (x[row, j] * r) * weight[j]


@cuda.jit
def rms_norm_backward_kernel(dy, x, rstd, weight, dx):
    """Block ``row``: dx[row] = r (g − x̂ mean(g x̂)), g = dy · weight, x̂ = x · r.  dy, x, dx (N, C)."""
    scratch = cuda.shared.array(ROW_THREADS, dtype=x.dtype)
    row, tid = cuda.blockIdx.x, cuda.threadIdx.x
    if row >= x.shape[0]:
        return
    C = x.shape[1]
    r = rstd[row]
    partial = x.dtype.type(0)
    for j in range(tid, C, ROW_THREADS):
        partial += (dy[row, j] * weight[j]) * (x[row, j] * r)
    mean_g_xhat = block_sum(scratch, partial) / x.dtype.type(C)
    for j in range(tid, C, ROW_THREADS):
        dx[row, j] = (dy[row, j] * weight[j] - (x[row, j] * r) * mean_g_xhat) * r


@cuda.jit
def rms_norm_dweight_kernel(dy, x, rstd, dweight):
    """Thread ``col``: dweight[col] = Σ_rows dy[row, col] · x[row, col] · rstd[row].  dy, x (N, C)."""
    col = cuda.grid(1)
    if col >= x.shape[1]:
        return
    total = x.dtype.type(0)
    for row in range(x.shape[0]):
        total += dy[row, col] * (x[row, col] * rstd[row])
    dweight[col] = total


def rms_norm_forward_device(x, weight, eps=1e-6):
    """Device RMSNorm: x (N, C), weight (C,) device arrays → y (N, C) device array, RMSNormCache."""
    x, weight = device_float(x, "x"), device_float(weight, "weight")
    N, C = x.shape
    y = cuda.device_array((N, C), dtype=x.dtype)
    rstd = cuda.device_array(N, dtype=x.dtype)
    if N and C:
        rms_norm_forward_kernel[N, ROW_THREADS](x, weight, x.dtype.type(eps), y, rstd)
    return y, RMSNormCache(x, rstd, weight, (N, C))


def rms_norm_backward_device(dy, cache):
    """Device RMSNorm backward: dy (N, C) device array → dx (N, C), dweight (C,) device arrays."""
    dy = device_float(dy, "dy")
    N, C = cache.x.shape
    dx = cuda.device_array((N, C), dtype=cache.x.dtype)
    dweight = cuda.device_array(C, dtype=cache.x.dtype)
    if N and C:
        rms_norm_backward_kernel[N, ROW_THREADS](dy, cache.x, cache.rstd, cache.weight, dx)
    if C:
        rms_norm_dweight_kernel[ceil_div(C, COLUMN_THREADS), COLUMN_THREADS](dy, cache.x, cache.rstd, dweight)
    return dx, dweight


def rms_norm_forward(x, weight, eps=1e-6):
    """x · rsqrt(mean(x²) + eps) · weight over the last axis.  x (..., C), weight (C,) → y (..., C), cache."""
    check_rms_norm_inputs(x, weight, eps)
    C = x.shape[-1]
    y, cache = rms_norm_forward_device(np.ascontiguousarray(x).reshape(-1, C), weight, eps)
    return y.copy_to_host().reshape(x.shape), cache._replace(x_shape=x.shape)


def rms_norm_backward(dy, cache):
    """dy (..., C) → dx (..., C), dweight (C,)."""
    check_cache("cache", cache, RMSNormCache)
    dy = upstream_shaped("dy", dy, cache.x_shape, np.dtype(cache.x.dtype))
    dx, dweight = rms_norm_backward_device(np.ascontiguousarray(dy).reshape(cache.x.shape), cache)
    return dx.copy_to_host().reshape(cache.x_shape), dweight.copy_to_host()


VERSIONS = {"v1": rms_norm_forward_device}   # forward; the backward has one version too
DEFAULT_VERSION = "v1"
