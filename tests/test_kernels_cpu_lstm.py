"""The fused Numba LSTM sequence kernel against the NumPy reference (npllm.layers.lstm).

Same contract as the reference: hs, cs (B, T, H) and six gradients, None upstream gradients meaning
zeros, inputs untouched.  Tolerances as in test_kernels_cpu_fused.py: float64 1e-10, float32 1e-4,
relative to each entry or to the largest one (a weight gradient is a sum over B·T steps, so an entry
that cancels carries its terms' rounding; in float32, the largest entry of all six gradients);
float32 kernels are compared with the reference in float64.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.backend import ops, use_backend
from npllm.gradcheck import check_op
from npllm_kernels.cpu import lstm

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
GRAD_NAMES = ("dx", "dh0", "dc0", "dWx", "dWh", "db")


def _lstm_inputs(rng, B, T, D, H, dtype, weight_scale=1.0):
    params = ref.init_lstm(D, H, rng, np.float64)
    x = rng.standard_normal((B, T, D))
    h0, c0 = rng.standard_normal((B, H)) * 0.5, rng.standard_normal((B, H))
    return [a.astype(dtype) for a in (x, h0, c0, params["Wx"] * weight_scale, params["Wh"] * weight_scale,
                                      params["b"] + 0.1 * rng.standard_normal(4 * H))]


def _assert_close(actual, desired, dtype, name, scale=None):
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}"
    assert actual.shape == desired.shape, f"{name}: shape {actual.shape} vs {desired.shape}"
    if scale is None:
        scale = float(np.max(np.abs(desired), initial=0.0))
    np.testing.assert_allclose(actual, desired.astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=name)


def test_lstm_signatures_equal_the_reference():
    for name in ("lstm_forward", "lstm_backward"):
        assert inspect.signature(getattr(lstm, name)) == inspect.signature(getattr(ref, name)), name


def test_numba_backend_runs_the_fused_lstm():
    with use_backend("numba"):
        assert ops.lstm_forward is lstm.lstm_forward


@given(dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
       B=st.sampled_from([1, 3, 5]), T=st.sampled_from([1, 2, 7]), D=st.sampled_from([1, 5]),
       H=st.sampled_from([1, 4, 17]), weight_scale=st.sampled_from([1.0, 4.0]),
       upstream=st.sampled_from(["both", "dhs only", "dcs only", "neither"]))
def test_lstm_matches_reference(dtype, seed, B, T, D, H, weight_scale, upstream):
    rng = np.random.default_rng(seed)
    inputs = _lstm_inputs(rng, B, T, D, H, dtype, weight_scale)   # weight_scale 4: saturated gates
    dhs = rng.standard_normal((B, T, H)).astype(dtype) if upstream in ("both", "dhs only") else None
    dcs = rng.standard_normal((B, T, H)).astype(dtype) if upstream in ("both", "dcs only") else None
    originals = [a.copy() for a in inputs + [d for d in (dhs, dcs) if d is not None]]

    hs, cs, cache = lstm.lstm_forward(*inputs)
    ref_hs, ref_cs, ref_cache = ref.lstm_forward(*[a.astype(np.float64) for a in inputs])
    _assert_close(hs, ref_hs, dtype, "hs")
    _assert_close(cs, ref_cs, dtype, "cs")

    grads = lstm.lstm_backward(dhs, dcs, cache)
    ref_grads = ref.lstm_backward(*[None if d is None else d.astype(np.float64) for d in (dhs, dcs)], ref_cache)
    assert len(grads) == 6
    # In float32 every gradient is compared relative to the largest entry of any of them: all six are
    # sums of products of the same da_t, and with one or a few units and saturated gates a sum such as
    # dx = da Wxᵀ or dh0 = da_0 Whᵀ can cancel to 1/1000 of its terms, whose size sets its rounding.
    largest = max(float(np.max(np.abs(g), initial=0.0)) for g in ref_grads)
    for name, grad, ref_grad in zip(GRAD_NAMES, grads, ref_grads):
        _assert_close(grad, ref_grad, dtype, name, largest if dtype == np.float32 else None)
    for before, after in zip(originals, inputs + [d for d in (dhs, dcs) if d is not None]):
        np.testing.assert_array_equal(after, before, err_msg="lstm modified an input")


def test_lstm_accepts_non_contiguous_inputs():
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


def test_lstm_rejects_mismatched_weights_like_the_reference():
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
def test_lstm_backward_passes_gradient_check_per_time_step(seed, B, T, H):
    # H >= 3: with a single unit the per-step breakdown's finite differences of tiny per-step terms
    # miss 1e-7 for the NumPy reference too (seed 4294967294, B=1, T=4: 1.3e-7 and 1.1e-7).
    inputs = _lstm_inputs(np.random.default_rng(seed), B, T, 3, H, np.float64)
    report = check_op(lstm.lstm_forward, lstm.lstm_backward, inputs, time_axis=1)
    assert report.passed, report
