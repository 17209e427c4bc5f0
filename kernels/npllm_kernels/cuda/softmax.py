"""Row softmax y = exp(x − max) / Σ exp(x − max) on the GPU (after llm.c's dev/cuda/softmax_forward.cu).

Reference: ``npllm.layers.softmax_forward(x, axis=-1)`` / ``softmax_backward(dy, cache)``. The kernels
work on rows of a C-contiguous (N, V) array; the host functions move ``axis`` to the end first.

v1: one thread per row, three passes over global memory (max, sum, write). Simple, but a row is
    serial work and neighbouring threads read addresses V apart, so memory accesses do not coalesce.
v2: one block of ROW_THREADS threads per row. Threads stride through the row (thread t reads t,
    t + 128, ...: neighbouring threads touch neighbouring addresses, which coalesces) and combine their
    partial max and sum with shared-memory tree reductions.
v3: v2 with the online softmax (Milakov & Gimelshein 2018): each thread keeps a running (max, sum)
    pair, rescaling its sum when the max grows, so the row is read twice (stats, write) instead of three
    times.

The backward dx = y ⊙ (dy − Σ dy ⊙ y) needs one reduction per row: one block per row as in v2.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from npllm.layers._validate import check_float
from npllm_kernels.cuda._device import ceil_div, device_float
from npllm_kernels.cuda._reduce import ROW_THREADS, block_max, block_online_softmax, block_sum, online_update

ROWS_PER_BLOCK_V1 = 64   # v1: threads per block, one row each


@cuda.jit
def softmax_kernel_v1(x, y):
    """y[r] = softmax(x[r]) with thread r doing the whole row.  x, y (N, V)."""
    row = cuda.grid(1)
    if row >= x.shape[0]:
        return
    V = x.shape[1]
    row_max = x.dtype.type(-math.inf)
    for j in range(V):
        row_max = max(row_max, x[row, j])
    total = x.dtype.type(0)
    for j in range(V):
        total += math.exp(x[row, j] - row_max)
    for j in range(V):
        y[row, j] = math.exp(x[row, j] - row_max) / total


@cuda.jit
def softmax_kernel_v2(x, y):
    """y[r] = softmax(x[r]) with block r: shared-memory reductions for the max and the sum.  x, y (N, V)."""
    scratch = cuda.shared.array(ROW_THREADS, dtype=x.dtype)
    row, tid = cuda.blockIdx.x, cuda.threadIdx.x
    V = x.shape[1]
    partial = x.dtype.type(-math.inf)
    for j in range(tid, V, ROW_THREADS):
        partial = max(partial, x[row, j])
    row_max = block_max(scratch, partial)
    partial = x.dtype.type(0)
    for j in range(tid, V, ROW_THREADS):
        partial += math.exp(x[row, j] - row_max)
    total = block_sum(scratch, partial)
    for j in range(tid, V, ROW_THREADS):
        y[row, j] = math.exp(x[row, j] - row_max) / total


@cuda.jit
def softmax_kernel_v3(x, y):
    """y[r] = softmax(x[r]) with block r and an online (max, sum) pass.  x, y (N, V)."""
    scratch_max = cuda.shared.array(ROW_THREADS, dtype=x.dtype)
    scratch_sum = cuda.shared.array(ROW_THREADS, dtype=x.dtype)
    row, tid = cuda.blockIdx.x, cuda.threadIdx.x
    V = x.shape[1]
    one = x.dtype.type(1)
    row_max, row_sum = x.dtype.type(-math.inf), x.dtype.type(0)
    for j in range(tid, V, ROW_THREADS):
        row_max, row_sum = online_update(row_max, row_sum, x[row, j], one)
    row_max, row_sum = block_online_softmax(scratch_max, scratch_sum, row_max, row_sum)
    for j in range(tid, V, ROW_THREADS):
        y[row, j] = math.exp(x[row, j] - row_max) / row_sum


@cuda.jit
def softmax_backward_kernel(dy, y, dx):
    """dx[r] = y[r] ⊙ (dy[r] − Σ dy[r] ⊙ y[r]) with block r.  dy, y, dx (N, V)."""
    scratch = cuda.shared.array(ROW_THREADS, dtype=y.dtype)
    row, tid = cuda.blockIdx.x, cuda.threadIdx.x
    V = y.shape[1]
    partial = y.dtype.type(0)
    for j in range(tid, V, ROW_THREADS):
        partial += dy[row, j] * y[row, j]
    dot = block_sum(scratch, partial)
    for j in range(tid, V, ROW_THREADS):
        dx[row, j] = y[row, j] * (dy[row, j] - dot)


def _rows(x, name):
    """A C-contiguous device array viewed as (N, V) rows of its last axis."""
    x = device_float(x, name)
    shape = tuple(x.shape)   # a plain tuple: the simulator's shape objects reject negative indices
    if len(shape) == 0:
        raise ValueError(f"{name} must have at least 1 dimension, got a 0-d array")
    V = shape[-1]
    return x.reshape(x.size // V if V else 0, V)


def _launch_rows(kernel, n_rows, *args):
    if n_rows and args[0].shape[1]:
        kernel[n_rows, ROW_THREADS](*args)


def softmax_v1(x):
    """Device softmax over the last axis with kernel v1: x (..., V) → y (..., V) device array."""
    x2 = _rows(x, "x")
    y = cuda.device_array(x2.shape, dtype=x2.dtype)
    if x2.shape[0] and x2.shape[1]:
        softmax_kernel_v1[ceil_div(x2.shape[0], ROWS_PER_BLOCK_V1), ROWS_PER_BLOCK_V1](x2, y)
    return y.reshape(*x.shape)


def softmax_v2(x):
    """Device softmax over the last axis with kernel v2: x (..., V) → y (..., V) device array."""
    x2 = _rows(x, "x")
    y = cuda.device_array(x2.shape, dtype=x2.dtype)
    _launch_rows(softmax_kernel_v2, x2.shape[0], x2, y)
    return y.reshape(*x.shape)


def softmax_v3(x):
    """Device softmax over the last axis with kernel v3: x (..., V) → y (..., V) device array."""
    x2 = _rows(x, "x")
    y = cuda.device_array(x2.shape, dtype=x2.dtype)
    _launch_rows(softmax_kernel_v3, x2.shape[0], x2, y)
    return y.reshape(*x.shape)


VERSIONS = {"v1": softmax_v1, "v2": softmax_v2, "v3": softmax_v3}
DEFAULT_VERSION = "v3"
softmax_device = VERSIONS[DEFAULT_VERSION]


def softmax_backward_device(dy, y):
    """Device softmax backward over the last axis: dy, y (..., V) → dx (..., V) device array."""
    dy2, y2 = _rows(dy, "dy"), _rows(y, "y")
    if dy2.shape != y2.shape or dy2.dtype != y2.dtype:
        raise ValueError(f"dy must match y's shape {tuple(y.shape)} and dtype {y.dtype}, "
                         f"got {tuple(dy.shape)} {dy.dtype}")
    dx = cuda.device_array(y2.shape, dtype=y2.dtype)
    _launch_rows(softmax_backward_kernel, y2.shape[0], dy2, y2, dx)
    return dx.reshape(*y.shape)


class SoftmaxCache(NamedTuple):
    y: object          # device array (..., V): the softmax with ``axis`` moved last
    axis: int


def _check_input(x, axis):
    check_float("x", x)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension, got a 0-d array")
    if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be an integer in [-{x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis!r}")
    return int(axis) % x.ndim


def softmax_forward(x, axis=-1):
    """y = exp(x) / Σ exp(x) along ``axis`` on the GPU; any shape → y, cache (NumPy in and out)."""
    axis = _check_input(x, axis)
    x_last = np.ascontiguousarray(np.moveaxis(x, axis, -1))      # (..., V)
    y_device = softmax_device(x_last)
    y = np.moveaxis(y_device.copy_to_host(), -1, axis)
    return y, SoftmaxCache(y_device, axis)


def softmax_backward(dy, cache):
    """dx = y ⊙ (dy − Σ dy ⊙ y) along the forward's axis; dy like y (None = zeros) → dx."""
    if not isinstance(cache, SoftmaxCache):
        raise TypeError(f"cache must be the SoftmaxCache returned by the forward, got {type(cache).__name__}")
    y_device, axis = cache
    *rest, V = tuple(y_device.shape)
    shape = tuple(rest[:axis]) + (V,) + tuple(rest[axis:])        # the forward's shape
    if dy is None:
        return np.zeros(shape, dtype=y_device.dtype)
    dy = np.asarray(dy, dtype=y_device.dtype)
    if dy.shape != shape:
        raise ValueError(f"dy must have the forward output's shape {shape}, got {dy.shape}")
    dy_last = np.ascontiguousarray(np.moveaxis(dy, axis, -1))
    dx = softmax_backward_device(dy_last, y_device).copy_to_host()
    return np.moveaxis(dx, -1, axis)
