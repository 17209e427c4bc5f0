"""Embedding (a row lookup, i.e. a one-hot matmul): the reference's values, errors and gradients, and Numba's.

Reference (``npllm.layers.embedding``): ids index rows of W; the backward adds the gradients of repeated
ids.  The Numba kernel (``npllm_kernels.cpu.embedding``, a scatter-add backward) must give the reference's
rows and gradient (repeated ids accumulate), in the input's dtype, leave its inputs untouched, keep the
reference's signatures and errors, and pass a float64 gradient check.  Tolerances: float64 1e-12,
float32 1e-6 (a row lookup is exact; the backward's sums are short).
"""
import inspect
import re

import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases
from hypothesis import given
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.backend import ops, use_backend
from npllm.gradcheck import check_op
from npllm_kernels.cpu import embedding

EMBEDDING_RTOL = {np.float32: 1e-6, np.float64: 1e-12}
rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


# ---------------------------------------------------------------- reference


def test_embedding_is_a_one_hot_matmul():
    W = np.random.default_rng(0).standard_normal((5, 3))
    ids = np.array([[4, 0, 4]])
    y, cache = ref.embedding_forward(ids, W)
    np.testing.assert_array_equal(y, np.eye(5)[ids] @ W)
    dW = ref.embedding_backward(np.ones((1, 3, 3)), cache)
    np.testing.assert_array_equal(dW[4], 2.0)     # looked up twice: gradients add
    np.testing.assert_array_equal(dW[1], 0.0)


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.embedding_forward(np.array([0.0, 1.0]), f64(4, 3)), TypeError, "ids must have an integer dtype.*float64"),
    (lambda: ref.embedding_forward(np.array([0, 4]), f64(4, 3)), ValueError, r"ids must lie in \[0, 4\), got a value of 4"),
    (lambda: ref.embedding_forward(np.array([-1]), f64(4, 3)), ValueError, r"ids must lie in \[0, 4\), got a value of -1"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("embedding"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


# ---------------------------------------------------------------- Numba: the scatter-add kernel


@given(V=st.integers(1, 9), D=st.integers(1, 17), ids_shape=st.lists(st.integers(0, 6), min_size=1, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64]), id_dtype=st.sampled_from([np.int64, np.int32, np.uint8]),
       seed=st.integers(0, 2**32 - 1))
def test_numba_embedding_matches_the_reference_including_repeated_ids(V, D, ids_shape, dtype, id_dtype, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, ids_shape).astype(id_dtype)   # V ≤ 9 and up to 216 ids: repeats are the rule
    W = rng.standard_normal((V, D)).astype(dtype)
    dy = rng.standard_normal(tuple(ids_shape) + (D,)).astype(dtype)
    originals = [ids.copy(), W.copy(), dy.copy()]
    y, cache = embedding.embedding_forward(ids, W)
    ref_y, ref_cache = ref.embedding_forward(ids, W)
    assert y.dtype == dtype and np.array_equal(y, ref_y)
    dW = embedding.embedding_backward(dy, cache)
    ref_dW = ref.embedding_backward(dy.astype(np.float64), ref_cache)
    assert dW.dtype == dtype and dW.shape == (V, D)
    np.testing.assert_allclose(dW, ref_dW, rtol=EMBEDDING_RTOL[dtype],
                               atol=EMBEDDING_RTOL[dtype] * max(1.0, np.abs(ref_dW).max(initial=0)))
    for before, after in zip(originals, [ids, W, dy]):
        assert np.array_equal(before, after), "an input was modified"


def test_numba_embedding_repeated_ids_accumulate_and_unused_rows_stay_zero():
    W = np.zeros((4, 2), np.float32)
    _, cache = embedding.embedding_forward(np.array([[1, 1], [3, 1]]), W)
    dy = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    expected = np.array([[0, 0], [0 + 2 + 6, 1 + 3 + 7], [0, 0], [4, 5]], np.float32)
    np.testing.assert_array_equal(embedding.embedding_backward(dy, cache), expected)


def test_numba_embedding_no_upstream_gradient_gives_zeros_and_non_contiguous_dy_works():
    W = np.ones((5, 3))
    ids = np.array([0, 4, 4])
    _, cache = embedding.embedding_forward(ids, W)
    np.testing.assert_array_equal(embedding.embedding_backward(None, cache), np.zeros((5, 3)))
    dy = np.asfortranarray(np.arange(9.0).reshape(3, 3))
    np.testing.assert_array_equal(embedding.embedding_backward(dy, cache),
                                  ref.embedding_backward(dy, ref.embedding_forward(ids, W)[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_embedding_passes_the_gradient_check(dtype):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, (3, 4))
    report = check_op(embedding.embedding_forward, embedding.embedding_backward,
                      [ids, rng.standard_normal((5, 6)).astype(dtype)], names=["ids", "W"])
    assert report.passed, report


def test_numba_embedding_errors_match_the_reference():
    _, cache = embedding.embedding_forward(np.array([0, 1]), np.ones((2, 3)))
    for bad_call in (lambda m: m.embedding_forward(np.array([2]), np.ones((2, 3))),
                     lambda m: m.embedding_forward(np.array([0.5]), np.ones((2, 3))),
                     lambda m: m.embedding_forward(np.array([0]), np.ones(3))):
        with pytest.raises(Exception) as expected:
            bad_call(ref)
        with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
            bad_call(embedding)
    with pytest.raises(ValueError, match="shape"):
        embedding.embedding_backward(np.ones((3, 3)), cache)
    with pytest.raises(TypeError, match="ScatterEmbeddingCache"):
        embedding.embedding_backward(np.ones((2, 3)), ref.embedding_forward(np.array([0, 1]), np.ones((2, 3)))[1])


def test_numba_embedding_signatures_equal_the_reference_and_the_numba_backend_uses_the_kernel():
    for name in ("embedding_forward", "embedding_backward"):
        assert inspect.signature(getattr(embedding, name)) == inspect.signature(getattr(ref, name)), name
    with use_backend("numba"):
        _, cache = ops.embedding_forward(np.array([1, 0]), np.ones((2, 3), np.float32))
        assert isinstance(cache, embedding.ScatterEmbeddingCache)
        assert ops.embedding_backward(np.ones((2, 3), np.float32), cache).dtype == np.float32
