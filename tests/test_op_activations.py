"""Activations tanh, sigmoid, relu and GELU: the reference's values, errors and gradients, and Numba's GELU.

Reference (``npllm.layers.activations``): GELU's exact (erf) form and its tanh approximation, relu's
subgradient 0 at 0, and the checks every backward makes on its cache and upstream gradient.  The Numba
GELU (``npllm_kernels.cpu.activations``, serial and parallel versions) must give the reference's values
and gradient in both forms, deep into both tails; tolerances: ``tests/_helpers.py``.
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
from npllm_kernels.cpu import activations

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


# ---------------------------------------------------------------- reference: values


def test_gelu_tanh_and_exact_values():
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    exact, _ = ref.gelu_forward(x, approximate="none")
    np.testing.assert_allclose(exact, [-0.15865525393145707, 0.0, 0.8413447460685429, 1.9544997361036416], rtol=1e-13)
    approx, _ = ref.gelu_forward(x)
    np.testing.assert_allclose(approx, exact, atol=2e-3)


def test_relu_forward_and_backward_values():
    y, cache = ref.relu_forward(np.array([-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(y, [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(ref.relu_backward(np.array([5.0, 5.0, 5.0]), cache), [0.0, 0.0, 5.0])


# ---------------------------------------------------------------- reference: errors


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.tanh_forward(np.array([1, 2])), TypeError, "x must have dtype float32 or float64, got int64"),
    (lambda: ref.gelu_forward(f64(3), approximate="fast"), ValueError, "approximate must be 'tanh' or 'none'"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_rejects_a_cache_from_another_op():
    _, cache = ref.tanh_forward(f64(3))
    with pytest.raises(TypeError, match="cache must be the SigmoidCache returned by the forward, got TanhCache"):
        ref.sigmoid_backward(np.ones(3), cache)


def test_backward_rejects_an_upstream_gradient_of_the_wrong_shape():
    y, cache = ref.tanh_forward(f64(2, 3))
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(2, 3\), got \(3, 2\)"):
        ref.tanh_backward(np.ones((3, 2)), cache)


# ---------------------------------------------------------------- reference: gradients


@pytest.mark.parametrize("name,case", gradcheck_cases("tanh", "sigmoid", "relu", "gelu"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


# ---------------------------------------------------------------- Numba: GELU


def test_numba_gelu_signatures_equal_the_reference():
    for name in ("gelu_forward", "gelu_backward"):
        assert inspect.signature(getattr(activations, name)) == inspect.signature(getattr(ref, name)), name


def test_numba_backend_runs_the_fused_gelu_kernel():
    with use_backend("numba"):
        assert ops.gelu_forward is activations.gelu_forward


@given(dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
       shape=st.sampled_from([(1,), (3, 5), (2, 4097), (2, 3, 7)]),
       approximate=st.sampled_from(["tanh", "none"]), scale=st.sampled_from([1.0, 12.0]),
       none_dy=st.booleans())
def test_numba_gelu_matches_reference(dtype, seed, shape, approximate, scale, none_dy):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)      # scale 12: deep in both tails
    dy = None if none_dy else rng.standard_normal(shape).astype(dtype)
    # y = x Φ(x) and dx = dy GELU'(x) with 0 ≤ Φ ≤ 1, |GELU'| < 1.2: |x| and |dy| size the terms (in the
    # far negative tail the reference's 1 + tanh(u) is exactly 0, the kernel's x σ(2u) a tiny number).
    dy_scale = 0.0 if dy is None else np.max(np.abs(dy))
    assert_kernel_matches_reference(activations, "gelu", [x], {"approximate": approximate}, [dy], dtype,
                                    out_scales=[np.max(np.abs(x))], grad_scales=[dy_scale])


def test_numba_gelu_tanh_stays_accurate_in_the_negative_tail_where_one_plus_tanh_cancels():
    x = np.array([-6.0, -8.0, -10.0])
    y, _ = activations.gelu_forward(x)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    exact = x / (1 + np.exp(-2 * u))                           # = 0.5 x (1 + tanh u), no cancellation
    np.testing.assert_allclose(y, exact, rtol=1e-13)


def test_numba_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ValueError, match="approximate must be 'tanh' or 'none'"):
        activations.gelu_forward(np.zeros(3), approximate="sigmoid")


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_numba_gelu_backward_passes_gradient_check(approximate):
    x = np.random.default_rng(5).standard_normal((3, 7)) * 2
    report = check_op(activations.gelu_forward, activations.gelu_backward, inputs=[x],
                      kwargs={"approximate": approximate})
    assert report.passed, report


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_gelu_serial_twin_used_with_one_thread_matches_the_reference(dtype, one_numba_thread):
    import numba
    assert numba.get_num_threads() == 1
    assert activations.for_thread_count(activations._gelu_tanh_kernel, activations._gelu_tanh_serial) \
        is activations._gelu_tanh_serial
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for approximate in ("tanh", "none") if dtype == np.float32 else ("tanh",):   # erf: one compile
        assert_kernel_matches_reference(activations, "gelu", [x], {"approximate": approximate}, [dy], dtype,
                                        out_scales=[np.max(np.abs(x))], grad_scales=[np.max(np.abs(dy))])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_gelu_parallel_kernel_used_on_large_inputs_matches_the_reference(dtype, parallel_on_any_size):
    import numba
    from npllm_kernels.cpu._threads import for_thread_count
    if numba.get_num_threads() > 1:
        assert for_thread_count(activations._gelu_tanh_kernel, activations._gelu_tanh_serial, 1) \
            is activations._gelu_tanh_kernel
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert_kernel_matches_reference(activations, "gelu", [x], {"approximate": "tanh"}, [dy], dtype,
                                    out_scales=[np.max(np.abs(x))], grad_scales=[np.max(np.abs(dy))])
