"""SiLU, SwiGLU and the SwiGLU MLP (``silu``, ``swiglu``, ``swiglu_mlp``): the reference against Llama's
formulas, errors and float64 gradient checks; the Numba kernels against the reference.

Kernels: hypothesis-drawn shapes (odd row counts, intermediate sizes that are multiples of nothing),
float32 and float64, compared with the reference evaluated in float64 on the same inputs: float64 to
1e-10, float32 to 1e-4 relative to the largest entry (products sum C or I terms).  Every kernel backward
is gradient-checked in float64 (≤ 1e-7) on the suite's cases, keeps the reference's signature and errors,
and puts NaN/inf where the reference does.  (The CUDA backend has none of these ops; it runs the reference.)
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from _helpers import assert_close, assert_same_bad_values
from hypothesis import strategies as st

from npllm import layers as L
from npllm.gradcheck import check_op
from npllm.gradcheck_suite import _on_backend, check_case, op_cases

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731
OPS = ("silu", "swiglu", "swiglu_mlp")


@pytest.fixture(scope="module")
def kernels():
    import npllm_kernels.cpu
    return npllm_kernels.cpu




def silu(z):
    return z / (1 + np.exp(-z))


# ---- reference: values ---------------------------------------------------------------------------

def test_silu_values():
    x = np.array([-800.0, -1.0, 0.0, 1.0, 2.0, 800.0])
    y, _ = L.silu_forward(x)
    np.testing.assert_allclose(y, [-0.0, -1 / (1 + np.e), 0.0, 1 / (1 + np.exp(-1)), 2 / (1 + np.exp(-2)), 800.0],
                               rtol=1e-15, atol=1e-300)
    assert np.all(np.isfinite(L.silu_backward(np.ones_like(x), _)))


def test_swiglu_and_swiglu_mlp_match_llama_mlp():
    x, W_gate, W_up, W_down = f64(2, 3, 5), f64(5, 7), f64(5, 7), f64(7, 5)
    y, _ = L.swiglu_mlp_forward(x, W_gate, W_up, W_down)
    np.testing.assert_allclose(y, (silu(x @ W_gate) * (x @ W_up)) @ W_down, rtol=1e-12)
    gate, up = f64(4, 6), f64(4, 6)
    np.testing.assert_allclose(L.swiglu_forward(gate, up)[0], silu(gate) * up, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_swiglu_and_swiglu_mlp_compute_in_the_input_dtype(dtype):
    x = f64(2, 3, 4).astype(dtype)
    W = f64(4, 4).astype(dtype)
    assert L.silu_forward(x)[0].dtype == dtype
    assert L.swiglu_forward(x, x)[0].dtype == dtype
    y, cache = L.swiglu_mlp_forward(x, W, W, W)
    assert y.dtype == dtype and all(g.dtype == dtype for g in L.swiglu_mlp_backward(y, cache))


# ---- reference: errors ---------------------------------------------------------------------------

BAD_CALLS = [
    ("silu", (np.array([1, 2]),), TypeError, "x must have dtype float32 or float64, got int64"),
    ("swiglu", (f64(2, 4), f64(2, 3)), ValueError, r"up must have shape \(2, 4\), got \(2, 3\)"),
    ("swiglu_mlp", (f64(2, 3), f64(4, 6), f64(4, 6), f64(6, 4)), ValueError,
     r"x's last dimension must equal W_gate's first \(C = 4\), got x \(2, 3\)"),
    ("swiglu_mlp", (f64(2, 4), f64(4, 6), f64(4, 5), f64(6, 4)), ValueError, r"W_up must have shape \(4, 6\), got \(4, 5\)"),
    ("swiglu_mlp", (f64(2, 4), f64(4, 6), f64(4, 6), f64(5, 4)), ValueError, r"W_down must have shape \(6, \*\), got \(5, 4\)"),
    ("swiglu_mlp", (f64(2, 4), f64(4, 6), f64(4, 6).astype(np.float32), f64(6, 4)), TypeError, "must share one dtype"),
]


@pytest.mark.parametrize("op,args,error,message", BAD_CALLS)
def test_bad_input_raises_a_clear_error(op, args, error, message):
    with pytest.raises(error, match=message):
        getattr(L, f"{op}_forward")(*args)


# ---- reference: gradient checks (float64, ≤ 1e-7) ------------------------------------------------

SUITE = [(name, case) for name in OPS for case in op_cases(name, np.random.default_rng(2))]
SUITE_IDS = [f"{name}-{case.label}" for name, case in SUITE]


@pytest.mark.parametrize("name,case", SUITE, ids=SUITE_IDS)
def test_suite_cases_pass_the_gradient_check(name, case):
    report = check_case(case)
    assert report.passed and report.max_error <= 1e-7, str(report)


@settings(max_examples=10)
@given(shape=st.sampled_from([(1, 3), (2, 3, 4), (1, 5, 2)]), intermediate=st.integers(1, 7), seed=st.integers(0, 999))
def test_swiglu_mlp_backward_on_random_shapes(shape, intermediate, seed):
    r = np.random.default_rng(seed)
    C = shape[-1]
    inputs = [r.standard_normal(shape), 0.5 * r.standard_normal((C, intermediate)),
              0.5 * r.standard_normal((C, intermediate)), 0.5 * r.standard_normal((intermediate, C))]
    report = check_op(L.swiglu_mlp_forward, L.swiglu_mlp_backward, inputs)
    assert report.passed, str(report)


# ---- Numba kernels -------------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
def test_kernels_have_the_reference_signature(kernels, op):
    for name in (f"{op}_forward", f"{op}_backward"):
        assert inspect.signature(getattr(kernels, name)) == inspect.signature(getattr(L, name))


def _compare(kernels, op, inputs, douts, dtype):
    """The kernel's forward and backward against the reference's in float64 (inputs left unchanged)."""
    originals = [a.copy() for a in inputs + douts]
    out, cache = getattr(kernels, f"{op}_forward")(*inputs)
    out_ref, cache_ref = getattr(L, f"{op}_forward")(*[a.astype(np.float64) for a in inputs])
    assert_close(out, out_ref, dtype)
    grads = getattr(kernels, f"{op}_backward")(*douts, cache)
    grads_ref = getattr(L, f"{op}_backward")(*[d.astype(np.float64) for d in douts], cache_ref)
    grads, grads_ref = (grads, grads_ref) if isinstance(grads, tuple) else ((grads,), (grads_ref,))
    for grad, grad_ref in zip(grads, grads_ref):
        assert_close(grad, grad_ref, dtype)
    for before, after in zip(originals, inputs + douts):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@settings(max_examples=10)
@given(shape=st.sampled_from([(1,), (7,), (3, 5), (2, 3, 9)]), scale=st.sampled_from([1.0, 10.0]),
       seed=st.integers(0, 999))
def test_silu_and_swiglu_kernels_match_the_reference(kernels, dtype, shape, scale, seed):
    r = np.random.default_rng(seed)
    gate, up, dy = (scale * r.standard_normal(shape)).astype(dtype), *(r.standard_normal((2,) + shape).astype(dtype))
    _compare(kernels, "silu", [gate], [dy], dtype)
    _compare(kernels, "swiglu", [gate, up], [dy], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@settings(max_examples=10)
@given(lead=st.sampled_from([(1,), (3,), (2, 5), (1, 7)]), C=st.integers(1, 9), intermediate=st.integers(1, 23),
       C_out=st.integers(1, 9), seed=st.integers(0, 999))
def test_swiglu_mlp_kernel_matches_the_reference(kernels, dtype, lead, C, intermediate, C_out, seed):
    r = np.random.default_rng(seed)
    inputs = [r.standard_normal(s).astype(dtype) for s in (lead + (C,), (C, intermediate), (C, intermediate),
                                                             (intermediate, C_out))]
    _compare(kernels, "swiglu_mlp", inputs, [r.standard_normal(lead + (C_out,)).astype(dtype)], dtype)


def test_swiglu_kernels_parallel_path_matches_the_reference(kernels):
    # 300 × 1024 elements: above PARALLEL_MIN_WORK, so the parallel kernels (not the serial twins) run.
    _compare(kernels, "swiglu", [f64(300, 1024), f64(300, 1024)], [f64(300, 1024)], np.float64)
    _compare(kernels, "swiglu_mlp", [f64(300, 16), f64(16, 1024), f64(16, 1024), f64(1024, 16)], [f64(300, 16)],
             np.float64)


def test_swiglu_mlp_kernel_backward_twice_gives_fresh_gradients(kernels):
    # The backward's temporaries live in reused buffers: a second call must not change the first's results.
    x, W_gate, W_up, W_down = f64(3, 4), f64(4, 6), f64(4, 6), f64(6, 4)
    y, cache = kernels.swiglu_mlp_forward(x, W_gate, W_up, W_down)
    first = kernels.swiglu_mlp_backward(np.ones_like(y), cache)
    kept = [g.copy() for g in first]
    kernels.swiglu_mlp_backward(2 * np.ones_like(y), cache)
    for g, g_kept in zip(first, kept):
        np.testing.assert_array_equal(g, g_kept)


@pytest.mark.parametrize("name,case", SUITE, ids=SUITE_IDS)
def test_kernels_pass_the_gradient_check(kernels, name, case):
    report = check_case(_on_backend(case, kernels))
    assert report.passed and report.max_error <= 1e-7, str(report)


@pytest.mark.parametrize("op,args,error,message", BAD_CALLS)
def test_kernels_raise_the_reference_errors(kernels, op, args, error, message):
    with pytest.raises(error, match=message):
        getattr(kernels, f"{op}_forward")(*args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 200.0, -200.0], ids=["nan", "inf", "-inf", "200", "-200"])
@pytest.mark.parametrize("op", OPS)
def test_kernels_bad_values_land_where_the_reference_puts_them(kernels, dtype, value, op):
    x, up, dy = (f64(3, 4).astype(dtype) for _ in range(3))
    x[1, 2] = value
    inputs = {"silu": [x], "swiglu": [x, up], "swiglu_mlp": [x, *(f64(4, 4).astype(dtype) for _ in range(3))]}[op]
    with np.errstate(all="ignore"):      # the reference warns about inf · 0 and overflow
        out, cache = getattr(kernels, f"{op}_forward")(*inputs)
        out_ref, cache_ref = getattr(L, f"{op}_forward")(*inputs)
        grads = getattr(kernels, f"{op}_backward")(dy, cache)
        grads_ref = getattr(L, f"{op}_backward")(dy, cache_ref)
    grads, grads_ref = (grads, grads_ref) if isinstance(grads, tuple) else ((grads,), (grads_ref,))
    for actual, desired in [(out, out_ref)] + list(zip(grads, grads_ref)):
        assert_same_bad_values(actual, desired, dtype)
