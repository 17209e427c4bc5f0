"""GRU (Cho et al. 2014) in PyTorch's formulation, with separate input and hidden biases:
    r = σ(x Wx_r + bx_r + h Wh_r + bh_r)
    z = σ(x Wx_z + bx_z + h Wh_z + bh_z)
    n = tanh(x Wx_n + bx_n + r ⊙ (h Wh_n + bh_n))
    h' = (1 − z) ⊙ n + z ⊙ h
Gates packed r | z | n along the last axis of Wx (D, 3H), Wh (H, 3H), bx, bh (3H,).  The reset gate
multiplies the *whole* hidden contribution (h Wh_n + bh_n), which is why bh is kept apart from bx.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._recurrent import check_sequence, check_step
from npllm.layers._validate import check_cache, upstream
from npllm.layers.activations import sigmoid


class GRUStepCache(NamedTuple):
    x: np.ndarray        # (B, D)
    h_prev: np.ndarray   # (B, H)
    r: np.ndarray        # (B, H) reset gate
    z: np.ndarray        # (B, H) update gate
    n: np.ndarray        # (B, H) candidate state
    hn: np.ndarray       # (B, H) h_prev Wh_n + bh_n, before the reset gate scales it
    Wx: np.ndarray
    Wh: np.ndarray


class GRUCache(NamedTuple):
    steps: list          # T GRUStepCache
    hs: np.ndarray       # (B, T, H)


def init_gru(D, H, rng, dtype=np.float32):
    """Parameters of a GRU layer: Wx (D, 3H), Wh (H, 3H), bx, bh (3H,), uniform ±1/√H like PyTorch."""
    bound = 1.0 / np.sqrt(H)
    return {"Wx": rng.uniform(-bound, bound, (D, 3 * H)).astype(dtype),
            "Wh": rng.uniform(-bound, bound, (H, 3 * H)).astype(dtype),
            "bx": np.zeros(3 * H, dtype=dtype), "bh": np.zeros(3 * H, dtype=dtype)}


def gru_step_forward(x, h_prev, Wx, Wh, bx, bh):
    """One step.  x (B, D), h_prev (B, H), Wx (D, 3H), Wh (H, 3H), bx, bh (3H,) → h (B, H), cache."""
    check_step(x, h_prev, Wx, Wh, {"bx": bx, "bh": bh}, 3)
    H = h_prev.shape[1]
    gx = x @ Wx + bx          # (B, 3H)
    gh = h_prev @ Wh + bh     # (B, 3H)
    r = sigmoid(gx[:, :H] + gh[:, :H])
    z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
    hn = gh[:, 2 * H:]
    n = np.tanh(gx[:, 2 * H:] + r * hn)
    h = (1.0 - z) * n + z * h_prev
    return h, GRUStepCache(x, h_prev, r, z, n, hn, Wx, Wh)


def gru_step_backward(dh, cache):
    """dh (B, H) → dx (B, D), dh_prev (B, H), dWx (D, 3H), dWh (H, 3H), dbx (3H,), dbh (3H,)."""
    check_cache("cache", cache, GRUStepCache)
    x, h_prev, r, z, n, hn, Wx, Wh = cache
    dh = upstream("dh", dh, h_prev)
    dn_pre = dh * (1.0 - z) * (1.0 - n * n)           # into n's tanh argument
    dz_pre = dh * (h_prev - n) * z * (1.0 - z)
    dr_pre = dn_pre * hn * r * (1.0 - r)
    dgx = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)        # (B, 3H)
    dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)    # reset gate scales the n part
    dh_prev = dh * z + dgh @ Wh.T
    return dgx @ Wx.T, dh_prev, x.T @ dgx, h_prev.T @ dgh, dgx.sum(axis=0), dgh.sum(axis=0)


def gru_forward(x, h0, Wx, Wh, bx, bh):
    """Run over a sequence.  x (B, T, D), h0 (B, H) → hs (B, T, H), cache."""
    check_sequence(x, h0, Wx, Wh, {"bx": bx, "bh": bh}, 3)
    B, T, _ = x.shape
    hs = np.empty((B, T, h0.shape[1]), dtype=x.dtype)
    h, steps = h0, []
    for t in range(T):
        h, step_cache = gru_step_forward(x[:, t], h, Wx, Wh, bx, bh)
        hs[:, t] = h
        steps.append(step_cache)
    return hs, GRUCache(steps, hs)


def gru_backward(dhs, cache):
    """BPTT.  dhs (B, T, H) → dx (B, T, D), dh0 (B, H), dWx, dWh, dbx, dbh (summed over time)."""
    check_cache("cache", cache, GRUCache)
    dhs = upstream("dhs", dhs, cache.hs)
    first = cache.steps[0]
    B, T, _ = dhs.shape
    dx = np.empty((B, T, first.x.shape[1]), dtype=dhs.dtype)
    dWx, dWh = np.zeros_like(first.Wx), np.zeros_like(first.Wh)
    dbx = np.zeros(first.Wh.shape[1], dtype=dhs.dtype)
    dbh = np.zeros_like(dbx)
    dh_next = np.zeros_like(first.h_prev)
    for t in reversed(range(T)):
        dx_t, dh_next, dWx_t, dWh_t, dbx_t, dbh_t = gru_step_backward(dhs[:, t] + dh_next, cache.steps[t])
        dx[:, t] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        dbx += dbx_t
        dbh += dbh_t
    return dx, dh_next, dWx, dWh, dbx, dbh
