"""Affine layer y = x W + b, the workhorse of every model (weights laid out (D_in, D_out), as x @ W)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream_shaped


class LinearCache(NamedTuple):
    x: np.ndarray   # (..., D) the input
    W: np.ndarray   # (D, M)
    has_bias: bool


def check_linear_inputs(x, W, b) -> None:
    """The forward's argument checks (shared with the ops built on it)."""
    check_float("x", x)
    check_float("W", W, 2, "(D, M)")
    if x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise ValueError(f"x's last dimension must equal W's first (D = {W.shape[0]}), got x {x.shape} and W {W.shape}")
    if b is not None:
        check_float("b", b)
        check_shape("b", b, (W.shape[1],))
    check_same_dtype(x=x, W=W, b=b)


def linear_forward(x, W, b):
    """y = x @ W + b.  x (..., D), W (D, M), b (M,) or None → y (..., M), cache."""
    check_linear_inputs(x, W, b)
    # One 2-D product over all leading positions: NumPy's matmul on a 3-D x makes one BLAS call per
    # batch row, which is ~25% slower on GPT-sized inputs.
    y = x.reshape(-1, W.shape[0]) @ W                                  # (N, M)
    if b is not None:
        y += b
    return y.reshape(x.shape[:-1] + (W.shape[1],)), LinearCache(x, W, b is not None)


def linear_backward(dy, cache):
    """dy (..., M) → dx (..., D), dW (D, M), db (M,) (db is None when forward had no bias)."""
    check_cache("cache", cache, LinearCache)
    x, W, has_bias = cache
    dy = upstream_shaped("dy", dy, x.shape[:-1] + (W.shape[1],), x.dtype)
    # Every leading position used the same W: its gradient sums over all of them.
    x2 = x.reshape(-1, W.shape[0])     # (N, D)
    dy2 = dy.reshape(-1, W.shape[1])   # (N, M)
    dx = (dy2 @ W.T).reshape(x.shape)
    dW = x2.T @ dy2
    db = dy2.sum(axis=0) if has_bias else None
    return dx, dW, db
