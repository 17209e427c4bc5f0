"""Grouped-query attention (``scaled_dot_product_attention`` with k, v of n_kv_head < n_head heads): the
reference against attention with repeated keys and values, errors and float64 gradient checks (the op's
whole gradient-check table); the Numba and CUDA kernels against the reference.

Kernels: hypothesis-drawn shapes (odd Tq, Tk ≥ Tq, n_kv_head = 1 and = n_head, masks), float32 and
float64, compared with the reference evaluated in float64 on the same inputs: float64 to 1e-10, float32
to 1e-4 relative to the size of the terms (attention's gradients are sums that cancel).  Every kernel
backward is gradient-checked in float64 (≤ 1e-7) on the suite's cases, grouped-query ones included, and a
NaN in k or v lands where the reference puts it.  The CUDA kernels run in Numba's simulator without a GPU.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from _helpers import assert_close, kernel_module
from hypothesis import strategies as st

from npllm import layers as L
from npllm.gradcheck import check_op
from npllm.gradcheck_suite import _on_backend, check_case, op_cases

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
KERNEL_BACKENDS = [pytest.param("numba", id="numba"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]






# ---- reference -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_query_attention_computes_in_the_input_dtype(dtype):
    q = f64(1, 4, 3, 2).astype(dtype)
    kv = f64(1, 2, 3, 2).astype(dtype)
    out, cache = L.scaled_dot_product_attention_forward(q, kv, kv, causal=True)
    assert out.dtype == dtype and all(g.dtype == dtype for g in L.scaled_dot_product_attention_backward(out, cache))


def _repeat_kv(k, groups):
    """Hugging Face's repeat_kv: kv head j serves query heads j·G … j·G + G − 1."""
    return np.repeat(k, groups, axis=1)


@pytest.mark.parametrize("H,Hkv", [(4, 1), (4, 2), (6, 3), (3, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_attention_equals_attention_with_repeated_kv(H, Hkv, causal):
    q, k, v = f64(2, H, 5, 4), f64(2, Hkv, 7, 4), f64(2, Hkv, 7, 3)
    mask = rng.random((2, 1, 5, 7)) > 0.3
    out, cache = L.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
    k_repeated, v_repeated = _repeat_kv(k, H // Hkv), _repeat_kv(v, H // Hkv)    # (2, H, 7, ·)
    expected, repeated_cache = L.scaled_dot_product_attention_forward(q, k_repeated, v_repeated, mask=mask, causal=causal)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-14)
    dout = f64(*out.shape)
    dq, dk, dv = L.scaled_dot_product_attention_backward(dout, cache)
    dq_rep, dk_rep, dv_rep = L.scaled_dot_product_attention_backward(dout, repeated_cache)
    assert dk.shape == k.shape and dv.shape == v.shape
    np.testing.assert_allclose(dq, dq_rep, rtol=1e-12, atol=1e-13)
    # Each kv head's gradient is the sum over the query heads of its group.
    np.testing.assert_allclose(dk, dk_rep.reshape(2, Hkv, H // Hkv, 7, 4).sum(axis=2), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dv, dv_rep.reshape(2, Hkv, H // Hkv, 7, 3).sum(axis=2), rtol=1e-12, atol=1e-13)


def test_grouped_query_attention_fully_masked_row_is_zero_and_gets_no_gradient():
    q, k, v = f64(1, 4, 3, 2), f64(1, 2, 5, 2), f64(1, 2, 5, 2)
    mask = np.ones((1, 4, 3, 5), dtype=bool)
    mask[0, 3, 1] = False
    out, cache = L.scaled_dot_product_attention_forward(q, k, v, mask=mask)
    assert np.all(out[0, 3, 1] == 0)
    dq, dk, dv = L.scaled_dot_product_attention_backward(np.ones_like(out), cache)
    assert np.all(dq[0, 3, 1] == 0) and all(np.all(np.isfinite(g)) for g in (dq, dk, dv))



def test_kernel_checks_refuse_grouped_query_inputs_clearly():
    # The numba attention kernel calls check_attention_inputs without grouped=True.
    from npllm.layers.attention import check_attention_inputs
    with pytest.raises(ValueError, match="k has 2 heads and q 4: grouped-query attention .* not by this kernel"):
        check_attention_inputs(f64(1, 4, 3, 2), f64(1, 2, 5, 2), f64(1, 2, 5, 2), None, False)



@settings(max_examples=15)
@given(B=st.integers(1, 2), n_kv_head=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2, 3]),
       Tq=st.sampled_from([1, 3, 5]), extra_keys=st.integers(0, 2), d=st.integers(1, 4), causal=st.booleans(),
       seed=st.integers(0, 999))
def test_grouped_query_attention_backward_on_random_shapes(B, n_kv_head, groups, Tq, extra_keys, d, causal, seed):
    r = np.random.default_rng(seed)
    H, Tk = n_kv_head * groups, Tq + extra_keys      # groups = 1: n_kv_head = n_head
    inputs = [r.standard_normal((B, H, Tq, d)), r.standard_normal((B, n_kv_head, Tk, d)),
              r.standard_normal((B, n_kv_head, Tk, 3))]
    report = check_op(L.scaled_dot_product_attention_forward, L.scaled_dot_product_attention_backward, inputs,
                      {"causal": causal})
    assert report.passed, str(report)




@pytest.mark.parametrize("call,error,message", [
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 4, 3, 2), f64(1, 3, 5, 2), f64(1, 3, 5, 2)), ValueError,
     r"k's head count Hkv \(axis 1\) must divide q's H = 4.*got 3 in shape \(1, 3, 5, 2\)"),
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 4, 3, 2), f64(1, 2, 5, 2), f64(1, 1, 5, 2)), ValueError,
     r"v must have shape \(1, 2, 5, \*\), got \(1, 1, 5, 2\)"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


SUITE = op_cases("scaled_dot_product_attention", np.random.default_rng(2))
GROUPED = [c for c in SUITE if c.inputs[1].shape[1] != c.inputs[0].shape[1]]


@pytest.mark.parametrize("case", SUITE, ids=[c.label for c in SUITE])
def test_suite_cases_pass_the_gradient_check(case):
    report = check_case(case)
    assert report.passed and report.max_error <= 1e-7, str(report)


# ---- kernels -------------------------------------------------------------------------------------

def _term_scales(q, k, v, dout):
    """Sizes of the terms the output and each gradient sum (float64), for float32 tolerances."""
    size = lambda a: float(np.max(np.abs(a), initial=0.0))  # noqa: E731
    scale, Tk, groups = 1 / np.sqrt(q.shape[-1]), k.shape[2], q.shape[1] // k.shape[1]
    Tq = q.shape[2]
    return [size(v), 4 * size(dout) * size(v) * Tk * size(k) * scale,
            4 * groups * Tq * size(dout) * size(v) * size(q) * scale, groups * Tq * size(dout)]


def _compare(module, q, k, v, dout, dtype, **options):
    out, cache = module.scaled_dot_product_attention_forward(q, k, v, **options)
    wide = [a.astype(np.float64) for a in (q, k, v, dout)]
    out_ref, cache_ref = L.scaled_dot_product_attention_forward(*wide[:3], **options)
    grads = module.scaled_dot_product_attention_backward(dout, cache)
    grads_ref = L.scaled_dot_product_attention_backward(wide[3], cache_ref)
    for actual, desired, scale in zip((out,) + tuple(grads), (out_ref,) + grads_ref, _term_scales(*wide)):
        assert_close(np.asarray(actual), desired, dtype, scale=scale if dtype == np.float32 else None)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=8)
@given(B=st.integers(1, 2), n_kv_head=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2, 3]),
       Tq=st.sampled_from([1, 3, 5, 17]), extra_keys=st.sampled_from([0, 2, 16]), d=st.sampled_from([1, 4, 8]),
       causal=st.booleans(), masked=st.booleans(), seed=st.integers(0, 999))
def test_grouped_query_attention_kernel_matches_the_reference(backend, dtype, B, n_kv_head, groups, Tq, extra_keys, d,
                                                               causal, masked, seed):
    module = kernel_module(backend)
    r = np.random.default_rng(seed)
    H, Tk = n_kv_head * groups, Tq + extra_keys                 # groups = 1: n_kv_head = n_head
    q, k, v, dout = (r.standard_normal(s).astype(dtype) for s in
                     ((B, H, Tq, d), (B, n_kv_head, Tk, d), (B, n_kv_head, Tk, 3), (B, H, Tq, 3)))
    mask = r.random((B, 1, Tq, Tk)) > 0.3 if masked else None
    _compare(module, q, k, v, dout, dtype, causal=causal, mask=mask)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_attention_numba_parallel_kernel_matches_the_reference(n_kv_head):
    # B·H·T²·d above PARALLEL_MIN_WORK: the parallel loops run, per key tile when there are fewer kv
    # heads than threads (n_kv_head = 1), per kv head otherwise; T = 131 crosses the 64 and 128 tiles.
    q, k, v, dout = f64(1, 4, 131, 8), f64(1, n_kv_head, 131, 8), f64(1, n_kv_head, 131, 8), f64(1, 4, 131, 8)
    _compare(kernel_module("numba"), q, k, v, dout, np.float64, causal=True)


def test_grouped_query_attention_numba_reads_split_heads_views_without_copies():
    # The model's layout: q, k, v are split_heads views of (B, T, H·d) projections.
    B, T, H, Hkv, d = 2, 9, 4, 2, 4
    q = f64(B, T, H * d).reshape(B, T, H, d).transpose(0, 2, 1, 3)
    k, v = (f64(B, T, Hkv * d).reshape(B, T, Hkv, d).transpose(0, 2, 1, 3) for _ in range(2))
    _compare(kernel_module("numba"), q, k, v, f64(B, H, T, d), np.float64, causal=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", GROUPED, ids=[c.label for c in GROUPED])
def test_grouped_query_attention_kernel_passes_the_gradient_check(backend, case):
    report = check_case(_on_backend(case, kernel_module(backend)))
    assert report.passed and report.max_error <= 1e-7, str(report)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("where", ["k", "v"])
def test_grouped_query_attention_kernel_bad_values_land_where_the_reference_puts_them(backend, where):
    module = kernel_module(backend)
    q, k, v = f64(1, 4, 5, 4), f64(1, 2, 5, 4), f64(1, 2, 5, 3)
    (k if where == "k" else v)[0, 1, 2, 0] = np.nan
    with np.errstate(all="ignore"):
        out, cache = module.scaled_dot_product_attention_forward(q, k, v, causal=True)
        out_ref, cache_ref = L.scaled_dot_product_attention_forward(q, k, v, causal=True)
        dout = np.ones_like(out_ref)
        results = zip((out,) + tuple(module.scaled_dot_product_attention_backward(dout, cache)),
                      (out_ref,) + L.scaled_dot_product_attention_backward(dout, cache_ref))
    for actual, desired in results:
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired))
        finite = np.isfinite(desired)
        np.testing.assert_allclose(actual[finite], desired[finite], rtol=1e-10, atol=1e-12)
