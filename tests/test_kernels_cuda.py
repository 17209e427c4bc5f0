"""The CUDA kernels against the NumPy reference (npllm.layers), in Numba's CUDA simulator when there is no GPU.

tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba.cuda is imported when no GPU is present. The
simulator runs every GPU thread as a Python thread, so the shapes are small but chosen to cross tile
edges (17, 33, 40 are multiples of no tile) and to include masks, fully masked rows and Tq ≠ Tk.
Backward kernels are compared with the reference backward, which the reference's own tests
gradient-check; finite differences through the simulator would take far too long.

Tolerances: float64 kernels sum in a different order than NumPy, so rtol 1e-10; float32 rtol 1e-4
(a few ulps times the row length), with a small atol for entries that cancel to ~0.
"""
import inspect
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.cuda
pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install -e .[cuda])")

import npllm  # noqa: E402
import npllm.layers as ref  # noqa: E402
from npllm.backend import ops  # noqa: E402

kernels = pytest.importorskip("npllm_kernels.cuda")
from numba import cuda  # noqa: E402

DTYPES = [np.float32, np.float64]
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True, scope="module")
def fast_simulator_threads():
    """The simulator's threads hand the GIL over at barriers; a short switch interval makes that ~4× faster."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(previous)


def assert_matches(actual, desired, dtype):
    assert actual.dtype == desired.dtype == np.dtype(dtype)
    assert actual.shape == desired.shape
    np.testing.assert_allclose(actual, desired, **TOLERANCE[dtype])


def random(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ---------------------------------------------------------------- matmul


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_matmul_version_matches_reference_on_partial_tiles(version, dtype):
    rng = np.random.default_rng(0)
    a, b = random(rng, (1, 17, 33), dtype), random(rng, (1, 33, 20), dtype)
    c = kernels.MODULES["matmul"].VERSIONS[version](a, b).copy_to_host()
    assert_matches(c, ref.matmul(a, b), dtype)


def test_matmul_v3_spans_several_blocks_and_batches():
    rng = np.random.default_rng(1)
    a, b = random(rng, (2, 130, 9), np.float64), random(rng, (2, 9, 3), np.float64)
    c = kernels.MODULES["matmul"].matmul_v3(a, b).copy_to_host()
    assert_matches(c, a @ b, np.float64)


def test_matmul_host_broadcasts_batches_and_vectors_like_numpy():
    rng = np.random.default_rng(2)
    x, W = random(rng, (2, 3, 5), np.float32), random(rng, (5, 4), np.float32)
    assert_matches(kernels.matmul(x, W), ref.matmul(x, W), np.float32)
    v = random(rng, (5,), np.float64)
    assert_matches(kernels.matmul(W.astype(np.float64), v[:4]), W.astype(np.float64) @ v[:4], np.float64)
    assert_matches(kernels.matmul(v, W.astype(np.float64)), v @ W.astype(np.float64), np.float64)
    assert kernels.matmul(x, W.astype(np.float64)).dtype == np.float64   # NumPy's promotion


def test_matmul_rejects_mismatched_inner_sizes_and_integers():
    """The reference's checks (the full table of rejections: tests/test_kernels_cpu_matmul.py)."""
    with pytest.raises(ValueError, match=r"a's last axis must equal b's second-to-last axis \(K\)"):
        kernels.matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(TypeError, match="a must have dtype float32 or float64, got int64"):
        kernels.matmul(np.ones((2, 3), dtype=np.int64), np.ones((3, 2)))


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_softmax_version_matches_reference_with_minus_inf_entries(version, dtype):
    rng = np.random.default_rng(3)
    x = random(rng, (5, 37), dtype, scale=4.0)
    x[0, :6] = -np.inf          # masked logits: probability exactly 0
    x[1, 30:] = 1e4             # large logits: the max subtraction keeps exp finite
    y = kernels.MODULES["softmax"].VERSIONS[version](x).copy_to_host()
    assert_matches(y, ref.softmax_forward(x)[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_softmax_forward_and_backward_along_a_middle_axis_match_reference(dtype):
    rng = np.random.default_rng(4)
    x, dy = random(rng, (2, 37, 3), dtype), random(rng, (2, 37, 3), dtype)
    y, cache = kernels.softmax_forward(x, axis=1)
    y_ref, cache_ref = ref.softmax_forward(x, axis=1)
    assert_matches(y, y_ref, dtype)
    assert_matches(kernels.softmax_backward(dy, cache), ref.softmax_backward(dy, cache_ref), dtype)
    assert_matches(kernels.softmax_backward(None, cache), np.zeros_like(x), dtype)


# ---------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cross_entropy_version_matches_reference_with_ignored_targets(version, dtype):
    rng = np.random.default_rng(5)
    logits = random(rng, (3, 4, 37), dtype, scale=3.0)      # 12 rows × 37: partial blocks both ways
    targets = rng.integers(0, 37, size=(3, 4))
    targets[0, 1] = targets[1, 2] = -100
    loss, cache = kernels.MODULES["cross_entropy"].VERSIONS[version](logits, targets)
    loss_ref, cache_ref = ref.cross_entropy_forward(logits, targets)
    assert_matches(loss.copy_to_host().reshape(()), np.asarray(loss_ref), dtype)
    dlogits = kernels.cross_entropy_backward(0.7, cache)
    assert_matches(dlogits, ref.cross_entropy_backward(0.7, cache_ref), dtype)


def test_cross_entropy_host_op_keeps_reference_contract():
    rng = np.random.default_rng(6)
    logits, targets = random(rng, (4, 11), np.float32, scale=50.0), np.array([3, 7, 0, 10])
    loss, cache = kernels.cross_entropy_forward(logits, targets, ignore_index=7)
    loss_ref, cache_ref = ref.cross_entropy_forward(logits, targets, ignore_index=7)
    assert isinstance(loss, np.float32)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    # dloss None means 1.0, as in the reference.
    assert_matches(kernels.cross_entropy_backward(None, cache), ref.cross_entropy_backward(None, cache_ref),
                   np.float32)
    with pytest.raises(ValueError, match="targets must lie in"):
        kernels.cross_entropy_forward(logits, np.array([3, 7, 0, 11]))


def test_cross_entropy_with_every_target_ignored_is_zero_with_zero_gradient():
    logits = np.random.default_rng(7).standard_normal((3, 5))
    loss, cache = kernels.cross_entropy_forward(logits, np.full(3, -100))
    assert loss == 0.0
    assert not np.any(kernels.cross_entropy_backward(1.0, cache))


# ---------------------------------------------------------------- attention

ATTENTION_CASES = {
    # name: (B, H, Tq, Tk, d, dv, mask shape or None, causal)
    "causal_square_T40": (1, 2, 40, 40, 8, 8, None, True),
    "cross_Tq17_Tk33_dv_neq_d": (1, 2, 17, 33, 8, 12, None, False),
    "kv_cache_causal_with_head_mask": (2, 2, 17, 33, 8, 12, (1, 2, 1, 33), True),
    "more_queries_than_keys_causal": (1, 1, 33, 17, 5, 4, None, True),
    "full_2d_mask": (1, 1, 17, 33, 5, 4, (17, 33), False),
    "head_size_at_the_cap": (1, 1, 9, 11, 128, 128, None, True),
}


def attention_inputs(case, dtype, seed=8):
    B, H, Tq, Tk, d, dv, mask_shape, causal = ATTENTION_CASES[case]
    rng = np.random.default_rng(seed)
    q, k, v = random(rng, (B, H, Tq, d), dtype), random(rng, (B, H, Tk, d), dtype), random(rng, (B, H, Tk, dv), dtype)
    dout = random(rng, (B, H, Tq, dv), dtype)
    mask = None
    if mask_shape is not None:
        mask = rng.random(mask_shape) > 0.3
        mask[(0,) * (len(mask_shape) - 1)] = False    # one fully masked row (or head)
    return q, k, v, dout, mask, causal


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_forward_and_backward_match_reference(case, dtype):
    q, k, v, dout, mask, causal = attention_inputs(case, dtype)
    out, cache = kernels.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
    out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
    assert_matches(out, out_ref, dtype)
    grads = kernels.scaled_dot_product_attention_backward(dout, cache)
    for grad, grad_ref in zip(grads, ref.scaled_dot_product_attention_backward(dout, cache_ref)):   # dq, dk, dv
        assert_matches(grad, grad_ref, dtype)


def test_attention_fully_masked_row_is_zero_and_passes_no_gradient():
    q, k, v, dout, _, _ = attention_inputs("full_2d_mask", np.float64)
    mask = np.ones((17, 33), dtype=bool)
    mask[4] = False
    out, cache = kernels.scaled_dot_product_attention_forward(q, k, v, mask=mask)
    dq, dk, dv = kernels.scaled_dot_product_attention_backward(dout, cache)
    assert np.all(np.isfinite(out)) and np.all(out[:, :, 4] == 0)
    assert np.all(dq[:, :, 4] == 0)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv))


def test_attention_without_upstream_gradient_returns_zeros():
    q, k, v, _, _, _ = attention_inputs("cross_Tq17_Tk33_dv_neq_d", np.float32)
    _, cache = kernels.scaled_dot_product_attention_forward(q, k, v)
    assert all(not np.any(g) for g in kernels.scaled_dot_product_attention_backward(None, cache))


def test_attention_rejects_head_sizes_over_the_cap_and_bad_masks():
    cap = kernels.MODULES["attention"].HEAD_DIM_MAX
    big = np.zeros((1, 1, 2, cap + 1), dtype=np.float32)
    with pytest.raises(ValueError, match=f"head sizes up to {cap}"):
        kernels.scaled_dot_product_attention_forward(big, big, big)
    q = np.zeros((1, 1, 2, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="mask must be a bool"):
        kernels.scaled_dot_product_attention_forward(q, q, q, mask=np.ones((2, 2), dtype=np.int8))
    with pytest.raises(ValueError, match="broadcastable"):
        kernels.scaled_dot_product_attention_forward(q, q, q, mask=np.ones((3, 2), dtype=bool))


# ---------------------------------------------------------------- device path and backend


def test_device_functions_take_and_return_device_arrays():
    rng = np.random.default_rng(9)
    a, b = cuda.to_device(random(rng, (1, 5, 7), np.float32)), cuda.to_device(random(rng, (1, 7, 3), np.float32))
    c = kernels.matmul_device(a, b)
    assert not isinstance(c, np.ndarray) and getattr(c, "__cuda_ndarray__", False)
    assert_matches(c.copy_to_host(), a.copy_to_host() @ b.copy_to_host(), np.float32)
    q, k, v, dout, _, _ = attention_inputs("cross_Tq17_Tk33_dv_neq_d", np.float32)
    out, cache = kernels.scaled_dot_product_attention_forward_device(cuda.to_device(q), cuda.to_device(k),
                                                                     cuda.to_device(v))
    dq, dk, dv = kernels.scaled_dot_product_attention_backward_device(cuda.to_device(dout), cache)
    out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v)
    assert_matches(out.copy_to_host(), out_ref, np.float32)
    assert_matches(dv.copy_to_host(), ref.scaled_dot_product_attention_backward(dout, cache_ref)[2], np.float32)


@pytest.mark.skipif(bool(cuda.config.ENABLE_CUDASIM), reason="the CUDA simulator has no __cuda_array_interface__")
def test_device_functions_accept_any_cuda_array_interface_object():
    class Foreign:
        """Another library's GPU array (CuPy, PyTorch): only the interface, no Numba type."""
        def __init__(self, array):
            self.keep_alive = array
            self.__cuda_array_interface__ = array.__cuda_array_interface__

    rng = np.random.default_rng(10)
    a, b = random(rng, (5, 7), np.float32), random(rng, (7, 3), np.float32)
    c = kernels.matmul_device(Foreign(cuda.to_device(a)), Foreign(cuda.to_device(b)))
    assert_matches(c.copy_to_host(), a @ b, np.float32)


OPS = ["matmul", "softmax_forward", "softmax_backward", "cross_entropy_forward", "cross_entropy_backward",
       "scaled_dot_product_attention_forward", "scaled_dot_product_attention_backward"]


@pytest.mark.parametrize("name", OPS)
def test_cuda_op_has_the_reference_signature(name):
    assert inspect.signature(getattr(kernels, name)) == inspect.signature(getattr(ref, name))


def test_backend_runs_cuda_ops_and_sends_their_caches_back_to_cuda():
    q, k, v, dout, _, _ = attention_inputs("causal_square_T40", np.float64)
    with npllm.use_backend("cuda"):
        out, cache = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)
    assert isinstance(cache, kernels.AttentionCache)
    grads = ops.scaled_dot_product_attention_backward(dout, cache)   # dispatched by the cache's type
    out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v, causal=True)
    assert_matches(out, out_ref, np.float64)
    assert_matches(grads[0], ref.scaled_dot_product_attention_backward(dout, cache_ref)[0], np.float64)


def test_bench_sections_validate_then_time_every_version_on_tiny_sizes():
    bench = pytest.importorskip("npllm_kernels.cuda.bench")
    matmul_row, = bench.section_matmul((20,), reps=1, inner=1)
    assert all(matmul_row[f"{v}_max_rel_error"] < 1e-5 and matmul_row[f"{v}_ms"] > 0 for v in ("v1", "v2", "v3"))
    attention_row, = bench.section_attention((20,), shape=dict(B=1, H=2, d=8), reps=1, inner=1)
    assert attention_row["max_rel_error"] < 1e-5 and attention_row["forward_backward_ms"] > 0
    assert "reference_cpu_ms" in attention_row
    ce_row, = bench.section_cross_entropy((3, 11), reps=1, inner=1)
    assert ce_row["v1_max_rel_error"] < 1e-5 and ce_row["v2_max_rel_error"] < 1e-5 and ce_row["backward_ms"] > 0
