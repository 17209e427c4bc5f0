"""Grader-side calls into a student's gradient checker (copied into the grading process's scratch
directory; not shipped to students).  Each function takes the student's module first and returns
plain arrays; the grader judges them."""
import numpy as np


def test_function(z, w):
    """A scalar function with a known gradient: Σ w ⊙ tanh(z) + ½ Σ w ⊙ z²."""
    return float(np.sum(w * np.tanh(z)) + 0.5 * np.sum(w * z * z))


def numerical_gradient_of_test_function(student, x, w):
    """(the student's gradient of test_function at x, x after the call)."""
    grad = student.numerical_gradient(lambda z: test_function(z, w), x)
    return grad, x


def affine_backward_wrong_dW(dout, cache):
    """A planted bug: dW computed the wrong way round (then reshaped to fit)."""
    x, W = cache
    return dout @ W.T, (dout.T @ x).reshape(W.shape), dout.sum(axis=0)


def affine_backward_wrong_db(dout, cache):
    """A planted bug: db averaged over the batch instead of summed."""
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.mean(axis=0)


def sigmoid_backward_wrong(dout, cache):
    """A planted bug: σ'(x) taken as σ(x)."""
    return dout * cache


def check_a_layer(student, layers, which, inputs, dout):
    """The student's relative errors for one layer: ``which`` is affine or sigmoid (layers_to_check's,
    correct) or one of the buggy backwards above, by name."""
    forward = layers.sigmoid_forward if which.startswith("sigmoid") else layers.affine_forward
    backward = getattr(layers, f"{which}_backward", None) or globals()[which]
    errors = student.check_layer(forward, backward, list(inputs), dout)
    return np.asarray(errors, dtype=np.float64)
