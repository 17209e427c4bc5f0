"""Assignment: a vanilla RNN and backpropagation through time (BPTT), in NumPy.

Write the four functions below, in order; each later one uses the earlier ones.

    h_t = tanh(x_t Wx + h_{t-1} Wh + b)

Shapes: B batch, T time steps, D input size, H hidden size.  Conventions (the same as npllm.layers):
* a forward function returns its output(s) and then a ``cache`` — anything the matching backward
  needs (a tuple is fine).  Do not store anything on globals.
* a backward function takes the upstream gradient(s) and the cache, and returns one gradient per
  float input of the forward, in the same order and with the same shapes.
* never modify an input in place.

Check your work: open the notebook for the expected output on a sample input, and run
``python grade.py`` for a score per part.
"""
import numpy as np


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    """One time step: h = tanh(x Wx + h_prev Wh + b).

    x (B, D), h_prev (B, H), Wx (D, H), Wh (H, H), b (H,) → h (B, H), cache.
    """
    # BEGIN SOLUTION hint: "h = tanh(x @ Wx + h_prev @ Wh + b); cache what the backward needs (tanh' = 1 - h**2)"
    h = np.tanh(x @ Wx + h_prev @ Wh + b)
    cache = (x, h_prev, Wx, Wh, h)
    # END SOLUTION
    return h, cache


def rnn_step_backward(dh, cache):
    """Backward of one step.  dh (B, H) → dx (B, D), dh_prev (B, H), dWx (D, H), dWh (H, H), db (H,)."""
    # BEGIN SOLUTION hint: "da = dh * (1 - h**2) through tanh; each gradient is then a product with da"
    x, h_prev, Wx, Wh, h = cache
    da = dh * (1.0 - h * h)
    dx = da @ Wx.T
    dh_prev = da @ Wh.T
    dWx = x.T @ da
    dWh = h_prev.T @ da
    db = da.sum(axis=0)
    # END SOLUTION
    return dx, dh_prev, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """The whole sequence.  x (B, T, D), h0 (B, H) → hs (B, T, H) (every hidden state), cache."""
    # BEGIN SOLUTION hint: "loop over t: rnn_step_forward(x[:, t], h, ...); store h in hs[:, t], keep each cache"
    B, T, _ = x.shape
    hs = np.empty((B, T, h0.shape[1]), dtype=x.dtype)
    step_caches = []
    h = h0
    for t in range(T):
        h, step_cache = rnn_step_forward(x[:, t], h, Wx, Wh, b)
        hs[:, t] = h
        step_caches.append(step_cache)
    cache = (step_caches, x.shape[2])
    # END SOLUTION
    return hs, cache


def rnn_backward(dhs, cache):
    """BPTT.  dhs (B, T, H): the gradient on every hidden state from above →
    dx (B, T, D), dh0 (B, H), dWx (D, H), dWh (H, H), db (H,) (weight gradients summed over time)."""
    # BEGIN SOLUTION hint: "walk t = T-1 ... 0; h_t gets dhs[:, t] plus dh_prev from step t+1; sum dW over t"
    step_caches, D = cache
    B, T, H = dhs.shape
    dx = np.empty((B, T, D), dtype=dhs.dtype)
    dWx, dWh, db = np.zeros((D, H)), np.zeros((H, H)), np.zeros(H)
    dh_next = np.zeros((B, H))
    for t in reversed(range(T)):
        dx[:, t], dh_next, dWx_t, dWh_t, db_t = rnn_step_backward(dhs[:, t] + dh_next, step_caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    dh0 = dh_next
    # END SOLUTION
    return dx, dh0, dWx, dWh, db
