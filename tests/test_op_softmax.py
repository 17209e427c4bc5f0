"""Softmax and log-softmax: the reference's values, invariants, errors and gradients, and the CUDA kernels.

Reference (``npllm.layers.softmax``): rows sum to 1, a shift of the input changes nothing, and
log_softmax stays finite where exp would overflow.  CUDA (``npllm_kernels.cuda``, in Numba's simulator
without a GPU): every version against the reference with −inf and 1e4 entries, forward and backward along
a middle axis; tolerances: ``tests/_helpers.py``.
"""
import inspect

import numpy as np
import pytest
from _helpers import assert_cuda_matches, assert_passes_gradient_check, gradcheck_cases, random_array
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import npllm.layers as ref

finite = st.floats(-50, 50, allow_nan=False, width=64)
rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


# ---------------------------------------------------------------- reference: values


def test_softmax_of_1_2_3():
    y, _ = ref.softmax_forward(np.array([1.0, 2.0, 3.0]))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, e / e.sum(), rtol=1e-15)
    np.testing.assert_allclose(y, [0.09003057317038046, 0.24472847105479767, 0.6652409557748219], rtol=1e-14)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 8)), elements=finite), finite)
def test_softmax_rows_sum_to_one_and_are_shift_invariant(x, shift):
    y, _ = ref.softmax_forward(x)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ref.softmax_forward(x + shift)[0], y, rtol=1e-9, atol=1e-300)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 8)),
              elements=st.floats(-1e300, 1e300, allow_nan=False)))
def test_log_softmax_equals_log_of_softmax_without_overflow(x):
    logp, _ = ref.log_softmax_forward(x)
    assert np.all(np.isfinite(logp)) and np.all(logp <= 0)
    p = ref.softmax_forward(x)[0]
    ok = p > 1e-300
    np.testing.assert_allclose(logp[ok], np.log(p[ok]), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- reference: errors and gradients


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.softmax_forward(f64(3), axis=2), ValueError, "axis must be an integer in"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("softmax", "log_softmax"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


# ---------------------------------------------------------------- CUDA kernels


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_cuda_softmax_version_matches_reference_with_minus_inf_entries(cuda_kernels, version, dtype):
    rng = np.random.default_rng(3)
    x = random_array(rng, (5, 37), dtype, scale=4.0)
    x[0, :6] = -np.inf          # masked logits: probability exactly 0
    x[1, 30:] = 1e4             # large logits: the max subtraction keeps exp finite
    y = cuda_kernels.MODULES["softmax"].VERSIONS[version](x).copy_to_host()
    assert_cuda_matches(y, ref.softmax_forward(x)[0], dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_cuda_softmax_forward_and_backward_along_a_middle_axis_match_reference(cuda_kernels, dtype):
    rng = np.random.default_rng(4)
    x, dy = random_array(rng, (2, 37, 3), dtype), random_array(rng, (2, 37, 3), dtype)
    y, cache = cuda_kernels.softmax_forward(x, axis=1)
    y_ref, cache_ref = ref.softmax_forward(x, axis=1)
    assert_cuda_matches(y, y_ref, dtype)
    assert_cuda_matches(cuda_kernels.softmax_backward(dy, cache), ref.softmax_backward(dy, cache_ref), dtype)
    assert_cuda_matches(cuda_kernels.softmax_backward(None, cache), np.zeros_like(x), dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["softmax_forward", "softmax_backward"])
def test_cuda_op_has_the_reference_signature(cuda_kernels, name):
    assert inspect.signature(getattr(cuda_kernels, name)) == inspect.signature(getattr(ref, name))
