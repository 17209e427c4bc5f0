"""Layer norm: the reference's values, errors and gradients, and the fused Numba kernel.

Reference (``npllm.layers.layer_norm``): y = (x − mean) / sqrt(var + eps) · gamma + beta over the last
axis.  The Numba kernel (``npllm_kernels.cpu.layer_norm``, serial and parallel versions) must give the
reference's output and gradients, including for |mean| >> std; tolerances: ``tests/_helpers.py``.
"""
import inspect

import numpy as np
import pytest
from _helpers import assert_kernel_matches_reference, assert_passes_gradient_check, gradcheck_cases
from hypothesis import given
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.backend import ops, use_backend
from npllm.gradcheck import check_op
from npllm_kernels.cpu import layer_norm

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


# ---------------------------------------------------------------- reference


def test_layer_norm_output_has_zero_mean_unit_variance():
    x = np.random.default_rng(0).standard_normal((4, 16)) * 5 + 3
    y, _ = ref.layer_norm_forward(x, np.ones(16), np.zeros(16))
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-4)


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.layer_norm_forward(f64(2, 4), f64(3), f64(4)), ValueError, r"gamma must have shape \(4,\), got \(3,\)"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("layer_norm"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


# ---------------------------------------------------------------- Numba: the fused kernel


def _layer_norm_dx_scale(x, gamma, dy, eps):
    """Size of the terms of dx = (g − mean g − x̂ mean(g x̂)) rstd: max |dy γ| · max rstd."""
    if dy is None:
        return 0.0
    rstd = 1.0 / np.sqrt(x.astype(np.float64).var(axis=-1) + eps)
    return float(np.max(np.abs(dy.astype(np.float64) * gamma)) * np.max(rstd))


def test_numba_layer_norm_signatures_equal_the_reference():
    for name in ("layer_norm_forward", "layer_norm_backward"):
        assert inspect.signature(getattr(layer_norm, name)) == inspect.signature(getattr(ref, name)), name


def test_numba_backend_runs_the_fused_layer_norm_kernel():
    with use_backend("numba"):
        assert ops.layer_norm_forward is layer_norm.layer_norm_forward


@given(dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
       lead=st.sampled_from([(1,), (7,), (2, 3), (17, 1)]),
       C=st.sampled_from([1, 2, 33, 768]), offset=st.sampled_from([0.0, 100.0]),
       eps=st.sampled_from([1e-5, 0.1]), none_dy=st.booleans())
def test_numba_layer_norm_matches_reference(dtype, seed, lead, C, offset, eps, none_dy):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(lead + (C,)) + offset).astype(dtype)   # offset: |mean| >> std
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    dy = None if none_dy else rng.standard_normal(x.shape).astype(dtype)
    assert_kernel_matches_reference(layer_norm, "layer_norm", [x, gamma, beta], {"eps": eps}, [dy], dtype,
                                    grad_scales=[_layer_norm_dx_scale(x, gamma, dy, eps), None, None])


def test_numba_layer_norm_accepts_a_non_contiguous_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5))[::2, ::-1]          # strided view
    assert_kernel_matches_reference(layer_norm, "layer_norm", [x, np.ones(5), np.zeros(5)], {},
                                    [rng.standard_normal((3, 5))], np.float64)


def test_numba_layer_norm_rejects_mismatched_gamma_like_the_reference():
    with pytest.raises(ValueError, match=r"gamma must have shape \(4,\)"):
        layer_norm.layer_norm_forward(np.zeros((2, 4)), np.ones(3), np.zeros(4))


def test_numba_layer_norm_backward_passes_gradient_check():
    rng = np.random.default_rng(4)
    report = check_op(layer_norm.layer_norm_forward, layer_norm.layer_norm_backward,
                      inputs=[rng.standard_normal((2, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)])
    assert report.passed, report


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_layer_norm_serial_twin_used_with_one_thread_matches_the_reference(dtype, one_numba_thread):
    import numba
    assert numba.get_num_threads() == 1
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(33).astype(dtype), rng.standard_normal(33).astype(dtype)
    assert_kernel_matches_reference(layer_norm, "layer_norm", [x, gamma, beta], {}, [dy], dtype,
                                    grad_scales=[_layer_norm_dx_scale(x, gamma, dy, 1e-5), None, None])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_layer_norm_parallel_kernel_used_on_large_inputs_matches_the_reference(dtype, parallel_on_any_size):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(33).astype(dtype), rng.standard_normal(33).astype(dtype)
    assert_kernel_matches_reference(layer_norm, "layer_norm", [x, gamma, beta], {}, [dy], dtype,
                                    grad_scales=[_layer_norm_dx_scale(x, gamma, dy, 1e-5), None, None])
