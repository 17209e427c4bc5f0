"""Token embedding: a row lookup W[ids] — the same as one_hot(ids) @ W, without building the one-hot."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_ids, upstream_shaped


class EmbeddingCache(NamedTuple):
    ids: np.ndarray        # int (...)
    weight_shape: tuple    # (V, D)
    dtype: np.dtype


def embedding_forward(ids, W):
    """y = W[ids].  ids int (...), W (V, D) → y (..., D), cache."""
    check_float("W", W, 2, "(V, D)")
    check_ids("ids", ids, W.shape[0])
    return W[ids], EmbeddingCache(ids, W.shape, W.dtype)


def embedding_backward(dy, cache):
    """dy (..., D) → dW (V, D): a scatter-add, since one row can be looked up many times."""
    check_cache("cache", cache, EmbeddingCache)
    ids, (V, D), dtype = cache
    dy = upstream_shaped("dy", dy, ids.shape + (D,), dtype)
    dW = np.zeros((V, D), dtype=dtype)
    # np.add.at accumulates repeated ids; plain dW[ids] += dy would keep only the last one.
    np.add.at(dW, ids.reshape(-1), dy.reshape(-1, D))
    return dW
