"""The LSTM (CS231n's lstm_step / lstm): the reference's values, errors and gradients, and the fused Numba kernel.

Reference (``npllm.layers.lstm``): gates i, f, g, o against hand-worked values, the forget-gate bias of
1, errors naming the argument (h0 or c0, whichever has the wrong shape, on every backend), and float64
gradient checks (the op table's cases and hypothesis-drawn shapes).

Numba (``npllm_kernels.cpu.lstm``): same contract as the reference: hs, cs (B, T, H) and six gradients,
None upstream gradients meaning zeros, inputs untouched.  Tolerances: float64 1e-10, float32 1e-4,
relative to each entry or to the largest one (a weight gradient is a sum over B·T steps, so an entry
that cancels carries its terms' rounding; in float32, the largest entry of all six gradients); float32
kernels are compared with the reference in float64.
"""
import inspect
import math

import numpy as np
import pytest
from _helpers import assert_close, assert_passes_gradient_check, backend_param, gradcheck_cases
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.backend import ops, use_backend
from npllm.gradcheck import check_op
from npllm_kernels.cpu import lstm

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731
GRAD_NAMES = ("dx", "dh0", "dc0", "dWx", "dWh", "db")


# ---------------------------------------------------------------- reference: values


def test_lstm_step_with_known_gate_values():
    # Zero weights: every gate sees only its bias. i = σ(0) = 0.5, f = σ(ln 3) = 0.75, g = tanh(0) = 0,
    # o = σ(0) = 0.5, so c = 0.75 c_prev and h = 0.5 tanh(c).
    H = 2
    b = np.zeros(4 * H)
    b[H:2 * H] = math.log(3.0)
    c_prev = np.array([[1.0, -2.0]])
    h, c, _ = ref.lstm_step_forward(np.ones((1, 3)), np.ones((1, H)), c_prev, np.zeros((3, 4 * H)), np.zeros((H, 4 * H)), b)
    np.testing.assert_allclose(c, 0.75 * c_prev, rtol=1e-15)
    np.testing.assert_allclose(h, 0.5 * np.tanh(0.75 * c_prev), rtol=1e-15)


def test_init_lstm_sets_forget_gate_bias_to_one():
    p = ref.init_lstm(3, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(p["b"][4:8], 1.0)
    np.testing.assert_array_equal(np.delete(p["b"], np.s_[4:8]), 0.0)
    assert p["Wx"].shape == (3, 16) and p["Wh"].shape == (4, 16) and p["Wx"].dtype == np.float32


def test_forward_does_not_modify_inputs():
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5)), rng.standard_normal((2, 5)),
            rng.standard_normal((4, 20)), rng.standard_normal((5, 20)), rng.standard_normal(20)]
    copies = [a.copy() for a in args]
    hs, cs, cache = ref.lstm_forward(*args)
    ref.lstm_backward(np.ones_like(hs), np.ones_like(cs), cache)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------- reference: errors, on every backend


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.lstm_step_forward(f64(2, 3), f64(2, 4), f64(3, 4), f64(3, 16), f64(4, 16), f64(16)), ValueError, r"c_prev must have shape \(2, 4\), got \(3, 4\)"),
    (lambda: ref.lstm_forward(f64(2, 5, 3), f64(2, 4), f64(2, 4), f64(3, 12), f64(4, 16), f64(16)), ValueError, r"Wx must have shape \(3, 16\), got \(3, 12\)"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _lstm_inputs_with_states(h0_shape, c0_shape):
    """x (2, 5, 3) and weights for H = 4, with states of the given shapes."""
    zeros = np.zeros
    return zeros((2, 5, 3)), zeros(h0_shape), zeros(c0_shape), zeros((3, 16)), zeros((4, 16)), zeros(16)


@pytest.mark.parametrize("backend", [backend_param("numpy"), backend_param("numba")], indirect=True)
@pytest.mark.parametrize("h0_shape, c0_shape, message", [
    ((2, 5), (2, 4), r"h0 must have shape \(2, 4\) like c0, got \(2, 5\)"),
    ((1, 4), (2, 4), r"h0 must have shape \(2, \*\), got \(1, 4\)"),
    ((2, 4), (2, 5), r"c0 must have shape \(2, 4\), got \(2, 5\)"),
    ((2, 4), (3, 4), r"c0 must have shape \(2, 4\), got \(3, 4\)"),
    ((2, 4), (8,), r"c0 must have 2 dimensions \(B, H\), got shape \(8,\)"),
])
def test_lstm_forward_names_the_state_whose_shape_is_wrong(backend, h0_shape, c0_shape, message):
    with pytest.raises(ValueError, match=message):
        backend.lstm_forward(*_lstm_inputs_with_states(h0_shape, c0_shape))


# ---------------------------------------------------------------- reference: gradients


@pytest.mark.parametrize("name,case", gradcheck_cases("lstm_step", "lstm"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


@settings(max_examples=10)
@given(B=st.integers(1, 3), T=st.integers(1, 4), D=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 99))
def test_lstm_backward_matches_numerical_gradient_on_random_shapes(B, T, D, H, seed):
    rng = np.random.default_rng(seed)
    p = ref.init_lstm(D, H, rng, dtype=np.float64)
    inputs = [rng.standard_normal((B, T, D)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
              p["Wx"], p["Wh"], p["b"]]
    report = check_op(ref.lstm_forward, ref.lstm_backward, inputs, time_axis=1)
    assert report.passed, str(report)


# ---------------------------------------------------------------- Numba: the fused sequence kernel


def _lstm_inputs(rng, B, T, D, H, dtype, weight_scale=1.0):
    params = ref.init_lstm(D, H, rng, np.float64)
    x = rng.standard_normal((B, T, D))
    h0, c0 = rng.standard_normal((B, H)) * 0.5, rng.standard_normal((B, H))
    return [a.astype(dtype) for a in (x, h0, c0, params["Wx"] * weight_scale, params["Wh"] * weight_scale,
                                      params["b"] + 0.1 * rng.standard_normal(4 * H))]


def test_numba_lstm_signatures_equal_the_reference():
    for name in ("lstm_forward", "lstm_backward"):
        assert inspect.signature(getattr(lstm, name)) == inspect.signature(getattr(ref, name)), name


def test_numba_backend_runs_the_fused_lstm():
    with use_backend("numba"):
        assert ops.lstm_forward is lstm.lstm_forward


@given(dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
       B=st.sampled_from([1, 3, 5]), T=st.sampled_from([1, 2, 7]), D=st.sampled_from([1, 5]),
       H=st.sampled_from([1, 4, 17]), weight_scale=st.sampled_from([1.0, 4.0]),
       upstream=st.sampled_from(["both", "dhs only", "dcs only", "neither"]))
def test_numba_lstm_matches_reference(dtype, seed, B, T, D, H, weight_scale, upstream):
    rng = np.random.default_rng(seed)
    inputs = _lstm_inputs(rng, B, T, D, H, dtype, weight_scale)   # weight_scale 4: saturated gates
    dhs = rng.standard_normal((B, T, H)).astype(dtype) if upstream in ("both", "dhs only") else None
    dcs = rng.standard_normal((B, T, H)).astype(dtype) if upstream in ("both", "dcs only") else None
    originals = [a.copy() for a in inputs + [d for d in (dhs, dcs) if d is not None]]

    hs, cs, cache = lstm.lstm_forward(*inputs)
    ref_hs, ref_cs, ref_cache = ref.lstm_forward(*[a.astype(np.float64) for a in inputs])
    assert_close(hs, ref_hs, dtype, "hs")
    assert_close(cs, ref_cs, dtype, "cs")

    grads = lstm.lstm_backward(dhs, dcs, cache)
    ref_grads = ref.lstm_backward(*[None if d is None else d.astype(np.float64) for d in (dhs, dcs)], ref_cache)
    assert len(grads) == 6
    # In float32 every gradient is compared relative to the largest entry of any of them: all six are
    # sums of products of the same da_t, and with one or a few units and saturated gates a sum such as
    # dx = da Wxᵀ or dh0 = da_0 Whᵀ can cancel to 1/1000 of its terms, whose size sets its rounding.
    largest = max(float(np.max(np.abs(g), initial=0.0)) for g in ref_grads)
    for name, grad, ref_grad in zip(GRAD_NAMES, grads, ref_grads):
        assert_close(grad, ref_grad, dtype, name, largest if dtype == np.float32 else None)
    for before, after in zip(originals, inputs + [d for d in (dhs, dcs) if d is not None]):
        np.testing.assert_array_equal(after, before, err_msg="lstm modified an input")


def test_numba_lstm_accepts_non_contiguous_inputs():
    rng = np.random.default_rng(7)
    x, h0, c0, Wx, Wh, b = _lstm_inputs(rng, 2, 3, 4, 5, np.float64)
    views = (np.asfortranarray(x), h0[:, ::-1], c0, np.asfortranarray(Wx), np.asfortranarray(Wh), b)
    hs, cs, cache = lstm.lstm_forward(*views)
    ref_hs, ref_cs, ref_cache = ref.lstm_forward(*views)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-12)
    dhs = rng.standard_normal(hs.shape)[:, ::-1]
    for name, grad, ref_grad in zip(GRAD_NAMES, lstm.lstm_backward(dhs, None, cache),
                                    ref.lstm_backward(dhs, None, ref_cache)):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12, err_msg=name)


def test_numba_lstm_rejects_mismatched_weights_like_the_reference():
    rng = np.random.default_rng(8)
    x, h0, c0, Wx, Wh, b = _lstm_inputs(rng, 2, 3, 4, 5, np.float64)
    with pytest.raises(ValueError, match=r"Wh must have shape \(5, 20\)"):
        lstm.lstm_forward(x, h0, c0, Wx, Wh[:4], b)
    _, _, cache = lstm.lstm_forward(x, h0, c0, Wx, Wh, b)
    with pytest.raises(ValueError, match="dhs must have the forward output's shape"):
        lstm.lstm_backward(np.zeros((2, 2, 5)), None, cache)


@settings(max_examples=6)
@given(seed=st.integers(0, 2**32 - 1), B=st.sampled_from([1, 3]), T=st.sampled_from([1, 4]),
       H=st.sampled_from([3, 5, 17]))
def test_numba_lstm_backward_passes_gradient_check_per_time_step(seed, B, T, H):
    # H >= 3: with a single unit the per-step breakdown's finite differences of tiny per-step terms
    # miss 1e-7 for the NumPy reference too (seed 4294967294, B=1, T=4: 1.3e-7 and 1.1e-7).
    inputs = _lstm_inputs(np.random.default_rng(seed), B, T, 3, H, np.float64)
    report = check_op(lstm.lstm_forward, lstm.lstm_backward, inputs, time_axis=1)
    assert report.passed, report
