"""Fused softmax + cross-entropy on the GPU: loss = mean over kept rows of logsumexp(x) − x[target].

Reference: ``npllm.layers.cross_entropy_forward(logits, targets, ignore_index=-100)`` → loss, cache and
``cross_entropy_backward(dloss, cache)`` → dlogits. Rows whose target equals ``ignore_index`` are
skipped and the mean is over the rest; if every row is ignored the loss is 0 with zero gradient.

The forward never writes the probabilities: it keeps one number per row, the log-sum-exp, and the
backward recomputes softmax = exp(x − lse) on the fly. For GPT-2's V = 50257 that saves writing and
re-reading an (N, V) buffer.

v1: one thread per row, three serial passes (max, sum, pick the target).
v2: one block per row, online (max, sum) per thread and a shared-memory reduction (as softmax v3).

Then one small single-block kernel averages the row losses over the kept rows, on the device, so the
backward can read the count without a round trip to the host; and the backward is elementwise —
one thread per logit — because with the log-sum-exp cached no reduction is left.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from npllm.layers.cross_entropy import check_cross_entropy_inputs
from npllm_kernels.cuda._device import as_device, ceil_div, device_float
from npllm_kernels.cuda._reduce import ROW_THREADS, block_online_softmax, block_sum, online_update

ROWS_PER_BLOCK_V1 = 64      # v1: threads per block, one row each
BACKWARD_TILE = (32, 8)     # backward: (logits, rows) per block; x runs along V so writes coalesce


@cuda.jit(device=True)
def _row_loss(logit_target, row_max, row_sum):
    """−log softmax[target] = log Σ exp(x − max) + max − x[target]; also returns the log-sum-exp."""
    lse = row_max + math.log(row_sum)
    return lse - logit_target, lse


@cuda.jit
def cross_entropy_forward_kernel_v1(logits, targets, ignore_index, row_loss, lse):
    """Thread r: row_loss[r], lse[r] from logits[r] (row_loss 0 if ignored, NaN if out of range)."""
    row = cuda.grid(1)
    if row >= logits.shape[0]:
        return
    V = logits.shape[1]
    row_max = logits.dtype.type(-math.inf)
    for j in range(V):
        row_max = max(row_max, logits[row, j])
    row_sum = logits.dtype.type(0)
    for j in range(V):
        row_sum += math.exp(logits[row, j] - row_max)
    target = targets[row]
    if target == ignore_index:
        row_loss[row], lse[row] = logits.dtype.type(0), row_max + math.log(row_sum)
    elif 0 <= target < V:
        row_loss[row], lse[row] = _row_loss(logits[row, target], row_max, row_sum)
    else:   # the host path validates targets; a device caller gets NaN rather than a wild read
        row_loss[row], lse[row] = logits.dtype.type(math.nan), logits.dtype.type(math.nan)


@cuda.jit
def cross_entropy_forward_kernel_v2(logits, targets, ignore_index, row_loss, lse):
    """Block r: row_loss[r], lse[r] from logits[r] with an online (max, sum) block reduction."""
    scratch_max = cuda.shared.array(ROW_THREADS, dtype=logits.dtype)
    scratch_sum = cuda.shared.array(ROW_THREADS, dtype=logits.dtype)
    row, tid = cuda.blockIdx.x, cuda.threadIdx.x
    V = logits.shape[1]
    one = logits.dtype.type(1)
    row_max, row_sum = logits.dtype.type(-math.inf), logits.dtype.type(0)
    for j in range(tid, V, ROW_THREADS):
        row_max, row_sum = online_update(row_max, row_sum, logits[row, j], one)
    row_max, row_sum = block_online_softmax(scratch_max, scratch_sum, row_max, row_sum)
    if tid == 0:
        target = targets[row]
        if target == ignore_index:
            row_loss[row], lse[row] = logits.dtype.type(0), row_max + math.log(row_sum)
        elif 0 <= target < V:
            row_loss[row], lse[row] = _row_loss(logits[row, target], row_max, row_sum)
        else:
            row_loss[row], lse[row] = logits.dtype.type(math.nan), logits.dtype.type(math.nan)


@cuda.jit
def mean_over_kept_kernel(row_loss, targets, ignore_index, loss, n_kept):
    """One block: loss[0] = Σ row_loss / max(n_kept, 1), n_kept[0] = number of rows not ignored."""
    scratch = cuda.shared.array(ROW_THREADS, dtype=row_loss.dtype)
    tid = cuda.threadIdx.x
    # The count is kept in the loss dtype to reuse one scratch array; float32 counts exactly to 2**24 rows.
    total, kept = row_loss.dtype.type(0), row_loss.dtype.type(0)
    for r in range(tid, row_loss.shape[0], ROW_THREADS):
        total += row_loss[r]
        if targets[r] != ignore_index:
            kept += row_loss.dtype.type(1)
    total = block_sum(scratch, total)
    kept = block_sum(scratch, kept)
    if tid == 0:
        n_kept[0] = int(kept)
        loss[0] = total / max(kept, row_loss.dtype.type(1))


@cuda.jit
def cross_entropy_backward_kernel(dloss, logits, targets, ignore_index, lse, n_kept, dlogits):
    """dlogits[r, j] = dloss · (exp(logits[r, j] − lse[r]) − [j = target]) / n_kept; 0 on ignored rows."""
    # Threads run along V (x) so a warp writes 32 neighbouring logits; *blocks* run along rows on grid
    # axis x, whose limit (2**31 − 1) rather than y's (65535) bounds the number of row blocks.
    col = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    row = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    if row >= logits.shape[0] or col >= logits.shape[1]:
        return
    target = targets[row]
    if target == ignore_index:
        dlogits[row, col] = logits.dtype.type(0)
        return
    grad = math.exp(logits[row, col] - lse[row])
    if col == target:
        grad -= logits.dtype.type(1)
    dlogits[row, col] = grad * (dloss / logits.dtype.type(max(n_kept[0], 1)))


class CrossEntropyCache(NamedTuple):
    logits: object        # (N, V) device array, rows flattened
    targets: object       # (N,) device int64
    lse: object           # (N,) device: log Σ exp(logits[r])
    n_kept: object        # (1,) device int64: rows whose target is not ignore_index
    ignore_index: int
    logits_shape: tuple   # the forward's logits shape (..., V)


def _forward(kernel, logits, targets, ignore_index):
    """Run a forward kernel: logits (N, V), targets (N,) device → (loss (1,), cache) on the device."""
    logits = device_float(logits, "logits")
    shape = tuple(logits.shape)
    if len(shape) < 1:
        raise ValueError("logits must have shape (..., V), got a 0-d array")
    V = shape[-1]
    N = logits.size // V if V else 0
    logits2 = logits.reshape(N, V)
    targets = as_device(targets, "targets")
    if tuple(targets.shape) != shape[:-1]:
        raise ValueError(f"targets must have shape {shape[:-1]} (logits' shape without V), got {tuple(targets.shape)}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must have an integer dtype, got {targets.dtype}")
    targets2 = targets.reshape(N)
    row_loss = cuda.device_array(N, dtype=logits.dtype)
    lse = cuda.device_array(N, dtype=logits.dtype)
    loss = cuda.device_array(1, dtype=logits.dtype)
    n_kept = cuda.device_array(1, dtype=np.int64)
    if N and kernel is cross_entropy_forward_kernel_v1:
        kernel[ceil_div(N, ROWS_PER_BLOCK_V1), ROWS_PER_BLOCK_V1](logits2, targets2, ignore_index, row_loss, lse)
    elif N:
        kernel[N, ROW_THREADS](logits2, targets2, ignore_index, row_loss, lse)
    mean_over_kept_kernel[1, ROW_THREADS](row_loss, targets2, ignore_index, loss, n_kept)
    return loss, CrossEntropyCache(logits2, targets2, lse, n_kept, int(ignore_index), shape)


def cross_entropy_forward_v1(logits, targets, ignore_index=-100):
    """Device forward with kernel v1: logits (..., V), targets int (...) → loss (1,) device array, cache."""
    return _forward(cross_entropy_forward_kernel_v1, logits, targets, ignore_index)


def cross_entropy_forward_v2(logits, targets, ignore_index=-100):
    """Device forward with kernel v2: logits (..., V), targets int (...) → loss (1,) device array, cache."""
    return _forward(cross_entropy_forward_kernel_v2, logits, targets, ignore_index)


VERSIONS = {"v1": cross_entropy_forward_v1, "v2": cross_entropy_forward_v2}
DEFAULT_VERSION = "v2"
cross_entropy_forward_device = VERSIONS[DEFAULT_VERSION]


def cross_entropy_backward_device(dloss, cache):
    """Device backward: dloss (a Python/NumPy scalar; None = 1.0 as in the reference) → dlogits (..., V)."""
    if not isinstance(cache, CrossEntropyCache):
        raise TypeError(f"cache must be the CrossEntropyCache returned by the forward, got {type(cache).__name__}")
    logits = cache.logits
    dloss = np.asarray(1.0 if dloss is None else dloss, dtype=logits.dtype)
    if dloss.size != 1:
        raise ValueError(f"dloss must be a scalar (the loss is a scalar), got shape {dloss.shape}")
    N, V = logits.shape[0], logits.shape[1]
    dlogits = cuda.device_array((N, V), dtype=logits.dtype)
    if N and V:
        grid = (ceil_div(N, BACKWARD_TILE[1]), ceil_div(V, BACKWARD_TILE[0]))   # (row blocks, column blocks)
        # A NumPy scalar of the logits' dtype: a Python float would make the kernel compute in float64.
        dloss = logits.dtype.type(dloss.reshape(()))
        cross_entropy_backward_kernel[grid, BACKWARD_TILE](dloss, logits, cache.targets, cache.ignore_index,
                                                           cache.lse, cache.n_kept, dlogits)
    return dlogits.reshape(*cache.logits_shape)


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean cross-entropy on the GPU.  logits (..., V), targets int (...) → scalar loss (logits' dtype), cache."""
    check_cross_entropy_inputs(logits, targets, ignore_index)
    loss, cache = cross_entropy_forward_device(logits, targets.astype(np.int64), int(ignore_index))
    return logits.dtype.type(loss.copy_to_host()[0]), cache


def cross_entropy_backward(dloss, cache):
    """dloss scalar → dlogits (..., V) = dloss · (softmax − onehot(target)) / n_kept on kept rows."""
    return cross_entropy_backward_device(dloss, cache).copy_to_host()
