"""Assignment: write a gradient checker, then use it to find the bug planted in a provided backward.

    numerical gradient   ∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h      (error O(h²))
    relative error       ‖a − b‖ / max(‖a‖ + ‖b‖, 1e-8)

``layers_to_check.py`` (provided, do not edit it) holds three forward/backward pairs: affine, sigmoid
and softmax.  One of the backwards is wrong.  Check all three with your ``check_layer``, find which
gradient disagrees with the numerical one, and write the corrected backward as
``softmax_backward_fixed``... once your checker has convinced you that softmax is the culprit.

Conventions: float64 throughout; never leave an input changed (perturb an entry, evaluate, put it back).

Check your work: open the notebook, and run ``python grade.py`` for a score per part.
"""
import numpy as np


def numerical_gradient(f, x, h=1e-5):
    """The central-difference gradient of a scalar function ``f(x)`` at ``x``.

    f: takes an array shaped like x, returns a float; x: float64 array of any shape (perturbed one
    entry at a time, then restored) → gradient, an array shaped like x.
    """
    # BEGIN SOLUTION hint: "for each index (np.ndindex(x.shape)): x[i] += h, f, x[i] -= 2h, f, restore x[i]; (f+ - f-) / 2h"
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        f_plus = float(f(x))
        x[index] = original - h
        f_minus = float(f(x))
        x[index] = original                      # restore: the next entry must see the original x
        grad[index] = (f_plus - f_minus) / (2 * h)
    # END SOLUTION
    return grad


def relative_error(a, b):
    """‖a − b‖₂ / max(‖a‖₂ + ‖b‖₂, 1e-8) of two arrays of the same shape → a float (0 when equal)."""
    # BEGIN SOLUTION hint: "np.linalg.norm of the difference over the sum of the norms; the floor keeps 0/0 away"
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-8))
    # END SOLUTION


def check_layer(forward, backward, inputs, dout, h=1e-5):
    """Gradient-check a forward/backward pair.

    forward(*inputs) → (out, cache); backward(dout, cache) → one gradient per input (a tuple, or one
    array for one input).  With the loss L = Σ out ⊙ dout, return a list: for each input, the relative
    error between backward's gradient and numerical_gradient of L with respect to that input.
    """
    # BEGIN SOLUTION hint: "grads = backward(dout, cache); for each input x: numerical_gradient(lambda _: np.sum(forward(*inputs)[0] * dout), x, h)"
    _, cache = forward(*inputs)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)

    def loss(_):
        return float(np.sum(forward(*inputs)[0] * dout))   # reads the perturbed input through `inputs`

    return [relative_error(grad, numerical_gradient(loss, x, h)) for grad, x in zip(grads, inputs)]
    # END SOLUTION


def softmax_backward_fixed(dy, cache):
    """The corrected backward of layers_to_check.softmax_forward.  dy (..., N), cache → dx (..., N)."""
    # BEGIN SOLUTION hint: "the softmax Jacobian is diag(y) - y yᵀ: dx = y * (dy - sum(dy * y) over the last axis)"
    y = cache
    dx = y * (dy - np.sum(dy * y, axis=-1, keepdims=True))
    # END SOLUTION
    return dx
