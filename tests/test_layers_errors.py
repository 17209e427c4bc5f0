"""Bad input raises a clear error naming the argument, with the expected and the actual value."""
import numpy as np
import pytest

from npllm import layers as L

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)


@pytest.mark.parametrize("call,error,message", [
    (lambda: L.linear_forward(f64(2, 3), f64(4, 5), f64(5)), ValueError, r"x's last dimension must equal W's first \(D = 4\).*\(2, 3\)"),
    (lambda: L.linear_forward(f64(2, 3), f64(3, 5), f64(4)), ValueError, r"b must have shape \(5,\), got \(4,\)"),
    (lambda: L.linear_forward(f64(2, 3), f64(3, 5).astype(np.float32), f64(5)), TypeError, "must share one dtype"),
    (lambda: L.linear_forward([[1.0, 2.0]], f64(2, 2), f64(2)), TypeError, "x must be a numpy.ndarray"),
    (lambda: L.embedding_forward(np.array([0.0, 1.0]), f64(4, 3)), TypeError, "ids must have an integer dtype.*float64"),
    (lambda: L.embedding_forward(np.array([0, 4]), f64(4, 3)), ValueError, r"ids must lie in \[0, 4\), got a value of 4"),
    (lambda: L.embedding_forward(np.array([-1]), f64(4, 3)), ValueError, r"ids must lie in \[0, 4\), got a value of -1"),
    (lambda: L.tanh_forward(np.array([1, 2])), TypeError, "x must have dtype float32 or float64, got int64"),
    (lambda: L.gelu_forward(f64(3), approximate="fast"), ValueError, "approximate must be 'tanh' or 'none'"),
    (lambda: L.softmax_forward(f64(3), axis=2), ValueError, "axis must be an integer in"),
    (lambda: L.cross_entropy_forward(f64(2, 5), np.array([1, 2, 3])), ValueError, r"targets must have shape \(2,\).*got \(3,\)"),
    (lambda: L.cross_entropy_forward(f64(2, 5), np.array([1, 5])), ValueError, r"targets must lie in \[0, 5\), got a value of 5"),
    (lambda: L.cross_entropy_forward(f64(2, 5), np.array([1.0, 2.0])), TypeError, "targets must have an integer dtype"),
    (lambda: L.layer_norm_forward(f64(2, 4), f64(3), f64(4)), ValueError, r"gamma must have shape \(4,\), got \(3,\)"),
    (lambda: L.dropout_forward(f64(3), -0.1, rng), ValueError, r"p must be a dropout probability in \[0, 1\), got -0.1"),
    (lambda: L.dropout_forward(f64(3), 1.0, rng), ValueError, "p must be a dropout probability"),
    (lambda: L.dropout_forward(f64(3), 0.5, None), TypeError, "rng must be a numpy.random.Generator"),
    (lambda: L.rnn_step_forward(f64(2, 3), f64(2, 4), f64(3, 4), f64(4, 5), f64(4)), ValueError, r"Wh must have shape \(4, 4\), got \(4, 5\)"),
    (lambda: L.rnn_forward(f64(2, 3), f64(2, 4), f64(3, 4), f64(4, 4), f64(4)), ValueError, r"x must have 3 dimensions \(B, T, D\), got shape \(2, 3\)"),
    (lambda: L.lstm_step_forward(f64(2, 3), f64(2, 4), f64(3, 4), f64(3, 16), f64(4, 16), f64(16)), ValueError, r"c_prev must have shape \(2, 4\), got \(3, 4\)"),
    (lambda: L.lstm_forward(f64(2, 5, 3), f64(2, 4), f64(2, 4), f64(3, 12), f64(4, 16), f64(16)), ValueError, r"Wx must have shape \(3, 16\), got \(3, 12\)"),
    (lambda: L.gru_forward(f64(2, 5, 3), f64(1, 4), f64(3, 12), f64(4, 12), f64(12), f64(12)), ValueError, r"h0 must have shape \(2, \*\), got \(1, 4\)"),
    (lambda: L.gru_step_forward(f64(2, 3), f64(2, 4), f64(3, 12), f64(4, 12), f64(12), f64(9)), ValueError, r"bh must have shape \(12,\), got \(9,\)"),
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 2, 3, 4), f64(1, 2, 5, 3), f64(1, 2, 5, 4)), ValueError, r"k must have shape \(1, 2, \*, 4\), got \(1, 2, 5, 3\)"),
    (lambda: L.scaled_dot_product_attention_forward(f64(2, 3, 4), f64(2, 3, 4), f64(2, 3, 4)), ValueError, r"q must have 4 dimensions \(B, H, Tq, d\)"),
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 1, 3, 4), f64(1, 1, 5, 4), f64(1, 1, 5, 4), mask=np.ones((3, 4), bool)), ValueError, r"mask must be broadcastable to \(B, H, Tq, Tk\) = \(1, 1, 3, 5\), got \(3, 4\)"),
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 1, 3, 4), f64(1, 1, 5, 4), f64(1, 1, 5, 4), mask=np.ones((3, 5))), TypeError, "mask must be a bool numpy.ndarray"),
    (lambda: L.multi_head_attention_forward(f64(1, 2, 6), f64(6, 18), f64(18), f64(6, 6), f64(6), 4), ValueError, "n_head must be a positive integer dividing C = 6, got 4"),
    (lambda: L.sinusoidal_positions(0, 4), ValueError, "T must be a positive integer, got 0"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_rejects_a_cache_from_another_op():
    _, cache = L.tanh_forward(f64(3))
    with pytest.raises(TypeError, match="cache must be the SigmoidCache returned by the forward, got TanhCache"):
        L.sigmoid_backward(np.ones(3), cache)


def test_backward_rejects_an_upstream_gradient_of_the_wrong_shape():
    y, cache = L.tanh_forward(f64(2, 3))
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(2, 3\), got \(3, 2\)"):
        L.tanh_backward(np.ones((3, 2)), cache)


def test_cross_entropy_backward_requires_a_scalar_upstream_gradient():
    _, cache = L.cross_entropy_forward(f64(2, 3), np.array([0, 1]))
    with pytest.raises(ValueError, match="dloss must be a scalar"):
        L.cross_entropy_backward(np.ones(2), cache)
