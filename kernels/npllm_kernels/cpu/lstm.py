"""Fused LSTM sequence forward/backward (Numba CPU); reference: ``npllm.layers.lstm``.

Same equations and gate order (PyTorch's i, f, g, o) as the reference:
    a_t = x_t Wx + h_{t−1} Wh + b,   i, f, o = σ(a_i, a_f, a_o),   g = tanh(a_g)
    c_t = f ⊙ c_{t−1} + i ⊙ g,       h_t = o ⊙ tanh(c_t)

Where the time goes, and what this version does about it:
* the input projection x_t Wx does not depend on the recurrence, so it runs for all steps as ONE
  matmul, x (B·T, D) @ Wx, before the loop (the reference does T small ones);
* the compiled loop does one BLAS call per step, h_{t−1} @ Wh via ``np.dot`` into a reused buffer,
  then the gate nonlinearities (``fast_sigmoid``/``fast_tanh``: vectorizable) and the cell update,
  overwriting the pre-activations with the gate values the backward needs;
* the backward loop does the per-step chain rule and one BLAS call per step (dh_{t−1} = da_t Whᵀ); it
  keeps every da_t, so dx = da Wxᵀ, dWx = xᵀ da, dWh = h_prevᵀ da and db = Σ da are big matmuls and a
  sum after the loop instead of 4T small ones.
The matmuls are most of the time (6 of them, 2·B·T·D·4H flops each at D = H); the rest is what fusion
removes: the reference's ~30 temporaries a step.

Why the elementwise work is split into several short loops over one row of one gate (1 KB at H = 256,
in L1): each loop then touches 2-4 arrays, and LLVM vectorizes a loop only if it can rule out overlap
between every written array and every other one with a few runtime checks; one fused loop over ten
arrays needs too many and stays scalar (about 5x slower here).  Slices indexed from 0 (``a_i[j]``, not
``a[H + j]``) let LLVM drop numba's negative-index check, which also blocks vectorization.

Measured at B=32, T=64, D=H=256, float32, 1 thread (AVX-512 Xeon): forward 28 ms, backward 53 ms, of
which the BLAS calls are about 66 ms (the 2 × 64 per-step (32, 256) @ (256, 1024)-sized dots alone
15 ms each way, about half the big matmuls' rate) and the gate loops about 13.  Tried without gain:
time-major (T, B, 4H) gates and tanh_c, so each step's rows are contiguous (85.6 vs 84.7 ms).
The per-step ``np.dot`` calls SciPy's OpenBLAS, which a caller's ``threadpool_limits`` misses if
SciPy was loaded later; the wrappers therefore pin it to one thread (``single_threaded_blas``):
with two threads on a busy machine a kernel call took 0.2 s in seq2seq training.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from npllm.layers._recurrent import check_sequence
from npllm.layers._validate import check_cache, upstream
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_sigmoid, fast_tanh
from npllm_kernels.cpu._threads import single_threaded_blas


class FusedLSTMCache(NamedTuple):
    x: np.ndarray        # (B, T, D) the input (the caller's array, never written)
    h0: np.ndarray       # (B, H)
    c0: np.ndarray       # (B, H)
    Wx: np.ndarray       # (D, 4H)
    Wh: np.ndarray       # (H, 4H)
    gates: np.ndarray    # (B, T, 4H) activated gates i, f, g, o of every step
    tanh_c: np.ndarray   # (B, T, H) tanh of every cell state
    hs: np.ndarray       # (B, T, H) hidden states (also the forward's output)
    cs: np.ndarray       # (B, T, H) cell states (also the forward's output)


@njit(cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _lstm_forward_kernel(gates, b, h0, c0, Wh, tanh_c, hs, cs):
    """gates (B, T, 4H) holds x Wx on entry and i, f, g, o on exit; writes tanh_c, hs, cs (B, T, H)."""
    B, T, G = gates.shape
    H = G // 4
    h = h0.copy()                           # (B, H) contiguous: the left operand of the BLAS call
    recurrent = np.empty((B, G), dtype=gates.dtype)
    b_if, b_g, b_o = b[:2 * H], b[2 * H:3 * H], b[3 * H:]
    for t in range(T):
        np.dot(h, Wh, recurrent)            # (B, H) @ (H, 4H)
        for row in range(B):
            a, r = gates[row, t], recurrent[row]
            a_if, a_g, a_o = a[:2 * H], a[2 * H:3 * H], a[3 * H:]
            r_if, r_g, r_o = r[:2 * H], r[2 * H:3 * H], r[3 * H:]
            for j in range(2 * H):          # input and forget gates, side by side
                a_if[j] = fast_sigmoid(a_if[j] + r_if[j] + b_if[j])
            for j in range(H):
                a_g[j] = fast_tanh(a_g[j] + r_g[j] + b_g[j])
            for j in range(H):
                a_o[j] = fast_sigmoid(a_o[j] + r_o[j] + b_o[j])
            a_i, a_f = a[:H], a[H:2 * H]
            c_prev = cs[row, t - 1] if t > 0 else c0[row]
            c_row, tanh_row, h_row = cs[row, t], tanh_c[row, t], hs[row, t]
            for j in range(H):
                c_row[j] = a_f[j] * c_prev[j] + a_i[j] * a_g[j]
            for j in range(H):
                tanh_row[j] = fast_tanh(c_row[j])
            for j in range(H):
                h_row[j] = a_o[j] * tanh_row[j]
            h[row, :] = h_row


@njit(cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _lstm_backward_kernel(dhs, dcs, gates, tanh_c, cs, c0, Wh_T, da):
    """BPTT loop: writes da (B, T, 4H) = ∂L/∂a_t for every step; returns dh0, dc0 (B, H)."""
    B, T, G = gates.shape
    H = G // 4
    one = gates.dtype.type(1.0)
    dh = np.zeros((B, H), dtype=gates.dtype)    # ∂L/∂h_t: from step t + 1 (BLAS), then + dhs[:, t]
    dc = np.zeros((B, H), dtype=gates.dtype)    # ∂L/∂c_t: from step t + 1, then + dcs and through h_t
    da_step = np.empty((B, G), dtype=gates.dtype)    # contiguous da[:, t], the left operand of BLAS
    for t in range(T - 1, -1, -1):
        for row in range(B):
            gate, out = gates[row, t], da_step[row]
            g_i, g_f, g_g, g_o = gate[:H], gate[H:2 * H], gate[2 * H:3 * H], gate[3 * H:]
            da_i, da_f, da_g, da_o = out[:H], out[H:2 * H], out[2 * H:3 * H], out[3 * H:]
            c_prev = cs[row, t - 1] if t > 0 else c0[row]
            tanh_row, dh_up, dc_up, dh_row, dc_row = tanh_c[row, t], dhs[row, t], dcs[row, t], dh[row], dc[row]
            for j in range(H):
                dh_row[j] += dh_up[j]
            for j in range(H):              # h = o tanh(c): through o ...
                da_o[j] = dh_row[j] * tanh_row[j] * g_o[j] * (one - g_o[j])
            for j in range(H):              # ... and through c, which also gets dcs and step t + 1's dc
                dc_row[j] += dc_up[j] + dh_row[j] * g_o[j] * (one - tanh_row[j] * tanh_row[j])
            for j in range(H):              # c = f c_prev + i g
                da_i[j] = dc_row[j] * g_g[j] * g_i[j] * (one - g_i[j])
            for j in range(H):
                da_f[j] = dc_row[j] * c_prev[j] * g_f[j] * (one - g_f[j])
            for j in range(H):
                da_g[j] = dc_row[j] * g_i[j] * (one - g_g[j] * g_g[j])
            for j in range(H):
                dc_row[j] *= g_f[j]         # now ∂L/∂c_{t-1} through c_t
            da[row, t] = out
        np.dot(da_step, Wh_T, dh)           # (B, 4H) @ (4H, H): ∂L/∂h_{t-1} through a_t
    return dh, dc


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """Run over a sequence.  x (B, T, D), h0, c0 (B, H) → hs (B, T, H), cs (B, T, H), cache."""
    check_sequence(x, h0, Wx, Wh, {"b": b}, 4, c0)
    B, T, D = x.shape
    H = h0.shape[1]
    gates = (x.reshape(B * T, D) @ Wx).reshape(B, T, 4 * H)    # input projection of every step at once
    tanh_c = np.empty((B, T, H), dtype=x.dtype)
    hs = np.empty((B, T, H), dtype=x.dtype)
    cs = np.empty((B, T, H), dtype=x.dtype)
    with single_threaded_blas():        # per-step (B, H) @ (H, 4H) calls: see _threads and the docstring
        _lstm_forward_kernel(gates, np.ascontiguousarray(b), np.ascontiguousarray(h0), np.ascontiguousarray(c0),
                             np.ascontiguousarray(Wh), tanh_c, hs, cs)
    return hs, cs, FusedLSTMCache(x, h0, c0, Wx, Wh, gates, tanh_c, hs, cs)


def lstm_backward(dhs, dcs, cache):
    """BPTT.  dhs, dcs (B, T, H) (None = zeros) → dx (B, T, D), dh0, dc0 (B, H), dWx, dWh, db."""
    check_cache("cache", cache, FusedLSTMCache)
    x, h0, c0, Wx, Wh, gates, tanh_c, hs, cs = cache
    dhs = np.ascontiguousarray(upstream("dhs", dhs, hs))
    dcs = np.ascontiguousarray(upstream("dcs", dcs, cs))
    B, T, D = x.shape
    H = h0.shape[1]
    da = np.empty((B, T, 4 * H), dtype=x.dtype)               # ∂L/∂a for every step
    with single_threaded_blas():
        dh0, dc0 = _lstm_backward_kernel(dhs, dcs, gates, tanh_c, cs, np.ascontiguousarray(c0),
                                         np.ascontiguousarray(Wh.T), da)
    da_flat = da.reshape(B * T, 4 * H)
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1)  # (B, T, H): the h each step read
    dx = (da_flat @ Wx.T).reshape(B, T, D)
    dWx = x.reshape(B * T, D).T @ da_flat
    dWh = h_prev.reshape(B * T, H).T @ da_flat
    db = da_flat.sum(axis=0)
    return dx, dh0, dc0, dWx, dWh, db
