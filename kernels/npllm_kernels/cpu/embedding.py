"""Token embedding with a Numba scatter-add backward; reference: ``npllm.layers.embedding``.

The forward is the reference's row lookup ``W[ids]`` (NumPy's fancy indexing is already a tight copy
loop).  The backward is where the time goes: the reference's ``np.add.at`` handles repeated ids with a
generic per-element ufunc loop, while a plain loop that adds each row of dy into its row of dW is an
order of magnitude faster (docs/performance.md, "Small kernels").  It runs serially: repeated ids
would make a parallel scatter race, and the loop is memory-bound and short.

Compile-time budget: the wrapper hands the kernel int64 ids and C-contiguous 2-D arrays, so there are
only two specialisations (float32, float64), both cached.  The numba backend provides the forward too,
because a backward is dispatched on its cache's class (``npllm.backend``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from npllm.layers._validate import check_cache, check_float, check_ids, upstream_shaped


class ScatterEmbeddingCache(NamedTuple):
    ids: np.ndarray        # int (...), the caller's ids (never written)
    weight_shape: tuple    # (V, D)
    dtype: np.dtype


@njit(cache=True, error_model="numpy")
def _scatter_add_rows(ids, dy, dW):
    """dW[ids[n]] += dy[n] for every n; ids (N,) int64, dy (N, D), dW (V, D) zeroed by the caller."""
    for n in range(ids.shape[0]):
        row = dW[ids[n]]
        src = dy[n]
        for d in range(src.shape[0]):
            row[d] += src[d]


def embedding_forward(ids, W):
    """y = W[ids].  ids int (...), W (V, D) → y (..., D), cache."""
    check_float("W", W, 2, "(V, D)")
    check_ids("ids", ids, W.shape[0])
    return W[ids], ScatterEmbeddingCache(ids, W.shape, W.dtype)


def embedding_backward(dy, cache):
    """dy (..., D) → dW (V, D): a scatter-add, since one row can be looked up many times."""
    check_cache("cache", cache, ScatterEmbeddingCache)
    ids, (V, D), dtype = cache
    dW = np.zeros((V, D), dtype=dtype)
    if dy is None:                      # the reference's contract: no upstream gradient means zeros
        return dW
    dy = upstream_shaped("dy", dy, ids.shape + (D,), dtype)
    flat_ids = ids.reshape(-1).astype(np.int64, copy=False)
    _scatter_add_rows(flat_ids, np.ascontiguousarray(dy).reshape(-1, D), dW)
    return dW
