"""Fused softmax + cross-entropy (Numba CPU); reference: ``npllm.layers.cross_entropy``.

    loss = mean over kept rows n of  lse_n − logits[n, t_n],   lse_n = m_n + log s_n,
    m_n = max_v logits[n, v],   s_n = Σ_v exp(logits[n, v] − m_n)
    dlogits[n, v] = dloss / n_kept · (exp(logits[n, v] − m_n) / s_n − [v = t_n])   (0 on ignored rows)

Conventions are the reference's: targets equal to ``ignore_index`` are skipped, the mean is over the
rest, and if every target is ignored the loss is 0 with zero gradient.

What the fusion buys (V = 50257 makes a GPT-2 logits row 200 KB in float32):
* forward reads each row once and writes nothing of size V: the log-sum-exp is computed online, one
  chunk of ``_CHUNK`` logits at a time (chunk max, then Σ exp(x − running max) over the chunk while it
  is in L1; when a chunk raises the max, the running sum is rescaled by exp(old − new)).  Subtracting
  the running max keeps every exp ≤ 1, so logits of ±1e4 are fine.  Only m and s (two numbers a row,
  float64) are kept;
* backward recomputes exp(x − m) / s in the same pass that writes the gradient, so no probability
  matrix is ever stored (the reference stores one and copies it).  It uses m and s rather than
  exp(x − lse): lse rounded to float32 is off by up to ulp(lse)/2 — 5e-4 at logits of 1e4 — and every
  probability of the row would inherit that relative error, while x − m is exact in float32 (m is one
  of the row's own values) and 1/s is applied as a float64-rounded factor;
* ``fast_exp`` (``_math.py``) instead of libm's exp lets both loops vectorize; rows run in ``prange``.

Buffer ownership: the forward allocates the (N, V) gradient buffer (``np.empty``, so no page is touched
until the backward writes it) and the cache owns it.  The backward writes dlogits into that buffer and
returns it (reshaped, no copy): **the returned dlogits aliases the cache**, so one cache serves one
backward.  A second backward on the same cache raises ``RuntimeError`` instead of silently overwriting
the array it returned the first time; run the forward again.  The caller's logits are never written.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache
from npllm.layers.cross_entropy import check_cross_entropy_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_exp
from npllm_kernels.cpu._threads import for_thread_count, serial_twin

_CHUNK = 1024  # logits per online-softmax step: 4-8 KB, stays in L1 between its max and its sum
# Running maxima kept side by side: a max reduction written as one variable does not vectorize without
# fast-math's nnan (which we leave out), 16 independent ones do (one 512-bit or two 256-bit registers).
_LANES = 16
_ROWS_PER_TASK = 8   # rows per prange task: amortises the task's scratch allocation over short rows


class FusedCrossEntropyCache(NamedTuple):
    logits: np.ndarray      # (N, V) the caller's logits, rows flattened (never written)
    targets: np.ndarray     # (N,) int64
    row_max: np.ndarray     # (N,) float64 max of each row (one of its logits)
    row_sum: np.ndarray     # (N,) float64 Σ exp(logits − row_max); log-sum-exp = row_max + log(row_sum)
    n_kept: int             # number of targets != ignore_index
    ignore_index: int
    logits_shape: tuple     # (..., V)
    dlogits: np.ndarray     # (N, V) buffer the backward writes (and returns)
    consumed: np.ndarray    # (1,) bool, set by the backward: the buffer now holds a returned gradient


@njit(cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _chunk_max(chunk, lanes):
    """max(chunk) (non-empty, 1-D) with _LANES running maxima, so that the loop vectorizes."""
    lanes[:] = chunk[0]
    n_full = chunk.size // _LANES
    for block in range(n_full):
        values = chunk[block * _LANES:(block + 1) * _LANES]
        for lane in range(_LANES):
            lanes[lane] = values[lane] if values[lane] > lanes[lane] else lanes[lane]
    result = lanes[0]
    for lane in range(1, _LANES):
        result = max(result, lanes[lane])
    for v in range(n_full * _LANES, chunk.size):
        result = max(result, chunk[v])
    return result


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _cross_entropy_forward_kernel(logits, targets, ignore_index, row_max, row_sum, row_loss):
    """Row max m, Σ exp(logits − m) and row_loss = m + log Σ − logits[n, t] (0 on ignored rows)."""
    N, V = logits.shape
    for task in prange((N + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        lanes = np.empty(_LANES, dtype=logits.dtype)      # scratch, allocated once per task
        for row in range(task * _ROWS_PER_TASK, min(N, (task + 1) * _ROWS_PER_TASK)):
            x = logits[row]
            running_max = -np.inf
            running_sum = 0.0
            for start in range(0, V, _CHUNK):
                # A slice, indexed from 0: with x[start + k], numba's negative-index check would stay
                # in the loop (LLVM cannot prove start + k >= 0) and stop it from vectorizing.
                chunk = x[start:start + _CHUNK]
                chunk_max = _chunk_max(chunk, lanes)
                if chunk_max > running_max:
                    if running_sum > 0:     # rescale what was summed against the old max
                        running_sum *= fast_exp(running_max - chunk_max)
                    running_max = chunk_max
                if running_max == -np.inf:
                    continue        # every logit so far is -inf: nothing to add (and -inf - -inf = nan)
                m = x.dtype.type(running_max)
                chunk_sum = x.dtype.type(0.0)
                for v in range(chunk.size):
                    chunk_sum += fast_exp(chunk[v] - m)
                running_sum += chunk_sum
            row_max[row] = running_max
            row_sum[row] = running_sum
            target = targets[row]
            row_loss[row] = 0.0 if target == ignore_index else running_max + np.log(running_sum) - x[target]


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _cross_entropy_backward_kernel(logits, targets, ignore_index, row_max, row_sum, scale, dlogits):
    """dlogits[n] = scale · (exp(logits[n] − m_n) / s_n − onehot(t_n)), 0 on ignored rows."""
    N, V = logits.shape
    zero = logits.dtype.type(0.0)
    scale_t = logits.dtype.type(scale)
    for row in prange(N):
        target = targets[row]
        out = dlogits[row]
        if target == ignore_index:
            for v in range(V):
                out[v] = zero
            continue
        x = logits[row]
        m = x.dtype.type(row_max[row])              # exact: the max is one of the row's logits
        factor = x.dtype.type(scale / row_sum[row])
        for v in range(V):
            out[v] = fast_exp(x[v] - m) * factor
        out[target] -= scale_t


_SERIAL_OPTIONS = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")
_cross_entropy_forward_serial = serial_twin(_cross_entropy_forward_kernel, **_SERIAL_OPTIONS)
_cross_entropy_backward_serial = serial_twin(_cross_entropy_backward_kernel, **_SERIAL_OPTIONS)


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean cross-entropy.  logits (..., V), targets int (...) → scalar loss (logits' dtype), cache."""
    check_cross_entropy_inputs(logits, targets, ignore_index)
    V = logits.shape[-1]
    flat_logits = np.ascontiguousarray(logits).reshape(-1, V)          # (N, V), a view when contiguous
    flat_targets = np.ascontiguousarray(targets, dtype=np.int64).reshape(-1)   # (N,)
    N = flat_targets.size
    ignore_index = int(ignore_index)
    n_kept = int(np.count_nonzero(flat_targets != ignore_index))
    row_max = np.full(N, -np.inf)
    row_sum = np.zeros(N)
    row_loss = np.zeros(N)
    if V > 0:              # with no classes, only all-ignored targets pass validation
        kernel = for_thread_count(_cross_entropy_forward_kernel, _cross_entropy_forward_serial, flat_logits.size)
        kernel(flat_logits, flat_targets, ignore_index, row_max, row_sum, row_loss)
    loss = row_loss.sum() / max(n_kept, 1)
    dlogits_buffer = np.empty((N, V), dtype=logits.dtype)   # written by the backward
    cache = FusedCrossEntropyCache(flat_logits, flat_targets, row_max, row_sum, n_kept, ignore_index,
                                   logits.shape, dlogits_buffer, np.zeros(1, dtype=np.bool_))
    return logits.dtype.type(loss), cache


def cross_entropy_backward(dloss, cache):
    """dloss scalar → dlogits (..., V) = dloss · (softmax − onehot(target)) / n_kept on kept rows.

    The result is the cache's own buffer (see the module docstring): call once per forward.
    """
    check_cache("cache", cache, FusedCrossEntropyCache)
    if cache.consumed[0]:
        raise RuntimeError("cache was already used by a cross_entropy_backward: the fused kernel writes "
                           "dlogits into the cache's buffer and returns it, so each forward allows one "
                           "backward; run cross_entropy_forward again")
    dtype = cache.dlogits.dtype
    dloss = 1.0 if dloss is None else dloss
    dloss = np.asarray(dloss, dtype=dtype)
    if dloss.size != 1:
        raise ValueError(f"dloss must be a scalar (the loss is a scalar), got shape {dloss.shape}")
    scale = float(dloss.reshape(())) / max(cache.n_kept, 1)
    if cache.dlogits.size:
        kernel = for_thread_count(_cross_entropy_backward_kernel, _cross_entropy_backward_serial, cache.dlogits.size)
        kernel(cache.logits, cache.targets, cache.ignore_index, cache.row_max, cache.row_sum, scale, cache.dlogits)
    cache.consumed[0] = True
    return cache.dlogits.reshape(cache.logits_shape)
