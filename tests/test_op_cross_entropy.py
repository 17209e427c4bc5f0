"""Cross-entropy: the reference's values, errors and gradients, the fused Numba kernel, and the CUDA kernels.

Reference (``npllm.layers.cross_entropy``): mean over the kept targets of −log softmax(logits)[target];
finite for logits of ±1e4; targets equal to ``ignore_index`` count for nothing.  The Numba kernel
(``npllm_kernels.cpu.cross_entropy``) and the CUDA versions must give the reference's loss and gradient.
Tolerances: ``tests/_helpers.py``.
"""
import inspect
import math

import numpy as np
import pytest
from _helpers import (RTOL, assert_cuda_matches, assert_kernel_matches_reference, assert_passes_gradient_check,
                      gradcheck_cases, random_array)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import npllm.layers as ref
from npllm.backend import ops, use_backend
from npllm.gradcheck import check_op
from npllm_kernels.cpu import cross_entropy

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


# ---------------------------------------------------------------- reference: values


def test_cross_entropy_of_uniform_logits_is_log_V():
    V = 7
    loss, _ = ref.cross_entropy_forward(np.zeros((3, 4, V)), np.zeros((3, 4), dtype=np.int64))
    assert math.isclose(float(loss), math.log(V), rel_tol=1e-14)


def test_cross_entropy_worked_example_is_minus_log_point_seven():
    # vocabulary ["I", "love", "you"], predicted q = 0.1 / 0.7 / 0.2, target "love"
    logits = np.log(np.array([[0.1, 0.7, 0.2]]))
    loss, cache = ref.cross_entropy_forward(logits, np.array([1]))
    assert math.isclose(float(loss), -math.log(0.7), rel_tol=1e-14)
    np.testing.assert_allclose(ref.cross_entropy_backward(1.0, cache), [[0.1, -0.3, 0.2]], atol=1e-15)


def test_cross_entropy_is_finite_for_logits_of_1e4():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=np.float32)
    loss, cache = ref.cross_entropy_forward(logits, np.array([1, 0]))
    assert np.isfinite(loss) and math.isclose(float(loss), 2e4, rel_tol=1e-6)
    assert np.all(np.isfinite(ref.cross_entropy_backward(1.0, cache)))


def test_cross_entropy_all_targets_ignored_gives_zero_loss_and_gradient():
    loss, cache = ref.cross_entropy_forward(np.ones((2, 3)), np.array([-100, -100]))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(ref.cross_entropy_backward(1.0, cache), 0.0)


@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 6)), elements=st.floats(-1e4, 1e4)),
       st.integers(0, 10**6))
def test_cross_entropy_is_finite_for_extreme_logits(logits, seed):
    targets = np.random.default_rng(seed).integers(0, logits.shape[-1], logits.shape[:-1])
    loss, cache = ref.cross_entropy_forward(logits, targets)
    assert np.isfinite(loss) and loss >= 0
    assert np.all(np.isfinite(ref.cross_entropy_backward(1.0, cache)))


# ---------------------------------------------------------------- reference: errors


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.cross_entropy_forward(f64(2, 5), np.array([1, 2, 3])), ValueError, r"targets must have shape \(2,\).*got \(3,\)"),
    (lambda: ref.cross_entropy_forward(f64(2, 5), np.array([1, 5])), ValueError, r"targets must lie in \[0, 5\), got a value of 5"),
    (lambda: ref.cross_entropy_forward(f64(2, 5), np.array([1.0, 2.0])), TypeError, "targets must have an integer dtype"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_cross_entropy_backward_requires_a_scalar_upstream_gradient():
    _, cache = ref.cross_entropy_forward(f64(2, 3), np.array([0, 1]))
    with pytest.raises(ValueError, match="dloss must be a scalar"):
        ref.cross_entropy_backward(np.ones(2), cache)


# ---------------------------------------------------------------- reference: gradients


@pytest.mark.parametrize("name,case", gradcheck_cases("cross_entropy"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


def test_cross_entropy_gradient_is_zero_on_ignored_targets():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4))
    targets = np.array([[1, -100, 2], [-100, -100, 0]])
    _, cache = ref.cross_entropy_forward(logits, targets)
    dlogits = ref.cross_entropy_backward(1.0, cache)
    np.testing.assert_array_equal(dlogits[targets == -100], 0.0)
    # Mean over the 3 kept targets: each kept row's gradient sums to 0 and has −(1 − p)/3 at the target.
    np.testing.assert_allclose(dlogits.sum(axis=-1), 0.0, atol=1e-15)


# ---------------------------------------------------------------- Numba: the fused kernel


def test_numba_cross_entropy_signatures_equal_the_reference():
    for name in ("cross_entropy_forward", "cross_entropy_backward"):
        assert inspect.signature(getattr(cross_entropy, name)) == inspect.signature(getattr(ref, name)), name


def test_numba_backend_runs_the_fused_cross_entropy_kernel():
    with use_backend("numba"):
        assert ops.cross_entropy_forward is cross_entropy.cross_entropy_forward


@given(dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
       lead=st.sampled_from([(1,), (5,), (2, 3), (3, 1, 2)]),
       V=st.sampled_from([1, 2, 17, 513, 1025]), ignore_index=st.sampled_from([-100, 0, 3]),
       scale=st.sampled_from([0.1, 5.0, 1e4]), dloss=st.sampled_from([1.0, -0.5, None]))
def test_numba_cross_entropy_matches_reference(dtype, seed, lead, V, ignore_index, scale, dloss):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(lead + (V,)) * scale).astype(dtype)
    targets = rng.integers(0, V, lead)
    targets[rng.random(lead) < 0.3] = ignore_index    # exercise ignored rows (ignore_index may be a class)
    # The loss is lse − logit[target], a difference of numbers as large as the logits: a confident row
    # leaves a tiny loss whose float32 error is relative to the logits' size, not to the loss's.
    loss_scale = max(1.0, float(np.max(np.abs(logits), initial=0.0)))
    # dlogits = dloss (softmax − onehot) / n_kept: on a confident row p − 1 cancels, so its float32 error
    # is relative to the terms' size |dloss| / n_kept, not to the small difference.
    n_kept = max(1, int(np.count_nonzero(targets != ignore_index)))
    grad_scale = abs(1.0 if dloss is None else dloss) / n_kept
    assert_kernel_matches_reference(cross_entropy, "cross_entropy", [logits, targets], {"ignore_index": ignore_index},
                                    [dloss], dtype, out_scales=[loss_scale], grad_scales=[grad_scale])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_cross_entropy_is_finite_and_exact_for_logits_of_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    targets = np.array([1, 0, 0])
    loss, cache = cross_entropy.cross_entropy_forward(logits, targets)
    # loss per row: 2e4, 2e4, log 2 (two tied maxima)
    np.testing.assert_allclose(loss, (4e4 + np.log(2.0)) / 3, rtol=RTOL[dtype])
    dlogits = cross_entropy.cross_entropy_backward(1.0, cache)
    np.testing.assert_allclose(dlogits, np.array([[1, -1, 0], [-1, 0, 1], [-0.5, 0.5, 0]]) / 3, atol=RTOL[dtype])


def test_numba_cross_entropy_with_masked_minus_inf_logits_matches_reference():
    logits = np.random.default_rng(0).standard_normal((4, 600))
    logits[:, 1::3] = -np.inf                        # a masked vocabulary; every target is allowed
    logits[2, :] = -np.inf
    logits[2, 599] = 0.0                             # one row with a single allowed class
    targets = np.array([0, 3, 599, 597])
    assert_kernel_matches_reference(cross_entropy, "cross_entropy", [logits, targets], {}, [1.0], np.float64)


def test_numba_cross_entropy_all_targets_ignored_gives_zero_loss_and_zero_gradient():
    loss, cache = cross_entropy.cross_entropy_forward(np.ones((2, 3, 5)), np.full((2, 3), -100))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(cross_entropy.cross_entropy_backward(1.0, cache), 0.0)


def test_numba_cross_entropy_backward_writes_into_the_cache_buffer_once():
    logits = np.random.default_rng(1).standard_normal((3, 4))
    _, cache = cross_entropy.cross_entropy_forward(logits, np.array([0, 1, 2]))
    dlogits = cross_entropy.cross_entropy_backward(1.0, cache)
    assert np.shares_memory(dlogits, cache.dlogits) and not np.shares_memory(dlogits, logits)
    with pytest.raises(RuntimeError, match="already used"):
        cross_entropy.cross_entropy_backward(1.0, cache)


def test_numba_cross_entropy_rejects_bad_targets_like_the_reference():
    logits = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        cross_entropy.cross_entropy_forward(logits, np.array([0, 5]))
    with pytest.raises(TypeError, match="integer"):
        cross_entropy.cross_entropy_forward(logits, np.array([0.0, 1.0]))
    _, cache = cross_entropy.cross_entropy_forward(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="dloss must be a scalar"):
        cross_entropy.cross_entropy_backward(np.ones(2), cache)
    with pytest.raises(TypeError, match="FusedCrossEntropyCache"):
        cross_entropy.cross_entropy_backward(1.0, ref.cross_entropy_forward(logits, np.array([0, 1]))[1])


def test_numba_cross_entropy_backward_passes_gradient_check():
    rng = np.random.default_rng(2)
    targets = np.array([[1, -100, 4], [0, 2, 2]])
    report = check_op(cross_entropy.cross_entropy_forward, cross_entropy.cross_entropy_backward,
                      inputs=[rng.standard_normal((2, 3, 5)), targets])
    assert report.passed, report


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_cross_entropy_parallel_kernel_used_on_large_inputs_matches_the_reference(dtype, parallel_on_any_size):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    rng.standard_normal(x.shape)                     # dy, unused: keeps the targets this test always drew
    targets = rng.integers(0, 33, (5, 9))
    assert_kernel_matches_reference(cross_entropy, "cross_entropy", [x, targets], {}, [1.0], dtype,
                                    out_scales=[max(1.0, float(np.max(np.abs(x))))])


# ---------------------------------------------------------------- CUDA kernels


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cuda_cross_entropy_version_matches_reference_with_ignored_targets(cuda_kernels, version, dtype):
    rng = np.random.default_rng(5)
    logits = random_array(rng, (3, 4, 37), dtype, scale=3.0)      # 12 rows × 37: partial blocks both ways
    targets = rng.integers(0, 37, size=(3, 4))
    targets[0, 1] = targets[1, 2] = -100
    loss, cache = cuda_kernels.MODULES["cross_entropy"].VERSIONS[version](logits, targets)
    loss_ref, cache_ref = ref.cross_entropy_forward(logits, targets)
    assert_cuda_matches(loss.copy_to_host().reshape(()), np.asarray(loss_ref), dtype)
    dlogits = cuda_kernels.cross_entropy_backward(0.7, cache)
    assert_cuda_matches(dlogits, ref.cross_entropy_backward(0.7, cache_ref), dtype)


@pytest.mark.cuda
def test_cuda_cross_entropy_host_op_keeps_reference_contract(cuda_kernels):
    rng = np.random.default_rng(6)
    logits, targets = random_array(rng, (4, 11), np.float32, scale=50.0), np.array([3, 7, 0, 10])
    loss, cache = cuda_kernels.cross_entropy_forward(logits, targets, ignore_index=7)
    loss_ref, cache_ref = ref.cross_entropy_forward(logits, targets, ignore_index=7)
    assert isinstance(loss, np.float32)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    # dloss None means 1.0, as in the reference.
    assert_cuda_matches(cuda_kernels.cross_entropy_backward(None, cache), ref.cross_entropy_backward(None, cache_ref),
                        np.float32)
    with pytest.raises(ValueError, match="targets must lie in"):
        cuda_kernels.cross_entropy_forward(logits, np.array([3, 7, 0, 11]))


@pytest.mark.cuda
def test_cuda_cross_entropy_with_every_target_ignored_is_zero_with_zero_gradient(cuda_kernels):
    logits = np.random.default_rng(7).standard_normal((3, 5))
    loss, cache = cuda_kernels.cross_entropy_forward(logits, np.full(3, -100))
    assert loss == 0.0
    assert not np.any(cuda_kernels.cross_entropy_backward(1.0, cache))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cross_entropy_forward", "cross_entropy_backward"])
def test_cuda_op_has_the_reference_signature(cuda_kernels, name):
    assert inspect.signature(getattr(cuda_kernels, name)) == inspect.signature(getattr(ref, name))
