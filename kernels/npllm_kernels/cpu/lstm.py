"""Fused LSTM sequence forward/backward (Numba CPU); reference: ``npllm.layers.lstm``.

Same equations and gate order (PyTorch's i, f, g, o) as the reference:
    a_t = x_t Wx + h_{t−1} Wh + b,   i, f, o = σ(a_i, a_f, a_o),   g = tanh(a_g)
    c_t = f ⊙ c_{t−1} + i ⊙ g,       h_t = o ⊙ tanh(c_t)

Parallel over the batch: rows of the batch never interact, so each Numba thread takes a chunk of
rows and runs *everything* for them in one parallel region (one per direction), calling
single-threaded BLAS on its own rows (``_threads``: the cores then belong to Numba's pool alone).
Per chunk, the forward:
* computes the input projection of all its steps at once, x (rows·T, D) @ Wx + b (the reference does
  T small products), since it does not depend on the recurrence;
* then, per step, one BLAS call for the recurrent product, the gate nonlinearities
  (``fast_sigmoid``/``fast_tanh``: vectorizable) and the cell update, overwriting the pre-activations
  with the gate values the backward needs.
The recurrent product is computed transposed, (h_{t−1} Wh)ᵀ = Whᵀ h_{t−1}ᵀ, (4H, H) @ (H, rows), and
transposed back: OpenBLAS packs its operands on every call, and with only 16-32 rows against the
1 MiB Wh the packing costs as much as the arithmetic when Wh is the right operand; as the left one it
runs faster.
The backward, per chunk:
* runs the per-step chain rule with one BLAS call per step (dh_{t−1}ᵀ = Wh da_tᵀ, transposed for the
  same reason), keeping every da_t;
* then, while its da rows are still warm in cache, dx = da Wxᵀ for its rows and its shares of
  dWx = xᵀ da, dWh = h_prevᵀ da and db = Σ da, each into the chunk's own partial (added in chunk order
  at the end): big matmuls instead of 4T small ones.
The matmuls are most of the time (6 of them, 2·B·T·D·4H flops each at D = H); the rest is what fusion
removes: the reference's ~30 temporaries a step.

Why the elementwise work is split into several short loops over one row of one gate (1 KB at H = 256,
in L1): each loop then touches 2-4 arrays, and LLVM vectorizes a loop only if it can rule out overlap
between every written array and every other one with a few runtime checks; one fused loop over ten
arrays needs too many and stays scalar.  Slices indexed from 0 (``a_i[j]``, not
``a[H + j]``) let LLVM drop numba's negative-index check, which also blocks vectorization.

What each of these choices gained, and what was tried without gain (time-major gates):
docs/performance.md, "LSTM" (``npllm bench --only lstm`` measures yours).
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, upstream
from npllm.layers.lstm import check_lstm_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_sigmoid, fast_tanh
from npllm_kernels.cpu._threads import for_thread_count, serial_twin, single_threaded_blas


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


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _lstm_forward_kernel(x, Wx, b, h0, c0, Wh_T, gates, tanh_c, hs, cs, scratch):
    """x (B, T, D) → writes gates (B, T, 4H) (activated i, f, g, o), tanh_c, hs, cs (B, T, H).

    scratch (n_chunks, 9·H·rows) is each chunk's: h_{t−1}ᵀ, (h_{t−1} Wh)ᵀ and its transpose."""
    B, T, G = gates.shape
    H = G // 4
    n_chunks = scratch.shape[0]
    for chunk in prange(n_chunks):          # batch rows never interact: each chunk runs all T steps
        lo, hi = _chunk_rows(chunk, n_chunks, B)
        pre = gates[lo:hi].reshape(((hi - lo) * T, G))
        np.dot(x[lo:hi].reshape(((hi - lo) * T, x.shape[2])), Wx, pre)   # x Wx for every step at once
        for r in range(pre.shape[0]):
            row = pre[r]
            for j in range(G):
                row[j] += b[j]
        rows = hi - lo
        buf = scratch[chunk]
        h_T = buf[:H * rows].reshape((H, rows))                     # h_{t−1}ᵀ, BLAS's right operand
        recurrent_T = buf[H * rows:5 * H * rows].reshape((G, rows))
        recurrent = buf[5 * H * rows:9 * H * rows].reshape((rows, G))
        for r in range(rows):
            h_T[:, r] = h0[lo + r]
        for t in range(T):
            np.dot(Wh_T, h_T, recurrent_T)  # (4H, H) @ (H, rows) = (h_{t−1} Wh)ᵀ: see the docstring
            _transpose(recurrent_T, recurrent)
            for row in range(lo, hi):
                a, r = gates[row, t], recurrent[row - lo]
                a_if, a_g, a_o = a[:2 * H], a[2 * H:3 * H], a[3 * H:]
                r_if, r_g, r_o = r[:2 * H], r[2 * H:3 * H], r[3 * H:]
                for j in range(2 * H):      # input and forget gates, side by side
                    a_if[j] = fast_sigmoid(a_if[j] + r_if[j])
                for j in range(H):
                    a_g[j] = fast_tanh(a_g[j] + r_g[j])
                for j in range(H):
                    a_o[j] = fast_sigmoid(a_o[j] + r_o[j])
                a_i, a_f = a[:H], a[H:2 * H]
                c_prev = cs[row, t - 1] if t > 0 else c0[row]
                c_row, tanh_row, h_row = cs[row, t], tanh_c[row, t], hs[row, t]
                for j in range(H):
                    c_row[j] = a_f[j] * c_prev[j] + a_i[j] * a_g[j]
                for j in range(H):
                    tanh_row[j] = fast_tanh(c_row[j])
                for j in range(H):
                    h_row[j] = a_o[j] * tanh_row[j]
                h_T[:, row - lo] = h_row


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _lstm_backward_kernel(dhs, dcs, x, h0, c0, Wx_T, Wh, gates, tanh_c, hs, cs,
                          da, dx, dh0, dc0, dWx_parts, dWh_parts, db_parts, scratch, h_prev_buf):
    """BPTT, then the weight products, per chunk of batch rows.

    Writes da (B, T, 4H) = ∂L/∂a_t, dx (B, T, D), dh0, dc0 (B, H) and each chunk's partial dWx, dWh,
    db; scratch (n_chunks, 9·H·rows) (da_t, its transpose, dh_{t−1}ᵀ) and h_prev_buf (n_chunks, rows·T,
    H) are each chunk's."""
    B, T, G = gates.shape
    H = G // 4
    n_chunks = scratch.shape[0]
    one = gates.dtype.type(1.0)
    for chunk in prange(n_chunks):          # batch rows never interact: each chunk runs all T steps
        lo, hi = _chunk_rows(chunk, n_chunks, B)
        dh = dh0[lo:hi]                     # ∂L/∂h_t: from step t + 1 (BLAS), then + dhs[:, t]
        dc = dc0[lo:hi]                     # ∂L/∂c_t: from step t + 1, then + dcs and through h_t
        dh[:] = 0
        dc[:] = 0
        rows = hi - lo
        buf = scratch[chunk]
        da_step = buf[:G * rows].reshape((rows, G))                 # da[lo:hi, t], contiguous
        da_step_T = buf[G * rows:2 * G * rows].reshape((G, rows))  # its transpose: BLAS's right operand
        dh_T = buf[2 * G * rows:2 * G * rows + H * rows].reshape((H, rows))
        for t in range(T - 1, -1, -1):
            for row in range(lo, hi):
                gate, out = gates[row, t], da_step[row - lo]
                g_i, g_f, g_g, g_o = gate[:H], gate[H:2 * H], gate[2 * H:3 * H], gate[3 * H:]
                da_i, da_f, da_g, da_o = out[:H], out[H:2 * H], out[2 * H:3 * H], out[3 * H:]
                c_prev = cs[row, t - 1] if t > 0 else c0[row]
                tanh_row, dh_up, dc_up = tanh_c[row, t], dhs[row, t], dcs[row, t]
                dh_row, dc_row = dh[row - lo], dc[row - lo]
                for j in range(H):
                    dh_row[j] += dh_up[j]
                for j in range(H):          # h = o tanh(c): through o ...
                    da_o[j] = dh_row[j] * tanh_row[j] * g_o[j] * (one - g_o[j])
                for j in range(H):          # ... and through c, which also gets dcs and step t + 1's dc
                    dc_row[j] += dc_up[j] + dh_row[j] * g_o[j] * (one - tanh_row[j] * tanh_row[j])
                for j in range(H):          # c = f c_prev + i g
                    da_i[j] = dc_row[j] * g_g[j] * g_i[j] * (one - g_i[j])
                for j in range(H):
                    da_f[j] = dc_row[j] * c_prev[j] * g_f[j] * (one - g_f[j])
                for j in range(H):
                    da_g[j] = dc_row[j] * g_i[j] * (one - g_g[j] * g_g[j])
                for j in range(H):
                    dc_row[j] *= g_f[j]     # now ∂L/∂c_{t-1} through c_t
                da[row, t] = out
            _transpose(da_step, da_step_T)
            np.dot(Wh, da_step_T, dh_T)     # (H, 4H) @ (4H, rows) = (∂L/∂h_{t-1} through a_t)ᵀ
            _transpose(dh_T, dh)
        # The weight products for this chunk's rows: (rows·T, ·) matrices, one BLAS call each.
        n = (hi - lo) * T
        da_rows = da[lo:hi].reshape((n, G))
        x_rows = x[lo:hi].reshape((n, x.shape[2]))
        np.dot(da_rows, Wx_T, dx[lo:hi].reshape((n, x.shape[2])))
        np.dot(x_rows.T, da_rows, dWx_parts[chunk])
        h_prev = h_prev_buf[chunk, :n]      # the h each step read: h0, then h_1 … h_{T-1}
        for row in range(lo, hi):
            base = (row - lo) * T
            h_prev[base] = h0[row]
            h_prev[base + 1:base + T] = hs[row, :T - 1]
        np.dot(h_prev.T, da_rows, dWh_parts[chunk])
        db = db_parts[chunk]
        db[:] = 0
        for r in range(n):
            row_da = da_rows[r]
            for j in range(G):
                db[j] += row_da[j]


@njit(cache=True)
def _transpose(src, dst):
    """dst (n, m) = srcᵀ, src (m, n); both contiguous.  In blocks of 16 rows of src, so that writes go
    along dst's rows: writing down a column of dst steps by its row length, at H = 256 a multiple of
    4 KiB, and every such write lands in the same L1 cache set (docs/performance.md, "LSTM")."""
    m, n = src.shape
    for j0 in range(0, m, 16):
        j1 = min(m, j0 + 16)
        for i in range(n):
            out = dst[i]
            for j in range(j0, j1):
                out[j] = src[j, i]


@njit(cache=True)
def _chunk_rows(chunk, n_chunks, B):
    """Rows [lo, hi) of batch chunk ``chunk`` of ``n_chunks`` (sizes differ by at most one)."""
    return chunk * B // n_chunks, (chunk + 1) * B // n_chunks


_lstm_forward_serial = serial_twin(_lstm_forward_kernel, fastmath=KERNEL_FASTMATH, error_model="numpy")
_lstm_backward_serial = serial_twin(_lstm_backward_kernel, fastmath=KERNEL_FASTMATH, error_model="numpy")


def _n_chunks(B):
    """One batch chunk per Numba thread (never more chunks than rows)."""
    return max(1, min(B, numba.get_num_threads()))


def _sum_parts(parts):
    """Σ over the leading (chunk) axis, in chunk order."""
    return parts[0] if parts.shape[0] == 1 else parts.sum(axis=0)


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """Run over a sequence.  x (B, T, D), h0, c0 (B, H) → hs (B, T, H), cs (B, T, H), cache."""
    check_lstm_inputs(x, h0, c0, Wx, Wh, b)
    B, T, D = x.shape
    H = h0.shape[1]
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    gates = np.empty((B, T, 4 * H), dtype=dtype)
    tanh_c = np.empty((B, T, H), dtype=dtype)
    hs = np.empty((B, T, H), dtype=dtype)
    cs = np.empty((B, T, H), dtype=dtype)
    n_chunks = _n_chunks(B)
    rows = (B + n_chunks - 1) // n_chunks
    scratch = np.empty((n_chunks, 9 * H * rows), dtype=dtype)
    kernel = for_thread_count(_lstm_forward_kernel, _lstm_forward_serial)
    with single_threaded_blas():        # BLAS calls inside the prange: see _threads and the docstring
        kernel(x, np.ascontiguousarray(Wx), np.ascontiguousarray(b), np.ascontiguousarray(h0),
               np.ascontiguousarray(c0), np.ascontiguousarray(Wh.T), gates, tanh_c, hs, cs, scratch)
    return hs, cs, FusedLSTMCache(x, h0, c0, Wx, Wh, gates, tanh_c, hs, cs)


def lstm_backward(dhs, dcs, cache):
    """BPTT.  dhs, dcs (B, T, H) (None = zeros) → dx (B, T, D), dh0, dc0 (B, H), dWx, dWh, db."""
    check_cache("cache", cache, FusedLSTMCache)
    x, h0, c0, Wx, Wh, gates, tanh_c, hs, cs = cache
    dhs = np.ascontiguousarray(upstream("dhs", dhs, hs))
    dcs = np.ascontiguousarray(upstream("dcs", dcs, cs))
    B, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    n_chunks = _n_chunks(B)
    rows = (B + n_chunks - 1) // n_chunks
    da = np.empty((B, T, 4 * H), dtype=dtype)                  # ∂L/∂a for every step
    dx = np.empty((B, T, D), dtype=dtype)
    dh0 = np.empty((B, H), dtype=dtype)
    dc0 = np.empty((B, H), dtype=dtype)
    dWx_parts = np.empty((n_chunks, D, 4 * H), dtype=dtype)
    dWh_parts = np.empty((n_chunks, H, 4 * H), dtype=dtype)
    db_parts = np.empty((n_chunks, 4 * H), dtype=dtype)
    scratch = np.empty((n_chunks, 9 * H * rows), dtype=dtype)
    h_prev_buf = np.empty((n_chunks, rows * T, H), dtype=dtype)
    kernel = for_thread_count(_lstm_backward_kernel, _lstm_backward_serial)
    with single_threaded_blas():
        kernel(dhs, dcs, x, np.ascontiguousarray(h0), np.ascontiguousarray(c0), np.ascontiguousarray(Wx.T),
               np.ascontiguousarray(Wh), gates, tanh_c, hs, cs, da, dx, dh0, dc0, dWx_parts, dWh_parts,
               db_parts, scratch, h_prev_buf)
    return dx, dh0, dc0, _sum_parts(dWx_parts), _sum_parts(dWh_parts), _sum_parts(db_parts)
