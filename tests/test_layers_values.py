"""Forward values against hand-computed cases, and invariants checked with hypothesis."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npllm import layers as L

finite = st.floats(-50, 50, allow_nan=False, width=64)


def test_softmax_of_1_2_3():
    y, _ = L.softmax_forward(np.array([1.0, 2.0, 3.0]))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, e / e.sum(), rtol=1e-15)
    np.testing.assert_allclose(y, [0.09003057317038046, 0.24472847105479767, 0.6652409557748219], rtol=1e-14)


def test_cross_entropy_of_uniform_logits_is_log_V():
    V = 7
    loss, _ = L.cross_entropy_forward(np.zeros((3, 4, V)), np.zeros((3, 4), dtype=np.int64))
    assert math.isclose(float(loss), math.log(V), rel_tol=1e-14)


def test_cross_entropy_worked_example_is_minus_log_point_seven():
    # vocabulary ["I", "love", "you"], predicted q = 0.1 / 0.7 / 0.2, target "love"
    logits = np.log(np.array([[0.1, 0.7, 0.2]]))
    loss, cache = L.cross_entropy_forward(logits, np.array([1]))
    assert math.isclose(float(loss), -math.log(0.7), rel_tol=1e-14)
    np.testing.assert_allclose(L.cross_entropy_backward(1.0, cache), [[0.1, -0.3, 0.2]], atol=1e-15)


def test_cross_entropy_is_finite_for_logits_of_1e4():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=np.float32)
    loss, cache = L.cross_entropy_forward(logits, np.array([1, 0]))
    assert np.isfinite(loss) and math.isclose(float(loss), 2e4, rel_tol=1e-6)
    assert np.all(np.isfinite(L.cross_entropy_backward(1.0, cache)))


def test_cross_entropy_all_targets_ignored_gives_zero_loss_and_gradient():
    loss, cache = L.cross_entropy_forward(np.ones((2, 3)), np.array([-100, -100]))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(L.cross_entropy_backward(1.0, cache), 0.0)


def test_lstm_step_with_known_gate_values():
    # Zero weights: every gate sees only its bias. i = σ(0) = 0.5, f = σ(ln 3) = 0.75, g = tanh(0) = 0,
    # o = σ(0) = 0.5, so c = 0.75 c_prev and h = 0.5 tanh(c).
    H = 2
    b = np.zeros(4 * H)
    b[H:2 * H] = math.log(3.0)
    c_prev = np.array([[1.0, -2.0]])
    h, c, _ = L.lstm_step_forward(np.ones((1, 3)), np.ones((1, H)), c_prev, np.zeros((3, 4 * H)), np.zeros((H, 4 * H)), b)
    np.testing.assert_allclose(c, 0.75 * c_prev, rtol=1e-15)
    np.testing.assert_allclose(h, 0.5 * np.tanh(0.75 * c_prev), rtol=1e-15)


def test_init_lstm_sets_forget_gate_bias_to_one():
    p = L.init_lstm(3, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(p["b"][4:8], 1.0)
    np.testing.assert_array_equal(np.delete(p["b"], np.s_[4:8]), 0.0)
    assert p["Wx"].shape == (3, 16) and p["Wh"].shape == (4, 16) and p["Wx"].dtype == np.float32


def test_gru_step_matches_pytorch_equations():
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    p = L.init_gru(3, 4, rng, dtype=np.float64)
    bx, bh = rng.standard_normal(12), rng.standard_normal(12)
    out, _ = L.gru_step_forward(x, h, p["Wx"], p["Wh"], bx, bh)
    sig = lambda a: 1 / (1 + np.exp(-a))
    Wx, Wh = p["Wx"], p["Wh"]
    r = sig(x @ Wx[:, :4] + bx[:4] + h @ Wh[:, :4] + bh[:4])
    z = sig(x @ Wx[:, 4:8] + bx[4:8] + h @ Wh[:, 4:8] + bh[4:8])
    n = np.tanh(x @ Wx[:, 8:] + bx[8:] + r * (h @ Wh[:, 8:] + bh[8:]))
    np.testing.assert_allclose(out, (1 - z) * n + z * h, rtol=1e-13)


def test_gelu_tanh_and_exact_values():
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    exact, _ = L.gelu_forward(x, approximate="none")
    np.testing.assert_allclose(exact, [-0.15865525393145707, 0.0, 0.8413447460685429, 1.9544997361036416], rtol=1e-13)
    approx, _ = L.gelu_forward(x)
    np.testing.assert_allclose(approx, exact, atol=2e-3)


def test_layer_norm_output_has_zero_mean_unit_variance():
    x = np.random.default_rng(0).standard_normal((4, 16)) * 5 + 3
    y, _ = L.layer_norm_forward(x, np.ones(16), np.zeros(16))
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-4)


def test_dropout_is_inverted_and_identity_in_eval():
    x = np.ones((200, 200))
    y, _ = L.dropout_forward(x, 0.25, np.random.default_rng(0))
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert abs(y.mean() - 1) < 0.02
    y_eval, _ = L.dropout_forward(x, 0.25, None, training=False)
    assert y_eval is x


def test_sinusoidal_positions_are_interleaved_sin_cos():
    pe = L.sinusoidal_positions(5, 6, dtype=np.float64)
    t, i = 3, 1
    assert math.isclose(pe[t, 2 * i], math.sin(t / 10000 ** (2 * i / 6)), rel_tol=1e-14)
    assert math.isclose(pe[t, 2 * i + 1], math.cos(t / 10000 ** (2 * i / 6)), rel_tol=1e-14)
    np.testing.assert_array_equal(pe[0, 0::2], 0.0)
    assert L.sinusoidal_positions(4, 7).shape == (4, 7)


def test_embedding_is_a_one_hot_matmul():
    W = np.random.default_rng(0).standard_normal((5, 3))
    ids = np.array([[4, 0, 4]])
    y, cache = L.embedding_forward(ids, W)
    np.testing.assert_array_equal(y, np.eye(5)[ids] @ W)
    dW = L.embedding_backward(np.ones((1, 3, 3)), cache)
    np.testing.assert_array_equal(dW[4], 2.0)     # looked up twice: gradients add
    np.testing.assert_array_equal(dW[1], 0.0)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 8)), elements=finite), finite)
def test_softmax_rows_sum_to_one_and_are_shift_invariant(x, shift):
    y, _ = L.softmax_forward(x)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(L.softmax_forward(x + shift)[0], y, rtol=1e-9, atol=1e-300)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 8)),
              elements=st.floats(-1e300, 1e300, allow_nan=False)))
def test_log_softmax_equals_log_of_softmax_without_overflow(x):
    logp, _ = L.log_softmax_forward(x)
    assert np.all(np.isfinite(logp)) and np.all(logp <= 0)
    p = L.softmax_forward(x)[0]
    ok = p > 1e-300
    np.testing.assert_allclose(logp[ok], np.log(p[ok]), rtol=1e-9, atol=1e-9)


@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 6)), elements=st.floats(-1e4, 1e4)),
       st.integers(0, 10**6))
def test_cross_entropy_is_finite_for_extreme_logits(logits, seed):
    targets = np.random.default_rng(seed).integers(0, logits.shape[-1], logits.shape[:-1])
    loss, cache = L.cross_entropy_forward(logits, targets)
    assert np.isfinite(loss) and loss >= 0
    assert np.all(np.isfinite(L.cross_entropy_backward(1.0, cache)))


@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 10**6))
def test_attention_with_identical_keys_averages_the_values(Tq, Tk, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 2, Tq, 4))
    k = np.broadcast_to(rng.standard_normal((1, 2, 1, 4)), (1, 2, Tk, 4)).copy()
    v = rng.standard_normal((1, 2, Tk, 3))
    out, _ = L.scaled_dot_product_attention_forward(q, k, v)
    np.testing.assert_allclose(out, np.broadcast_to(v.mean(axis=2, keepdims=True), out.shape), rtol=1e-12, atol=1e-14)


@given(st.integers(1, 6), st.integers(0, 10**6))
def test_causal_self_attention_at_position_zero_returns_v0(T, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, 3, T, 4)) for _ in range(3))
    out, _ = L.scaled_dot_product_attention_forward(q, k, v, causal=True)
    np.testing.assert_allclose(out[:, :, 0], v[:, :, 0], rtol=1e-14)


def test_attention_uses_scale_one_over_sqrt_d():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 1, 2, 16)), rng.standard_normal((1, 1, 3, 16)), rng.standard_normal((1, 1, 3, 5))
    out, _ = L.scaled_dot_product_attention_forward(q, k, v)
    s = q[0, 0] @ k[0, 0].T / 4.0
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out[0, 0], (p / p.sum(-1, keepdims=True)) @ v[0, 0], rtol=1e-13)


def test_multi_head_attention_uses_gpt2_qkv_layout():
    rng = np.random.default_rng(0)
    B, T, C, NH = 1, 3, 4, 2
    x, W, b = rng.standard_normal((B, T, C)), rng.standard_normal((C, 3 * C)), rng.standard_normal(3 * C)
    Wo, bo = np.eye(C), np.zeros(C)
    y, _ = L.multi_head_attention_forward(x, W, b, Wo, bo, NH, causal=True)
    q, k, v = (x @ W[:, i * C:(i + 1) * C] + b[i * C:(i + 1) * C] for i in range(3))
    head = lambda a, h: a[0, :, h * 2:(h + 1) * 2][None, None]
    for h in range(NH):
        ref, _ = L.scaled_dot_product_attention_forward(head(q, h), head(k, h), head(v, h), causal=True)
        np.testing.assert_allclose(y[0, :, h * 2:(h + 1) * 2], ref[0, 0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_compute_in_the_input_dtype(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    assert L.gelu_forward(x)[0].dtype == dtype
    assert L.sigmoid_forward(x)[0].dtype == dtype
    assert L.layer_norm_forward(x, np.ones(4, dtype), np.zeros(4, dtype))[0].dtype == dtype
    loss, cache = L.cross_entropy_forward(x, np.zeros((2, 3), dtype=np.int64))
    assert loss.dtype == dtype and L.cross_entropy_backward(1.0, cache).dtype == dtype
    out, cache = L.scaled_dot_product_attention_forward(x[None], x[None], x[None], causal=True)
    assert out.dtype == dtype and all(g.dtype == dtype for g in L.scaled_dot_product_attention_backward(out, cache))


def test_forward_does_not_modify_inputs():
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5)), rng.standard_normal((2, 5)),
            rng.standard_normal((4, 20)), rng.standard_normal((5, 20)), rng.standard_normal(20)]
    copies = [a.copy() for a in args]
    hs, cs, cache = L.lstm_forward(*args)
    L.lstm_backward(np.ones_like(hs), np.ones_like(cs), cache)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


def test_relu_forward_and_backward_values():
    y, cache = L.relu_forward(np.array([-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(y, [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(L.relu_backward(np.array([5.0, 5.0, 5.0]), cache), [0.0, 0.0, 5.0])
