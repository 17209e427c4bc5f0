"""Assignment: an LSTM, forward and backward through time, in NumPy.

Write the four functions below, in order; each later one uses the earlier ones.  One step, with the
four gates packed along the last axis in PyTorch's order i, f, g, o:

    a = x Wx + h_prev Wh + b                       (B, 4H): a[:, :H] is a_i, a[:, H:2H] is a_f, ...
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c = f * c_prev + i * g
    h = o * tanh(c)

Shapes: B batch, T time steps, D input size, H hidden size; Wx (D, 4H), Wh (H, 4H), b (4H,).
Conventions (the same as npllm.layers):
* a forward function returns its output(s) and then a ``cache`` (a tuple is fine); no globals.
* a backward function takes one upstream gradient per output, then the cache, and returns one
  gradient per float input of the forward, in the same order and with the same shapes.
* never modify an input in place.

Check your work: open the notebook for the expected output on a sample input, and run
``python grade.py`` for a score per part.
"""
import numpy as np


def sigmoid(x):
    """σ(x) = 1 / (1 + e^−x), computed without overflow for large |x| (given, not graded)."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One time step.  x (B, D), h_prev (B, H), c_prev (B, H), Wx (D, 4H), Wh (H, 4H), b (4H,) →
    h (B, H), c (B, H), cache."""
    # BEGIN SOLUTION hint: "a = x @ Wx + h_prev @ Wh + b; split it into 4 blocks of H columns (i, f, g, o)"
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    cache = (x, h_prev, c_prev, Wx, Wh, i, f, g, o, tanh_c)
    # END SOLUTION
    return h, c, cache


def lstm_step_backward(dh, dc, cache):
    """Backward of one step.  dh (B, H), dc (B, H) →
    dx (B, D), dh_prev (B, H), dc_prev (B, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    # BEGIN SOLUTION hint: "c reaches the loss through dc and through h = o * tanh(c): add both first"
    x, h_prev, c_prev, Wx, Wh, i, f, g, o, tanh_c = cache
    do = dh * tanh_c
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    di, df, dg, dc_prev = dc * g, dc * c_prev, dc * i, dc * f
    da = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), do * o * (1.0 - o)],
                        axis=1)
    dx = da @ Wx.T
    dh_prev = da @ Wh.T
    dWx = x.T @ da
    dWh = h_prev.T @ da
    db = da.sum(axis=0)
    # END SOLUTION
    return dx, dh_prev, dc_prev, dWx, dWh, db


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """The whole sequence.  x (B, T, D), h0 (B, H), c0 (B, H) →
    hs (B, T, H) (every hidden state), cs (B, T, H) (every cell state), cache."""
    # BEGIN SOLUTION hint: "loop over t with lstm_step_forward, carrying (h, c); store them in hs[:, t], cs[:, t]"
    B, T, D = x.shape
    H = h0.shape[1]
    hs = np.empty((B, T, H), dtype=x.dtype)
    cs = np.empty((B, T, H), dtype=x.dtype)
    step_caches = []
    h, c = h0, c0
    for t in range(T):
        h, c, step_cache = lstm_step_forward(x[:, t], h, c, Wx, Wh, b)
        hs[:, t], cs[:, t] = h, c
        step_caches.append(step_cache)
    cache = (step_caches, D)
    # END SOLUTION
    return hs, cs, cache


def lstm_backward(dhs, dcs, cache):
    """BPTT.  dhs (B, T, H), dcs (B, T, H): gradients on every hidden and cell state from above →
    dx (B, T, D), dh0 (B, H), dc0 (B, H), dWx (D, 4H), dWh (H, 4H), db (4H,) (summed over time)."""
    # BEGIN SOLUTION hint: "walk t = T-1 ... 0 carrying dh and dc from step t+1; add dhs[:, t], dcs[:, t]"
    step_caches, D = cache
    B, T, H = dhs.shape
    dx = np.empty((B, T, D), dtype=dhs.dtype)
    dWx, dWh, db = np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), np.zeros(4 * H)
    dh_next, dc_next = np.zeros((B, H)), np.zeros((B, H))
    for t in reversed(range(T)):
        dx[:, t], dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_step_backward(
            dhs[:, t] + dh_next, dcs[:, t] + dc_next, step_caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    dh0, dc0 = dh_next, dc_next
    # END SOLUTION
    return dx, dh0, dc0, dWx, dWh, db
