"""RMSNorm (``rms_norm``): the reference against Hugging Face's formula, its properties, errors and float64
gradient checks; the Numba and CUDA kernels against the reference.

Kernels: hypothesis-drawn shapes (odd row counts, C from 1 to 40), float32 and float64, compared with
the reference evaluated in float64 on the same inputs (the exact answer up to rounding): float64 to 1e-10,
float32 to 1e-4 relative to the largest entry (an entry near 0 carries its row's rounding).  Every kernel
backward is gradient-checked in float64 (≤ 1e-7) on the suite's cases, keeps the reference's errors and
signature, and puts NaN/inf where the reference does.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from _helpers import assert_close, assert_same_bad_values, kernel_module
from hypothesis import strategies as st

from npllm import layers as L
from npllm.gradcheck import check_op
from npllm.gradcheck_suite import _on_backend, check_case, op_cases

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731
KERNEL_BACKENDS = [pytest.param("numba", id="numba"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]






# ---- reference: values and properties ------------------------------------------------------------

def test_rms_norm_matches_hugging_faces_llama_rms_norm():
    x, weight = f64(2, 3, 8), f64(8)
    y, _ = L.rms_norm_forward(x, weight, eps=1e-6)
    # LlamaRMSNorm: weight * (x * rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    for b in range(2):
        for t in range(3):
            row = x[b, t]
            expected = weight * (row / np.sqrt(np.sum(row ** 2) / 8 + 1e-6))
            np.testing.assert_allclose(y[b, t], expected, rtol=1e-13)


def test_rms_norm_does_not_subtract_the_mean():
    x = np.full((1, 4), 3.0)
    y, _ = L.rms_norm_forward(x, np.ones(4), eps=1e-12)
    np.testing.assert_allclose(y, np.ones((1, 4)), rtol=1e-12)   # layer norm would give zeros


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_computes_in_the_input_dtype(dtype):
    x = f64(2, 3, 4).astype(dtype)
    y, cache = L.rms_norm_forward(x, np.ones(4, dtype))
    assert y.dtype == dtype and all(g.dtype == dtype for g in L.rms_norm_backward(y, cache))


@settings(max_examples=20)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9)), seed=st.integers(0, 999),
       scale=st.floats(1e-2, 1e3))
def test_rms_norm_output_has_unit_rms_times_weight(shape, seed, scale):
    r = np.random.default_rng(seed)
    x, weight = scale * r.standard_normal(shape), r.uniform(0.5, 2.0, shape[-1])
    y, _ = L.rms_norm_forward(x, weight, eps=1e-12)
    rms = np.sqrt(np.mean((y / weight) ** 2, axis=-1))
    np.testing.assert_allclose(rms, 1.0, rtol=1e-6)   # eps=1e-12 against mean(x²) ≥ ~1e-10 here


# ---- reference: errors ---------------------------------------------------------------------------

BAD_CALLS = [
    ((f64(2, 4), f64(3)), {}, ValueError, r"weight must have shape \(4,\), got \(3,\)"),
    ((f64(2, 4), f64(4)), {"eps": 0.0}, ValueError, "eps must be > 0, got 0.0"),
    ((f64(2, 4), f64(4).astype(np.float32)), {}, TypeError, "must share one dtype"),
    ((np.arange(4), f64(4)), {}, TypeError, "x must have dtype float32 or float64, got int64"),
]


@pytest.mark.parametrize("args,kwargs,error,message", BAD_CALLS)
def test_rms_norm_bad_input_raises_a_clear_error(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        L.rms_norm_forward(*args, **kwargs)


# ---- reference: gradient checks (float64, ≤ 1e-7) ------------------------------------------------

SUITE = op_cases("rms_norm", np.random.default_rng(2))


@pytest.mark.parametrize("case", SUITE, ids=[c.label for c in SUITE])
def test_rms_norm_suite_cases_pass_the_gradient_check(case):
    report = check_case(case)
    assert report.passed and report.max_error <= 1e-7, str(report)


@settings(max_examples=15)
@given(B=st.integers(1, 2), T=st.integers(1, 5), C=st.integers(2, 6), eps=st.sampled_from([1e-6, 1e-5, 1e-2]),
       seed=st.integers(0, 999))
def test_rms_norm_backward_on_random_shapes(B, T, C, eps, seed):
    # C ≥ 2: with C = 1, y = x / √(x² + ε) is flat up to ε (dx ≈ ε / |x|³), so the whole gradient is
    # the size of the finite differences' round-off and no relative error can be small.
    r = np.random.default_rng(seed)
    report = check_op(L.rms_norm_forward, L.rms_norm_backward, [r.standard_normal((B, T, C)), r.standard_normal(C)],
                      {"eps": eps})
    assert report.passed, str(report)


# ---- kernels -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_rms_norm_kernels_have_the_reference_signature(backend):
    module = kernel_module(backend)
    for name in ("rms_norm_forward", "rms_norm_backward"):
        assert inspect.signature(getattr(module, name)) == inspect.signature(getattr(L, name))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@settings(max_examples=10)
@given(lead=st.sampled_from([(1,), (3,), (2, 5), (1, 7)]), C=st.integers(1, 40), eps=st.sampled_from([1e-6, 1e-2]),
       seed=st.integers(0, 999))
def test_rms_norm_kernel_matches_the_reference(backend, dtype, lead, C, eps, seed):
    module = kernel_module(backend)
    r = np.random.default_rng(seed)
    x, weight, dy = (r.standard_normal(s).astype(dtype) for s in (lead + (C,), (C,), lead + (C,)))
    y, cache = module.rms_norm_forward(x, weight, eps)
    y_ref, cache_ref = L.rms_norm_forward(x.astype(np.float64), weight.astype(np.float64), eps)
    assert_close(y, y_ref, dtype)
    # dx = r (g − x̂ mean(g x̂)) and dw = Σ dy x̂ cancel (C = 1: x̂² ≈ 1): compare at the size of their terms.
    dx_terms = float(np.max(np.abs(dy * weight) * cache_ref.rstd))
    dw_terms = float(np.max(np.sum(np.abs(dy * cache_ref.xhat).reshape(-1, C), axis=0)))
    dx, dweight = module.rms_norm_backward(dy, cache)
    dx_ref, dweight_ref = L.rms_norm_backward(dy.astype(np.float64), cache_ref)
    assert_close(dx, dx_ref, dtype, scale=dx_terms)
    assert_close(dweight, dweight_ref, dtype, scale=dw_terms)


def test_rms_norm_numba_parallel_kernel_matches_the_reference():
    # 600 × 512 elements: above PARALLEL_MIN_WORK, so the parallel kernels (not the serial twins) run.
    module = kernel_module("numba")
    x, weight, dy = f64(600, 512), f64(512), f64(600, 512)
    y, cache = module.rms_norm_forward(x, weight)
    y_ref, cache_ref = L.rms_norm_forward(x, weight)
    assert_close(y, y_ref, np.float64)
    for grad, grad_ref in zip(module.rms_norm_backward(dy, cache), L.rms_norm_backward(dy, cache_ref)):
        assert_close(grad, grad_ref, np.float64)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", SUITE, ids=[c.label for c in SUITE])
def test_rms_norm_kernel_passes_the_gradient_check(backend, case):
    kernel_case = _on_backend(case, kernel_module(backend))
    report = check_case(kernel_case)
    assert report.passed and report.max_error <= 1e-7, str(report)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("args,kwargs,error,message", BAD_CALLS)
def test_rms_norm_kernel_raises_the_reference_errors(backend, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        kernel_module(backend).rms_norm_forward(*args, **kwargs)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the CUDA simulator's threads warn on inf · 0
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "dy"])
def test_rms_norm_kernel_bad_values_land_where_the_reference_puts_them(backend, dtype, value, where):
    module = kernel_module(backend)
    x, weight, dy = (a.astype(dtype) for a in (f64(3, 5), f64(5), f64(3, 5)))
    (x if where == "x" else dy)[1, 2] = value
    with np.errstate(all="ignore"):      # the reference warns about inf − inf and 0 · inf
        y, cache = module.rms_norm_forward(x, weight)
        y_ref, cache_ref = L.rms_norm_forward(x, weight)
        results = [(y, y_ref)] + list(zip(module.rms_norm_backward(dy, cache), L.rms_norm_backward(dy, cache_ref)))
    for actual, desired in results:
        assert_same_bad_values(actual, desired, dtype)
