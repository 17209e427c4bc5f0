"""Matmul: the Numba kernels (v1 naive, v2 tiled, v3 packed micro-kernel), every backend's ``matmul``, and CUDA's.

Every Numba version must give a @ b for shapes that are not multiples of its tiles (1, 3, 17, 65, ...) and
for K longer than one packed panel (KC = 512); every backend's ``matmul`` must keep the reference's
signature and accept, reject and compute exactly what the reference ``npllm.layers.matmul`` does.  The
CUDA versions (in Numba's simulator without a GPU) run on partial tiles, several blocks and batches.

Tolerance: float64 1e-10, float32 1e-4 relative to √K · max|a| · max|b|, the size of the terms each
entry sums (an entry near 0 is a cancelling sum and carries their rounding); compared with the product
computed in float64.  CUDA: ``tests/_helpers.py``.
"""
import inspect
import sys

import numpy as np
import pytest
from _helpers import KERNEL_BACKENDS, RTOL, assert_cuda_matches, random_array
from hypothesis import given
from hypothesis import strategies as st

import npllm.layers as ref
import npllm_kernels.cpu  # noqa: F401

mm = sys.modules["npllm_kernels.cpu.matmul"]   # the attribute npllm_kernels.cpu.matmul is the function


# ---------------------------------------------------------------- Numba versions


def assert_product(c, a, b):
    """c equals a @ b (computed in float64) to the dtype's tolerance, with c in a's dtype."""
    dtype = a.dtype.type
    expected = a.astype(np.float64) @ b.astype(np.float64)
    assert c.dtype == dtype and c.shape == expected.shape
    scale = np.sqrt(a.shape[-1]) * np.max(np.abs(a), initial=0.0) * np.max(np.abs(b), initial=0.0)
    np.testing.assert_allclose(c, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def _operands(seed, M, K, N, dtype):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       M=st.integers(1, 70), K=st.integers(1, 70), N=st.integers(1, 70),
       version=st.sampled_from(sorted(mm.VERSIONS)))
def test_numba_every_version_matches_reference_on_small_shapes(seed, dtype, M, K, N, version):
    a, b = _operands(seed, M, K, N, dtype)
    assert_product(mm.VERSIONS[version](a, b), a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(67, 1100, 261), (130, 513, 5), (4, 512, 4), (1, 1030, 1)])
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_numba_tiled_versions_match_reference_across_panels_and_tiles(dtype, M, K, N, version):
    a, b = _operands(0, M, K, N, dtype)
    assert_product(mm.VERSIONS[version](a, b), a, b)


def test_numba_versions_accept_non_contiguous_operands():
    a, b = _operands(1, 30, 20, 40, np.float64)
    for version in mm.VERSIONS.values():
        assert_product(version(a[::2], b[:, ::3]), a[::2], b[:, ::3])
        assert_product(version(b.T, a.T), b.T, a.T)


def test_numba_every_version_is_listed_in_the_module_docstring():
    assert set(mm.VERSIONS) == {"v1", "v2", "v3"}
    for name in mm.VERSIONS:
        assert f"\n{name}: " in mm.__doc__, name
    assert mm.matmul_kernel is mm.matmul_v3


def test_numba_matmul_signature_equals_the_reference():
    assert inspect.signature(mm.matmul) == inspect.signature(ref.matmul)


# ---------------------------------------------------------------- matmul: one contract, every backend
# ``check_matmul_operands`` states it: float32/float64 ndarrays with at least one axis, NumPy's ``@``
# semantics (1-D vectors, broadcast batch axes, float32 @ float64 promoted); anything else raises
# TypeError (type, dtype) or ValueError (shape) naming a or b.  Every backend runs that one check.


def _outcome(fn, a, b):
    """("ok", result) or (error type, message) of fn(a, b)."""
    try:
        return "ok", fn(a, b)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


_SIZES = st.sampled_from([1, 2, 3, 5, 17])


@st.composite
def _operand_pairs(draw):
    """Two operands of 1-4 axes whose K and batch axes agree, broadcast, or (sometimes) do not."""
    a_ndim, b_ndim = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    M, K, N = draw(_SIZES), draw(_SIZES), draw(_SIZES)
    batch = draw(st.lists(st.sampled_from([2, 3]), min_size=2, max_size=2))   # few: the simulator runs each
    a_batch = [draw(st.sampled_from([n, 1])) for n in batch[4 - a_ndim:]][:max(0, a_ndim - 2)]
    b_batch = [draw(st.sampled_from([n, 1])) for n in batch[4 - b_ndim:]][:max(0, b_ndim - 2)]
    b_k = K
    if draw(st.integers(0, 4)) == 0:                      # a mismatch: a different K or batch size
        if b_batch and draw(st.booleans()):
            b_batch[0] += 1 if b_batch[0] > 1 else 2
        else:
            b_k = K + 1
    return _arrays(draw, a_batch, a_ndim, M, K, b_batch, b_ndim, b_k, N)


def _arrays(draw, a_batch, a_ndim, M, K, b_batch, b_ndim, b_k, N):
    a_shape = (K,) if a_ndim == 1 else tuple(a_batch) + (M, K)
    b_shape = (b_k,) if b_ndim == 1 else tuple(b_batch) + (b_k, N)
    dtypes = st.sampled_from([np.float32, np.float64])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.standard_normal(a_shape).astype(draw(dtypes)), rng.standard_normal(b_shape).astype(draw(dtypes)))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, indirect=True)
@given(operands=_operand_pairs())
def test_matmul_accepts_and_rejects_what_the_reference_does_and_agrees_in_value(backend, operands):
    a, b = operands
    kernel_status, kernel_result = _outcome(backend.matmul, a, b)
    ref_status, ref_result = _outcome(ref.matmul, a, b)
    assert kernel_status == ref_status, (kernel_result, ref_result)
    if ref_status != "ok":
        assert kernel_result == ref_result                # the same message, from the one shared check
        return
    assert np.shape(kernel_result) == (a @ b).shape and kernel_result.dtype == np.result_type(a, b)
    # The promoted product in float64; tolerance relative to √K · max|a| · max|b|, the size of the terms.
    promoted = np.result_type(a, b).type
    desired = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.sqrt(a.shape[-1]) * np.max(np.abs(a)) * np.max(np.abs(b))
    np.testing.assert_allclose(kernel_result, desired, rtol=RTOL[promoted], atol=RTOL[promoted] * scale)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, indirect=True)
@pytest.mark.parametrize("a, b, error, message", [
    (np.ones((2, 3), dtype=np.int64), np.ones((3, 2)), TypeError, "a must have dtype float32 or float64, got int64"),
    (np.ones((2, 3)), np.ones((3, 2), dtype=np.float16), TypeError, "b must have dtype float32 or float64"),
    (np.ones((2, 3)), np.ones((4, 2)), ValueError, r"a's last axis must equal b's second-to-last axis \(K\)"),
    (np.ones(3), np.ones(4), ValueError, r"a's last axis must equal b's only axis \(K\)"),
    (np.ones(()), np.ones((1, 1)), ValueError, r"a must have at least 1 dimension"),
    (np.ones((1, 1)), np.float64(2.0), TypeError, "b must be a numpy.ndarray"),
    ([[1.0]], np.ones((1, 1)), TypeError, "a must be a numpy.ndarray"),
    (np.ones((2, 2, 3)), np.ones((3, 3, 2)), ValueError, "batch axes .* must broadcast"),
])
def test_matmul_rejects_bad_operands_like_the_reference(backend, a, b, error, message):
    for fn in (ref.matmul, backend.matmul):
        with pytest.raises(error, match=message):
            fn(a, b)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, indirect=True)
def test_matmul_takes_vectors_batches_and_mixed_dtypes_as_numpy_does(backend):
    """What the old numba matmul rejected (1-D operands, float32 @ float64) is now NumPy's answer."""
    matmul = backend.matmul
    rng = np.random.default_rng(3)
    v, W, x = rng.standard_normal(5), rng.standard_normal((5, 4)), rng.standard_normal((2, 3, 5)).astype(np.float32)
    for a, b in [(v, W), (W.T, v), (v, v), (x, W), (x, v), (np.ones((0, 5, 5)), W)]:
        c = matmul(a, b)
        assert c.shape == (a @ b).shape and c.dtype == np.result_type(a, b)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_numba_versions_reject_mismatched_inner_dimensions():
    for version in mm.VERSIONS.values():
        with pytest.raises(ValueError, match=r"a's columns must equal b's rows \(K\)"):
            version(np.ones((2, 3)), np.ones((4, 2)))


# ---------------------------------------------------------------- CUDA kernels


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_cuda_matmul_version_matches_reference_on_partial_tiles(cuda_kernels, version, dtype):
    rng = np.random.default_rng(0)
    a, b = random_array(rng, (1, 17, 33), dtype), random_array(rng, (1, 33, 20), dtype)
    c = cuda_kernels.MODULES["matmul"].VERSIONS[version](a, b).copy_to_host()
    assert_cuda_matches(c, ref.matmul(a, b), dtype)


@pytest.mark.cuda
def test_cuda_matmul_v3_spans_several_blocks_and_batches(cuda_kernels):
    rng = np.random.default_rng(1)
    a, b = random_array(rng, (2, 130, 9), np.float64), random_array(rng, (2, 9, 3), np.float64)
    c = cuda_kernels.MODULES["matmul"].matmul_v3(a, b).copy_to_host()
    assert_cuda_matches(c, a @ b, np.float64)


@pytest.mark.cuda
def test_cuda_matmul_host_broadcasts_batches_and_vectors_like_numpy(cuda_kernels):
    rng = np.random.default_rng(2)
    x, W = random_array(rng, (2, 3, 5), np.float32), random_array(rng, (5, 4), np.float32)
    assert_cuda_matches(cuda_kernels.matmul(x, W), ref.matmul(x, W), np.float32)
    v = random_array(rng, (5,), np.float64)
    assert_cuda_matches(cuda_kernels.matmul(W.astype(np.float64), v[:4]), W.astype(np.float64) @ v[:4], np.float64)
    assert_cuda_matches(cuda_kernels.matmul(v, W.astype(np.float64)), v @ W.astype(np.float64), np.float64)
    assert cuda_kernels.matmul(x, W.astype(np.float64)).dtype == np.float64   # NumPy's promotion


@pytest.mark.cuda
def test_cuda_matmul_rejects_mismatched_inner_sizes_and_integers(cuda_kernels):
    """The reference's checks (the full table of rejections: test_matmul_rejects_bad_operands_like_the_reference)."""
    with pytest.raises(ValueError, match=r"a's last axis must equal b's second-to-last axis \(K\)"):
        cuda_kernels.matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(TypeError, match="a must have dtype float32 or float64, got int64"):
        cuda_kernels.matmul(np.ones((2, 3), dtype=np.int64), np.ones((3, 2)))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["matmul"])
def test_cuda_op_has_the_reference_signature(cuda_kernels, name):
    assert inspect.signature(getattr(cuda_kernels, name)) == inspect.signature(getattr(ref, name))


@pytest.mark.cuda
def test_cuda_device_functions_accept_any_cuda_array_interface_object(cuda_kernels):
    from numba import cuda
    if cuda.config.ENABLE_CUDASIM:
        pytest.skip("the CUDA simulator has no __cuda_array_interface__")

    class Foreign:
        """Another library's GPU array (CuPy, PyTorch): only the interface, no Numba type."""
        def __init__(self, array):
            self.keep_alive = array
            self.__cuda_array_interface__ = array.__cuda_array_interface__

    rng = np.random.default_rng(10)
    a, b = random_array(rng, (5, 7), np.float32), random_array(rng, (7, 3), np.float32)
    c = cuda_kernels.matmul_device(Foreign(cuda.to_device(a)), Foreign(cuda.to_device(b)))
    assert_cuda_matches(c.copy_to_host(), a @ b, np.float32)
