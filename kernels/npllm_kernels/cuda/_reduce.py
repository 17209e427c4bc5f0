"""Block-wide reductions through shared memory, shared by the row kernels (softmax, cross-entropy).

A tree reduction: each of the block's ROW_THREADS threads writes its partial value to shared memory, then
half the threads combine pairs, then a quarter, ... log2(ROW_THREADS) steps with a barrier after each.
On a real GPU the last five steps could use warp shuffles (``cuda.shfl_down_sync``) instead of shared
memory and barriers; Numba's CUDA simulator, which the tests run on, has no shuffles, so these kernels
stay with shared memory: one code path, tested everywhere.

Every thread of the block must call these functions (they contain barriers), and every thread gets
the result.
"""
from __future__ import annotations

import math

from numba import cuda

from npllm_kernels.cuda._device import SIMULATOR

# Threads per block for the one-block-per-row kernels; a power of two for the tree reduction. The
# simulator runs every thread as a Python thread and every barrier as a lock, so there a block of 32
# (the same code, with fewer, longer strides per thread) keeps the tests to seconds instead of minutes.
ROW_THREADS = 32 if SIMULATOR else 256


@cuda.jit(device=True)
def block_sum(scratch, value):
    """Sum of ``value`` over the block's ROW_THREADS threads; ``scratch`` is a shared (ROW_THREADS,) array."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    stride = ROW_THREADS // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] += scratch[tid + stride]
        cuda.syncthreads()
        stride //= 2
    total = scratch[0]
    cuda.syncthreads()   # scratch may be reused right after: everyone must have read the result first
    return total


@cuda.jit(device=True)
def block_max(scratch, value):
    """Maximum of ``value`` over the block's threads; ``scratch`` is a shared (ROW_THREADS,) array."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    stride = ROW_THREADS // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] = max(scratch[tid], scratch[tid + stride])
        cuda.syncthreads()
        stride //= 2
    result = scratch[0]
    cuda.syncthreads()
    return result


@cuda.jit(device=True)
def online_combine(max_a, sum_a, max_b, sum_b):
    """Merge two partial softmax normalisers (max m, Σ exp(x − m)) into one: Milakov & Gimelshein (2018).

    Σ over both parts of exp(x − m) with m = max(m_a, m_b) is sum_a·exp(m_a − m) + sum_b·exp(m_b − m).
    """
    if sum_b == 0:   # a part that has seen only −inf (or nothing) has sum 0 and contributes nothing,
        return max_a, sum_a   # without evaluating exp(−inf − −inf) = NaN
    if sum_a == 0:
        return max_b, sum_b
    new_max = max(max_a, max_b)
    return new_max, sum_a * math.exp(max_a - new_max) + sum_b * math.exp(max_b - new_max)


@cuda.jit(device=True)
def block_online_softmax(scratch_max, scratch_sum, row_max, row_sum):
    """Combine every thread's (max, Σ exp(x − max)) pair into the row's; all threads get the pair."""
    tid = cuda.threadIdx.x
    scratch_max[tid] = row_max
    scratch_sum[tid] = row_sum
    cuda.syncthreads()
    stride = ROW_THREADS // 2
    while stride > 0:
        if tid < stride:
            m, s = online_combine(scratch_max[tid], scratch_sum[tid],
                                  scratch_max[tid + stride], scratch_sum[tid + stride])
            scratch_max[tid] = m
            scratch_sum[tid] = s
        cuda.syncthreads()
        stride //= 2
    row_max, row_sum = scratch_max[0], scratch_sum[0]
    cuda.syncthreads()
    return row_max, row_sum


@cuda.jit(device=True)
def online_update(row_max, row_sum, x, one):
    """Fold one value ``x`` into a running (max, Σ exp(· − max)) pair; ``one`` is 1 in the data's dtype.

    When a new maximum arrives the sum so far is rescaled by exp(old max − new max), so a single pass
    over the row gives both numbers: the log-sum-exp without a separate pass for the max.
    """
    if x > row_max:
        return x, row_sum * math.exp(row_max - x) + one   # exp(−inf − x) = 0 on the first value
    if row_sum > 0:                                        # skip exp(−inf − −inf) on a −inf prefix
        return row_max, row_sum + math.exp(x - row_max)
    return row_max, row_sum
