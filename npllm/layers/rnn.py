"""Vanilla (Elman) RNN: h_t = tanh(x_t Wx + h_{t−1} Wh + b), and backpropagation through time.

The sequence functions are a loop over the step functions (as in CS231n's rnn_layers.py), so each line
can be checked against the equation; the backward walks time in reverse, adding the gradient that
flows back from step t+1 into h_t before differentiating step t.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._recurrent import check_sequence, check_step
from npllm.layers._validate import check_cache, upstream


class RNNStepCache(NamedTuple):
    x: np.ndarray        # (B, D)
    h_prev: np.ndarray   # (B, H)
    h: np.ndarray        # (B, H) the new state (tanh' = 1 − h²)
    Wx: np.ndarray
    Wh: np.ndarray


class RNNCache(NamedTuple):
    steps: list          # T RNNStepCache
    hs: np.ndarray       # (B, T, H)


def init_rnn(D, H, rng, dtype=np.float32):
    """Parameters of an RNN layer: Wx (D, H), Wh (H, H), b (H,), uniform ±1/√H like PyTorch."""
    bound = 1.0 / np.sqrt(H)
    return {"Wx": rng.uniform(-bound, bound, (D, H)).astype(dtype),
            "Wh": rng.uniform(-bound, bound, (H, H)).astype(dtype),
            "b": np.zeros(H, dtype=dtype)}


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    """h = tanh(x Wx + h_prev Wh + b).  x (B, D), h_prev (B, H), Wx (D, H), Wh (H, H), b (H,) → h (B, H), cache."""
    check_step(x, h_prev, Wx, Wh, {"b": b}, 1)
    h = np.tanh(x @ Wx + h_prev @ Wh + b)
    return h, RNNStepCache(x, h_prev, h, Wx, Wh)


def rnn_step_backward(dh, cache):
    """dh (B, H) → dx (B, D), dh_prev (B, H), dWx (D, H), dWh (H, H), db (H,)."""
    check_cache("cache", cache, RNNStepCache)
    x, h_prev, h, Wx, Wh = cache
    dh = upstream("dh", dh, h)
    da = dh * (1.0 - h * h)                # through tanh
    return da @ Wx.T, da @ Wh.T, x.T @ da, h_prev.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    """Run the RNN over a sequence.  x (B, T, D), h0 (B, H) → hs (B, T, H) (every hidden state), cache."""
    check_sequence(x, h0, Wx, Wh, {"b": b}, 1)
    B, T, _ = x.shape
    hs = np.empty((B, T, h0.shape[1]), dtype=x.dtype)
    steps = []
    h = h0
    for t in range(T):
        h, step_cache = rnn_step_forward(x[:, t], h, Wx, Wh, b)
        hs[:, t] = h
        steps.append(step_cache)
    return hs, RNNCache(steps, hs)


def rnn_backward(dhs, cache):
    """BPTT.  dhs (B, T, H) → dx (B, T, D), dh0 (B, H), dWx, dWh, db (summed over time)."""
    check_cache("cache", cache, RNNCache)
    dhs = upstream("dhs", dhs, cache.hs)
    first = cache.steps[0]
    B, T, _ = dhs.shape
    dx = np.empty((B, T, first.x.shape[1]), dtype=dhs.dtype)
    dWx, dWh = np.zeros_like(first.Wx), np.zeros_like(first.Wh)
    db = np.zeros(first.Wh.shape[1], dtype=dhs.dtype)
    dh_next = np.zeros_like(first.h_prev)   # gradient arriving at h_t from step t+1
    for t in reversed(range(T)):
        dx_t, dh_next, dWx_t, dWh_t, db_t = rnn_step_backward(dhs[:, t] + dh_next, cache.steps[t])
        dx[:, t] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dh_next, dWx, dWh, db
