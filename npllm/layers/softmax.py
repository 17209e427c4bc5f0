"""Softmax and log-softmax along one axis, computed stably.

Subtracting the row maximum before exp changes nothing mathematically (softmax is shift-invariant)
but keeps exp from overflowing for large logits; log-softmax = x − max − log Σ exp(x − max) never takes
the log of an underflowed zero.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, upstream


class SoftmaxCache(NamedTuple):
    y: np.ndarray
    axis: int


class LogSoftmaxCache(NamedTuple):
    y: np.ndarray   # log-probabilities
    axis: int


def _check_axis(x, axis) -> int:
    if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be an integer in [-{x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis!r}")
    return int(axis) % x.ndim


def softmax(x, axis=-1):
    """Stable softmax values only (no cache), for sampling and attention maps."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """Stable log-softmax values only (no cache)."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax_forward(x, axis=-1):
    """y = exp(x) / Σ exp(x) along ``axis``; any shape → y, cache."""
    check_float("x", x)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension, got a 0-d array")
    axis = _check_axis(x, axis)
    y = softmax(x, axis)
    return y, SoftmaxCache(y, axis)


def softmax_backward(dy, cache):
    """dx = y ⊙ (dy − Σ dy ⊙ y): the Jacobian diag(y) − y yᵀ applied without forming it."""
    check_cache("cache", cache, SoftmaxCache)
    y, axis = cache
    dy = upstream("dy", dy, y)
    return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))


def log_softmax_forward(x, axis=-1):
    """y = x − log Σ exp(x) along ``axis``; any shape → y, cache."""
    check_float("x", x)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension, got a 0-d array")
    axis = _check_axis(x, axis)
    y = log_softmax(x, axis)
    return y, LogSoftmaxCache(y, axis)


def log_softmax_backward(dy, cache):
    """dx = dy − softmax(x) Σ dy (softmax recovered as exp(y))."""
    check_cache("cache", cache, LogSoftmaxCache)
    y, axis = cache
    dy = upstream("dy", dy, y)
    return dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)
