"""Inverted dropout (Srivastava et al. 2014): zero each entry with probability p during training and
scale the survivors by 1/(1 − p), so the expected activation is unchanged and evaluation needs no
rescaling."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, upstream_shaped


class DropoutCache(NamedTuple):
    mask: np.ndarray | None   # kept / (1 − p), or None when dropout was the identity
    shape: tuple
    dtype: np.dtype


def dropout_forward(x, p, rng, training=True):
    """y = x ⊙ mask / (1 − p); identity when p == 0 or not training.  x any shape → y, cache."""
    check_float("x", x)
    if not isinstance(p, (int, float, np.floating, np.integer)) or not 0.0 <= p < 1.0:
        raise ValueError(f"p must be a dropout probability in [0, 1), got {p!r}")
    if not training or p == 0:
        return x, DropoutCache(None, x.shape, x.dtype)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator when training with p > 0, got {type(rng).__name__}")
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return x * mask, DropoutCache(mask, x.shape, x.dtype)


def dropout_backward(dy, cache):
    """dx = dy ⊙ mask (the same entries that were dropped get no gradient)."""
    check_cache("cache", cache, DropoutCache)
    dy = upstream_shaped("dy", dy, cache.shape, cache.dtype)
    return dy if cache.mask is None else dy * cache.mask
