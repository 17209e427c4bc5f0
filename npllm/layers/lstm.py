"""LSTM (Hochreiter & Schmidhuber 1997, with a forget gate) and backpropagation through time.

Gates in PyTorch's order i, f, g, o, packed along the last axis of Wx (D, 4H), Wh (H, 4H), b (4H,):
    a = x Wx + h_prev Wh + b
    i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o)
    c = f ⊙ c_prev + i ⊙ g,    h = o ⊙ tanh(c)
The cell state is updated additively, so the gradient reaching c_prev is dc · f: with f near 1 it flows
back many steps without vanishing — the reason the forget-gate bias starts at 1 (Gers et al. 2000;
Jozefowicz et al. 2015).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._recurrent import check_sequence, check_step
from npllm.layers._validate import check_cache, check_float, check_shape, upstream
from npllm.layers.activations import sigmoid


class LSTMStepCache(NamedTuple):
    x: np.ndarray        # (B, D)
    h_prev: np.ndarray   # (B, H)
    c_prev: np.ndarray   # (B, H)
    i: np.ndarray        # (B, H) input gate
    f: np.ndarray        # (B, H) forget gate
    g: np.ndarray        # (B, H) candidate cell
    o: np.ndarray        # (B, H) output gate
    tanh_c: np.ndarray   # (B, H) tanh of the new cell
    Wx: np.ndarray
    Wh: np.ndarray


class LSTMCache(NamedTuple):
    steps: list          # T LSTMStepCache
    hs: np.ndarray       # (B, T, H)


def init_lstm(D, H, rng, dtype=np.float32):
    """Parameters of an LSTM layer: Wx (D, 4H), Wh (H, 4H), b (4H,) uniform ±1/√H, forget-gate bias 1."""
    bound = 1.0 / np.sqrt(H)
    b = np.zeros(4 * H, dtype=dtype)
    b[H:2 * H] = 1.0    # remember by default: gradients flow through c from the first step
    return {"Wx": rng.uniform(-bound, bound, (D, 4 * H)).astype(dtype),
            "Wh": rng.uniform(-bound, bound, (H, 4 * H)).astype(dtype),
            "b": b}


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One step.  x (B, D), h_prev, c_prev (B, H), Wx (D, 4H), Wh (H, 4H), b (4H,) → h, c (B, H), cache."""
    check_step(x, h_prev, Wx, Wh, {"b": b}, 4, c_prev)
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b                       # (B, 4H)
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return h, c, LSTMStepCache(x, h_prev, c_prev, i, f, g, o, tanh_c, Wx, Wh)


def lstm_step_backward(dh, dc, cache):
    """dh, dc (B, H) (None = zeros) → dx (B, D), dh_prev, dc_prev (B, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    check_cache("cache", cache, LSTMStepCache)
    x, h_prev, c_prev, i, f, g, o, tanh_c, Wx, Wh = cache
    dh = upstream("dh", dh, h_prev)
    dc = upstream("dc", dc, c_prev)
    do = dh * tanh_c
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)         # h = o tanh(c) also depends on c
    di, df, dg, dc_prev = dc * g, dc * c_prev, dc * i, dc * f
    da = np.concatenate([di * i * (1.0 - i),            # through σ
                         df * f * (1.0 - f),
                         dg * (1.0 - g * g),            # through tanh
                         do * o * (1.0 - o)], axis=1)   # (B, 4H)
    return da @ Wx.T, da @ Wh.T, dc_prev, x.T @ da, h_prev.T @ da, da.sum(axis=0)


def check_lstm_inputs(x, h0, c0, Wx, Wh, b) -> None:
    """The sequence checks, naming the state that is wrong (shared with the kernels that replace this op).

    When h0 and c0 disagree, the one whose shape differs from (B, H), H from Wh (H, 4H), is named;
    the generic check would name c0 (checked against h0) whichever was wrong."""
    check_float("x", x, 3, "(B, T, D)")
    check_float("h0", h0, 2, "(B, H)")
    check_shape("h0", h0, (x.shape[0], None))
    check_float("c0", c0, 2, "(B, H)")
    if c0.shape != h0.shape:
        weights_h = isinstance(Wh, np.ndarray) and Wh.ndim == 2 and Wh.shape[1] == 4 * Wh.shape[0]
        expected = (x.shape[0], Wh.shape[0] if weights_h else h0.shape[1])
        if c0.shape == expected:
            raise ValueError(f"h0 must have shape {expected} like c0, got {h0.shape}")
        raise ValueError(f"c0 must have shape {expected}, got {c0.shape}")
    check_sequence(x, h0, Wx, Wh, {"b": b}, 4, c0)


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """Run over a sequence.  x (B, T, D), h0, c0 (B, H) → hs (B, T, H), cs (B, T, H), cache."""
    check_lstm_inputs(x, h0, c0, Wx, Wh, b)
    B, T, _ = x.shape
    H = h0.shape[1]
    hs = np.empty((B, T, H), dtype=x.dtype)
    cs = np.empty((B, T, H), dtype=x.dtype)
    h, c, steps = h0, c0, []
    for t in range(T):
        h, c, step_cache = lstm_step_forward(x[:, t], h, c, Wx, Wh, b)
        hs[:, t], cs[:, t] = h, c
        steps.append(step_cache)
    return hs, cs, LSTMCache(steps, hs)


def lstm_backward(dhs, dcs, cache):
    """BPTT.  dhs, dcs (B, T, H) (None = zeros) → dx (B, T, D), dh0, dc0 (B, H), dWx, dWh, db."""
    check_cache("cache", cache, LSTMCache)
    dhs = upstream("dhs", dhs, cache.hs)
    dcs = upstream("dcs", dcs, cache.hs)
    first = cache.steps[0]
    B, T, _ = dhs.shape
    dx = np.empty((B, T, first.x.shape[1]), dtype=dhs.dtype)
    dWx, dWh = np.zeros_like(first.Wx), np.zeros_like(first.Wh)
    db = np.zeros(first.Wh.shape[1], dtype=dhs.dtype)
    dh_next = np.zeros_like(first.h_prev)   # gradients arriving at h_t, c_t from step t+1
    dc_next = np.zeros_like(first.c_prev)
    for t in reversed(range(T)):
        dx_t, dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_step_backward(
            dhs[:, t] + dh_next, dcs[:, t] + dc_next, cache.steps[t])
        dx[:, t] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dh_next, dc_next, dWx, dWh, db
