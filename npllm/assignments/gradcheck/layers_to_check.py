"""Three forward/backward pairs to gradient-check (provided: do not edit; the grader uses its own copy).

One backward here is wrong.  Your check_layer will tell you which input's gradient disagrees.
"""
import numpy as np


def affine_forward(x, W, b):
    """x (N, D), W (D, M), b (M,) → out (N, M), cache."""
    return x @ W + b, (x, W)


def affine_backward(dout, cache):
    """dout (N, M) → dx (N, D), dW (D, M), db (M,)."""
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


def sigmoid_forward(x):
    """σ(x) = 1 / (1 + e^−x), any shape → out, cache."""
    out = 1.0 / (1.0 + np.exp(-x))
    return out, out


def sigmoid_backward(dout, cache):
    """σ'(x) = σ(x) (1 − σ(x))."""
    out = cache
    return dout * out * (1.0 - out)


def softmax_forward(x):
    """Softmax over the last axis, any shape (..., N) → out, cache."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out = e / e.sum(axis=-1, keepdims=True)
    return out, out


def softmax_backward(dout, cache):
    """dout (..., N) → dx (..., N)."""
    out = cache
    return out * dout
