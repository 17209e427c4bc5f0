"""Numba matmul kernels (v1 naive, v2 tiled, v3 packed micro-kernel) against the reference ``a @ b``.

Every version must give a @ b for shapes that are not multiples of its tiles (1, 3, 17, 65, ...) and
for K longer than one packed panel (KC = 512); ``matmul`` must keep the reference's signature, validate
its inputs and handle batched operands whichever path (BLAS or kernel) it takes.

Tolerance: float64 1e-10, float32 1e-4 relative to √K · max|a| · max|b|, the size of the terms each
entry sums (an entry near 0 is a cancelling sum and carries their rounding); compared with the product
computed in float64.
"""
import inspect
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("numba")
import npllm.layers as ref  # noqa: E402
import npllm_kernels.cpu  # noqa: E402,F401

mm = sys.modules["npllm_kernels.cpu.matmul"]   # the attribute npllm_kernels.cpu.matmul is the function
RTOL = {np.float32: 1e-4, np.float64: 1e-10}


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
def test_every_version_matches_reference_on_small_shapes(seed, dtype, M, K, N, version):
    a, b = _operands(seed, M, K, N, dtype)
    assert_product(mm.VERSIONS[version](a, b), a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(67, 1100, 261), (130, 513, 5), (4, 512, 4), (1, 1030, 1)])
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_tiled_versions_match_reference_across_panels_and_tiles(dtype, M, K, N, version):
    a, b = _operands(0, M, K, N, dtype)
    assert_product(mm.VERSIONS[version](a, b), a, b)


def test_versions_accept_non_contiguous_operands():
    a, b = _operands(1, 30, 20, 40, np.float64)
    for version in mm.VERSIONS.values():
        assert_product(version(a[::2], b[:, ::3]), a[::2], b[:, ::3])
        assert_product(version(b.T, a.T), b.T, a.T)


def test_every_version_is_listed_in_the_module_docstring():
    assert set(mm.VERSIONS) == {"v1", "v2", "v3"}
    for name in mm.VERSIONS:
        assert f"\n{name}: " in mm.__doc__, name
    assert mm.matmul_kernel is mm.matmul_v3


def test_matmul_signature_equals_the_reference():
    assert inspect.signature(mm.matmul) == inspect.signature(ref.matmul)


@pytest.fixture(params=["blas", "kernel"])
def path(request, monkeypatch):
    """Run ``matmul`` down each path: BLAS, and the Numba kernel (by overriding the choice function)."""
    monkeypatch.setattr(mm, "blas_is_faster", lambda M, K, N: request.param == "blas")
    return request.param


@pytest.mark.parametrize("a_shape, b_shape", [((5, 7), (7, 3)), ((2, 3, 5, 7), (7, 4)), ((3, 5, 7), (3, 7, 2)),
                                              ((1, 5, 7), (4, 7, 2)), ((0, 5, 7), (7, 2))])
def test_matmul_handles_batches_on_both_paths(path, a_shape, b_shape):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32)
    c = mm.matmul(a, b)
    np.testing.assert_allclose(c, ref.matmul(a, b), rtol=1e-5, atol=1e-5)
    assert c.dtype == np.float32


@pytest.mark.parametrize("a, b, error, message", [
    (np.ones((2, 3), dtype=np.int64), np.ones((3, 2)), TypeError, "a must have dtype float32 or float64"),
    (np.ones((2, 3)), np.ones((3, 2), dtype=np.float32), TypeError, "share one dtype"),
    (np.ones((2, 3)), np.ones((4, 2)), ValueError, r"a's last dimension must equal b's second-to-last"),
    (np.ones(3), np.ones((3, 2)), ValueError, "at least 2 dimensions"),
    ([[1.0]], np.ones((1, 1)), TypeError, "a must be a numpy.ndarray"),
    (np.ones((2, 2, 3)), np.ones((3, 3, 2)), ValueError, "leading .batch. dimensions must broadcast"),
])
def test_matmul_rejects_bad_operands(path, a, b, error, message):
    with pytest.raises(error, match=message):
        mm.matmul(a, b)


def test_versions_reject_mismatched_inner_dimensions():
    for version in mm.VERSIONS.values():
        with pytest.raises(ValueError, match=r"a's columns must equal b's rows \(K\)"):
            version(np.ones((2, 3)), np.ones((4, 2)))
