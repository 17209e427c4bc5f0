"""Fused LSTM sequence forward/backward (Numba CPU); reference: ``npllm.layers.lstm``.

Same equations and gate order (PyTorch's i, f, g, o) as the reference:
    a_t = x_t Wx + h_{t−1} Wh + b,   i, f, o = σ(a_i, a_f, a_o),   g = tanh(a_g)
    c_t = f ⊙ c_{t−1} + i ⊙ g,       h_t = o ⊙ tanh(c_t)

Where the time goes, and what this version does about it:
* the input projection x_t Wx does not depend on the recurrence, so it runs for all steps as ONE
  matmul, x (B·T, D) @ Wx, before the loop (the reference does T small ones);
* the loop (compiled) does one BLAS call per step, h_{t−1} @ Wh via ``np.dot`` into a reused buffer,
  then one fused pass for bias, gate nonlinearities (``fast_sigmoid``/``fast_tanh``: vectorizable) and
  the cell update, overwriting the pre-activations with the gate values the backward needs;
* the backward loop does the per-step chain rule in one fused pass and one BLAS call per step
  (dh_{t−1} = da_t Whᵀ); it keeps every da_t, so dx = da Wxᵀ, dWx = xᵀ da, dWh = h_prevᵀ da and
  db = Σ da are four big matmuls/sums after the loop instead of 4T small ones.
tanh(c_t) is recomputed in the backward rather than stored: one vectorized pass is cheaper than a
(B, T, H) buffer.  Memory kept for the backward: the gates (B, T, 4H), hs and cs (the outputs).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from npllm.layers._recurrent import check_sequence
from npllm.layers._validate import check_cache, upstream
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_sigmoid, fast_tanh


class FusedLSTMCache(NamedTuple):
    x: np.ndarray       # (B, T, D) the input (the caller's array, never written)
    h0: np.ndarray      # (B, H)
    c0: np.ndarray      # (B, H)
    Wx: np.ndarray      # (D, 4H)
    Wh: np.ndarray      # (H, 4H)
    gates: np.ndarray   # (B, T, 4H) activated gates i, f, g, o of every step
    hs: np.ndarray      # (B, T, H) hidden states (also the forward's output)
    cs: np.ndarray      # (B, T, H) cell states (also the forward's output)


@njit(cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _lstm_forward_kernel(gates, b, h0, c0, Wh, hs, cs):
    """gates (B, T, 4H) holds x Wx on entry and i, f, g, o on exit; writes hs, cs (B, T, H)."""
    B, T, G = gates.shape
    H = G // 4
    h = h0.copy()                           # (B, H) contiguous: the left operand of the BLAS call
    c = c0.copy()
    recurrent = np.empty((B, G), dtype=gates.dtype)
    for t in range(T):
        np.dot(h, Wh, recurrent)            # (B, H) @ (H, 4H)
        for row in range(B):
            a = gates[row, t]
            r = recurrent[row]
            for j in range(H):
                i = fast_sigmoid(a[j] + r[j] + b[j])
                f = fast_sigmoid(a[H + j] + r[H + j] + b[H + j])
                g = fast_tanh(a[2 * H + j] + r[2 * H + j] + b[2 * H + j])
                o = fast_sigmoid(a[3 * H + j] + r[3 * H + j] + b[3 * H + j])
                a[j], a[H + j], a[2 * H + j], a[3 * H + j] = i, f, g, o
                c_new = f * c[row, j] + i * g
                h_new = o * fast_tanh(c_new)
                c[row, j] = c_new
                h[row, j] = h_new
                cs[row, t, j] = c_new
                hs[row, t, j] = h_new


@njit(cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _lstm_backward_kernel(dhs, dcs, gates, cs, c0, Wh_T, da):
    """BPTT loop: writes da (B, T, 4H) = ∂L/∂a_t for every step; returns dh0, dc0 (B, H)."""
    B, T, G = gates.shape
    H = G // 4
    one = gates.dtype.type(1.0)
    dh_next = np.zeros((B, H), dtype=gates.dtype)    # gradient reaching h_t from step t + 1
    dc_next = np.zeros((B, H), dtype=gates.dtype)
    da_step = np.empty((B, G), dtype=gates.dtype)    # contiguous copy of da[:, t] for the BLAS call
    for t in range(T - 1, -1, -1):
        for row in range(B):
            gate = gates[row, t]
            c_prev = cs[row, t - 1] if t > 0 else c0[row]
            out = da_step[row]
            for j in range(H):
                i, f, g, o = gate[j], gate[H + j], gate[2 * H + j], gate[3 * H + j]
                tanh_c = fast_tanh(cs[row, t, j])
                dh = dhs[row, t, j] + dh_next[row, j]
                # c_t reaches the loss directly (dcs), through c_{t+1} (dc_next) and through h_t.
                dc = dcs[row, t, j] + dc_next[row, j] + dh * o * (one - tanh_c * tanh_c)
                out[j] = dc * g * i * (one - i)
                out[H + j] = dc * c_prev[j] * f * (one - f)
                out[2 * H + j] = dc * i * (one - g * g)
                out[3 * H + j] = dh * tanh_c * o * (one - o)
                dc_next[row, j] = dc * f
            da[row, t] = out
        np.dot(da_step, Wh_T, dh_next)      # (B, 4H) @ (4H, H)
    return dh_next, dc_next


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """Run over a sequence.  x (B, T, D), h0, c0 (B, H) → hs (B, T, H), cs (B, T, H), cache."""
    check_sequence(x, h0, Wx, Wh, {"b": b}, 4, c0)
    B, T, D = x.shape
    H = h0.shape[1]
    gates = (x.reshape(B * T, D) @ Wx).reshape(B, T, 4 * H)    # input projection of every step at once
    hs = np.empty((B, T, H), dtype=x.dtype)
    cs = np.empty((B, T, H), dtype=x.dtype)
    _lstm_forward_kernel(gates, np.ascontiguousarray(b), np.ascontiguousarray(h0), np.ascontiguousarray(c0),
                         np.ascontiguousarray(Wh), hs, cs)
    return hs, cs, FusedLSTMCache(x, h0, c0, Wx, Wh, gates, hs, cs)


def lstm_backward(dhs, dcs, cache):
    """BPTT.  dhs, dcs (B, T, H) (None = zeros) → dx (B, T, D), dh0, dc0 (B, H), dWx, dWh, db."""
    check_cache("cache", cache, FusedLSTMCache)
    x, h0, c0, Wx, Wh, gates, hs, cs = cache
    dhs = np.ascontiguousarray(upstream("dhs", dhs, hs))
    dcs = np.ascontiguousarray(upstream("dcs", dcs, cs))
    B, T, D = x.shape
    H = h0.shape[1]
    da = np.empty((B, T, 4 * H), dtype=x.dtype)               # ∂L/∂a for every step
    dh0, dc0 = _lstm_backward_kernel(dhs, dcs, gates, cs, np.ascontiguousarray(c0),
                                     np.ascontiguousarray(Wh.T), da)
    da_flat = da.reshape(B * T, 4 * H)
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1)  # (B, T, H): the h each step read
    dx = (da_flat @ Wx.T).reshape(B, T, D)
    dWx = x.reshape(B * T, D).T @ da_flat
    dWh = h_prev.reshape(B * T, H).T @ da_flat
    db = da_flat.sum(axis=0)
    return dx, dh0, dc0, dWx, dWh, db
