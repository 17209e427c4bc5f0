"""Scaled dot-product and multi-head attention: the reference, the Numba flash kernels, the CUDA kernels, bad values.

Reference (``npllm.layers.attention``): values against hand-worked cases and invariants, errors, float64
gradient checks (the op table's cases and hypothesis-drawn shapes with masks).

Numba (``npllm_kernels.cpu.attention``): flash attention must give the reference's output and all three
gradients for any shapes (sizes that are not multiples of its 64-wide tiles, T = 1, Tq ≠ Tk), causal or
not, with any boolean mask broadcastable to (B, H, Tq, Tk); a query with no allowed key must output zeros
and pass no gradient (never NaN).  The fused multi-head op likewise.  Tolerances: float64 1e-10, float32
1e-4, relative to each entry or to the size of the terms it sums (:func:`_term_scales`: an entry that is a
cancelling sum, such as dq with a single key, where dS = 0, carries its terms' rounding).  A float32
kernel is compared with the reference evaluated in float64 on the same float32 inputs: the exact answer
up to rounding.

CUDA (``npllm_kernels.cuda``, in Numba's simulator without a GPU): shapes small but crossing tile edges
(17, 33, 40), masks, fully masked rows, Tq ≠ Tk; backward kernels against the reference backward
(finite differences through the simulator would take far too long).  Tolerances: ``tests/_helpers.py``.

Bad values, every kernel backend: the reference multiplies dense (Tq, Tk) matrices in which a masked
probability is a 0 that still multiplies, so a bad value spreads exactly as IEEE arithmetic says:
* NaN in q[i]: out[i] and dq[i] are NaN (zeros if query i sees no key), dk is NaN for every key
  (0 · NaN in dSᵀ Q), dv for the keys query i sees;
* NaN in k[j]: every query that sees key j gets a NaN output and dq, every other query a NaN in dq's
  column of the NaN (0 · NaN in dS K), and dk is NaN everywhere;
* +inf in k[j]: a query with a positive q·k[j] normalises inf / inf = NaN, one with a negative one
  gets a probability of 0 but a NaN in dq's column (0 · inf);
* NaN in v[j]: that column of out is NaN for *every* query, even one that may not see key j, and all
  of dq and dk (the softmax backward's rowsum(dP ⊙ P) is 0 · NaN);
* NaN in dout: the gradients it reaches, as the same products say.
The kernels must give the same NaN (and inf) positions and, elsewhere, the reference's values; they
compute non-finite inputs with the reference (one vectorized sum per input tells them), and finite
inputs keep their fast path, where a query with no allowed key outputs zeros and passes no gradient.
Tolerances on the finite entries: float64 1e-10, float32 1e-4, relative to the largest finite entry of
the reference (an entry that cancels carries its terms' rounding); both sides are in the input dtype.
"""
import inspect
import warnings

import numpy as np
import pytest
from _helpers import RTOL, assert_cuda_matches, assert_passes_gradient_check, gradcheck_cases, random_array
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm
import npllm.layers as ref
import npllm_kernels.cpu
from npllm.backend import ops
from npllm.gradcheck import check_op
from npllm_kernels.cpu import attention

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


# ---------------------------------------------------------------- reference: values


@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 10**6))
def test_attention_with_identical_keys_averages_the_values(Tq, Tk, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 2, Tq, 4))
    k = np.broadcast_to(rng.standard_normal((1, 2, 1, 4)), (1, 2, Tk, 4)).copy()
    v = rng.standard_normal((1, 2, Tk, 3))
    out, _ = ref.scaled_dot_product_attention_forward(q, k, v)
    np.testing.assert_allclose(out, np.broadcast_to(v.mean(axis=2, keepdims=True), out.shape), rtol=1e-12, atol=1e-14)


@given(st.integers(1, 6), st.integers(0, 10**6))
def test_causal_self_attention_at_position_zero_returns_v0(T, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, 3, T, 4)) for _ in range(3))
    out, _ = ref.scaled_dot_product_attention_forward(q, k, v, causal=True)
    np.testing.assert_allclose(out[:, :, 0], v[:, :, 0], rtol=1e-14)


def test_attention_uses_scale_one_over_sqrt_d():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 1, 2, 16)), rng.standard_normal((1, 1, 3, 16)), rng.standard_normal((1, 1, 3, 5))
    out, _ = ref.scaled_dot_product_attention_forward(q, k, v)
    s = q[0, 0] @ k[0, 0].T / 4.0
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out[0, 0], (p / p.sum(-1, keepdims=True)) @ v[0, 0], rtol=1e-13)


def test_multi_head_attention_uses_gpt2_qkv_layout():
    rng = np.random.default_rng(0)
    B, T, C, NH = 1, 3, 4, 2
    x, W, b = rng.standard_normal((B, T, C)), rng.standard_normal((C, 3 * C)), rng.standard_normal(3 * C)
    Wo, bo = np.eye(C), np.zeros(C)
    y, _ = ref.multi_head_attention_forward(x, W, b, Wo, bo, NH, causal=True)
    q, k, v = (x @ W[:, i * C:(i + 1) * C] + b[i * C:(i + 1) * C] for i in range(3))
    head = lambda a, h: a[0, :, h * 2:(h + 1) * 2][None, None]
    for h in range(NH):
        expected, _ = ref.scaled_dot_product_attention_forward(head(q, h), head(k, h), head(v, h), causal=True)
        np.testing.assert_allclose(y[0, :, h * 2:(h + 1) * 2], expected[0, 0], rtol=1e-12)


# ---------------------------------------------------------------- reference: errors


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.scaled_dot_product_attention_forward(f64(1, 2, 3, 4), f64(1, 2, 5, 3), f64(1, 2, 5, 4)), ValueError, r"k must have shape \(1, 2, \*, 4\), got \(1, 2, 5, 3\)"),
    (lambda: ref.scaled_dot_product_attention_forward(f64(2, 3, 4), f64(2, 3, 4), f64(2, 3, 4)), ValueError, r"q must have 4 dimensions \(B, H, Tq, d\)"),
    (lambda: ref.scaled_dot_product_attention_forward(f64(1, 1, 3, 4), f64(1, 1, 5, 4), f64(1, 1, 5, 4), mask=np.ones((3, 4), bool)), ValueError, r"mask must be broadcastable to \(B, H, Tq, Tk\) = \(1, 1, 3, 5\), got \(3, 4\)"),
    (lambda: ref.scaled_dot_product_attention_forward(f64(1, 1, 3, 4), f64(1, 1, 5, 4), f64(1, 1, 5, 4), mask=np.ones((3, 5))), TypeError, "mask must be a bool numpy.ndarray"),
    (lambda: ref.multi_head_attention_forward(f64(1, 2, 6), f64(6, 18), f64(18), f64(6, 6), f64(6), 4), ValueError, "n_head must be a positive integer dividing C = 6, got 4"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------- reference: gradients


@pytest.mark.parametrize("name,case", gradcheck_cases("scaled_dot_product_attention", "multi_head_attention"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


@settings(max_examples=15)
@given(Tq=st.integers(1, 5), Tk=st.integers(1, 6), d=st.integers(1, 4), causal=st.booleans(),
       use_mask=st.booleans(), seed=st.integers(0, 99))
def test_attention_backward_matches_numerical_gradient_with_masks(Tq, Tk, d, causal, use_mask, seed):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, 2, Tq, d)), rng.standard_normal((2, 2, Tk, d)), rng.standard_normal((2, 2, Tk, 3))
    mask = rng.random((2, 1, Tq, Tk)) > 0.3 if use_mask else None
    report = check_op(ref.scaled_dot_product_attention_forward, ref.scaled_dot_product_attention_backward,
                      [q, k, v], {"mask": mask, "causal": causal})
    assert report.passed, str(report)


def test_attention_fully_masked_row_is_zero_and_gets_no_gradient():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 1, 3, 4)), rng.standard_normal((1, 1, 5, 4)), rng.standard_normal((1, 1, 5, 2))
    mask = np.ones((1, 1, 3, 5), dtype=bool)
    mask[0, 0, 1] = False
    out, cache = ref.scaled_dot_product_attention_forward(q, k, v, mask=mask)
    assert np.all(np.isfinite(out)) and np.all(out[0, 0, 1] == 0)
    dq, dk, dv = ref.scaled_dot_product_attention_backward(np.ones_like(out), cache)
    assert np.all(dq[0, 0, 1] == 0)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv))
    # Masked keys get no gradient from queries that cannot see them.
    only = np.zeros((1, 1, 3, 5), dtype=bool)
    only[..., 0] = True
    out, cache = ref.scaled_dot_product_attention_forward(q, k, v, mask=only)
    dq, dk, dv = ref.scaled_dot_product_attention_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dk[..., 1:, :], 0.0)
    np.testing.assert_array_equal(dv[..., 1:, :], 0.0)


# ---------------------------------------------------------------- Numba: flash attention
forward, backward = attention.scaled_dot_product_attention_forward, attention.scaled_dot_product_attention_backward


def _inputs(rng, B, H, Tq, Tk, d, dv, dtype):
    q, k = (rng.standard_normal((B, H, T, d)).astype(dtype) for T in (Tq, Tk))
    v = rng.standard_normal((B, H, Tk, dv)).astype(dtype)
    dout = rng.standard_normal((B, H, Tq, dv)).astype(dtype)
    return q, k, v, dout


def assert_matches_reference(q, k, v, dout, mask=None, causal=False):
    """Flash kernel output and gradients equal the float64 reference's; the inputs are left untouched."""
    dtype = q.dtype.type
    originals = [np.copy(x) for x in (q, k, v, dout) if x is not None]
    out, cache = forward(q, k, v, mask=mask, causal=causal)
    grads = backward(dout, cache)
    ref_out, ref_cache = ref.scaled_dot_product_attention_forward(
        *(x.astype(np.float64) for x in (q, k, v)), mask=mask, causal=causal)
    ref_grads = ref.scaled_dot_product_attention_backward(None if dout is None else dout.astype(np.float64),
                                                          ref_cache)
    scales = _term_scales(ref_cache, None if dout is None else dout.astype(np.float64))
    for name, actual, desired, scale in zip(("out", "dq", "dk", "dv"), (out,) + grads, (ref_out,) + ref_grads,
                                            scales):
        assert actual.dtype == dtype and actual.shape == desired.shape, name
        assert np.all(np.isfinite(actual)), f"{name} has NaN/inf"
        np.testing.assert_allclose(actual, desired.astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                                   err_msg=name)
    for before, after in zip(originals, (q, k, v, dout)):
        np.testing.assert_array_equal(after, before, err_msg="an input was modified")


def _term_scales(ref_cache, dout):
    """Largest sum of |terms| behind each entry of out, dq, dk, dv (float64 reference quantities).

    out = P V;  dS = P ⊙ (dP − D) with dP = dO Vᵀ, D = rowsum(P ⊙ dP);  dq = dS K/√d, dk = dSᵀ Q/√d,
    dv = Pᵀ dO.  Rounding errors scale with Σ|terms|, so that is what the tolerance is relative to.
    """
    q, k, v, probs, scale = ref_cache
    largest = lambda x: float(np.max(x, initial=0.0))  # noqa: E731
    out_scale = largest(probs @ np.abs(v))
    if dout is None:
        return out_scale, 0.0, 0.0, 0.0
    dprobs = dout @ v.swapaxes(-1, -2)
    row_dot = np.sum(probs * dprobs, axis=-1, keepdims=True)
    abs_dscores = probs * (np.abs(dprobs) + np.abs(row_dot))
    return (out_scale, largest(abs_dscores @ np.abs(k)) * scale,
            largest(abs_dscores.swapaxes(-1, -2) @ np.abs(q)) * scale, largest(probs.swapaxes(-1, -2) @ np.abs(dout)))


def _mask(rng, kind, B, H, Tq, Tk):
    """A boolean mask of one of the shapes a caller may pass (each broadcastable to (B, H, Tq, Tk))."""
    if kind == "none":
        return None
    shape = {"full": (B, H, Tq, Tk), "2d": (Tq, Tk), "padding": (B, 1, 1, Tk), "heads": (H, 1, Tk)}[kind]
    mask = rng.random(shape) < 0.7
    if kind == "full" and Tq > 1:
        mask[0, 0, Tq // 2] = False                        # one query that sees nothing
    return mask


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       B=st.integers(1, 2), H=st.integers(1, 3), Tq=st.sampled_from([1, 2, 17, 64, 65, 130]),
       Tk=st.sampled_from([1, 3, 33, 64, 129]), d=st.sampled_from([1, 5, 16]), dv=st.sampled_from([1, 7, 16]),
       causal=st.booleans(), mask_kind=st.sampled_from(["none", "full", "2d", "padding", "heads"]))
def test_flash_attention_matches_reference(seed, dtype, B, H, Tq, Tk, d, dv, causal, mask_kind):
    rng = np.random.default_rng(seed)
    q, k, v, dout = _inputs(rng, B, H, Tq, Tk, d, dv, dtype)
    assert_matches_reference(q, k, v, dout, mask=_mask(rng, mask_kind, B, H, Tq, Tk), causal=causal)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, H", [(1, 1), (2, 3)])   # fewer batch·heads than threads, and more
def test_flash_attention_causal_across_several_tiles_matches_reference(dtype, B, H):
    q, k, v, dout = _inputs(np.random.default_rng(0), B, H, 200, 200, 8, 8, dtype)
    assert_matches_reference(q, k, v, dout, causal=True)


def test_flash_attention_causal_with_cached_keys_sees_the_whole_past():
    # Tk > Tq (decoding with a key/value cache): query i sees keys j <= i + (Tk - Tq).
    q, k, v, dout = _inputs(np.random.default_rng(1), 1, 2, 5, 150, 4, 4, np.float64)
    assert_matches_reference(q, k, v, dout, causal=True)


def test_flash_attention_fully_masked_rows_output_zero_and_pass_no_gradient():
    rng = np.random.default_rng(2)
    q, k, v, dout = _inputs(rng, 1, 1, 6, 4, 3, 3, np.float64)
    mask = np.ones((6, 4), dtype=bool)
    mask[1] = False
    # causal with Tq > Tk: query i sees keys j <= i - 2, so queries 0 and 1 see no key at all.
    out, cache = forward(q, k, v, mask=mask, causal=True)
    dq, dk, dv = backward(dout, cache)
    assert np.all(out[0, 0, :2] == 0) and np.all(dq[0, 0, :2] == 0)
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in (dq, dk, dv))
    assert_matches_reference(q, k, v, dout, mask=mask, causal=True)


def test_flash_attention_all_masked_gives_zero_everything():
    q, k, v, dout = _inputs(np.random.default_rng(3), 2, 2, 70, 70, 4, 4, np.float32)
    out, cache = forward(q, k, v, mask=np.zeros((1, 1, 1, 70), dtype=bool))
    assert not np.any(out)
    assert not any(np.any(g) for g in backward(dout, cache))


def test_flash_attention_accepts_views_and_a_pre_broadcast_mask():
    rng = np.random.default_rng(4)
    qkv = rng.standard_normal((2, 40, 3, 2, 8))                      # (B, T, 3, H, HS), as split_heads sees it
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # non-contiguous (B, H, T, HS) views
    mask = np.broadcast_to(rng.random((40, 40)) < 0.5, (2, 2, 40, 40))
    assert_matches_reference(q, k, v, rng.standard_normal((2, 2, 40, 8)), mask=mask, causal=True)


def test_flash_attention_backward_with_no_upstream_gradient_is_zero():
    q, k, v, _ = _inputs(np.random.default_rng(5), 1, 2, 9, 9, 4, 4, np.float64)
    assert_matches_reference(q, k, v, None, causal=True)


def test_flash_attention_cache_holds_no_score_matrix():
    q, k, v, _ = _inputs(np.random.default_rng(6), 1, 2, 300, 300, 8, 8, np.float32)
    _, cache = forward(q, k, v, causal=True)
    largest = max(x.size for x in cache if isinstance(x, np.ndarray))
    assert largest <= 2 * 300 * 8, "the cache should be O(T·d), not O(T²)"
    assert cache.lse.shape == (2, 300)


@pytest.mark.parametrize("mask, causal", [(None, False), (np.tril(np.ones((6, 6), dtype=bool)), True)])
def test_flash_attention_backward_passes_gradient_check(mask, causal):
    rng = np.random.default_rng(7)
    q, k, v, _ = _inputs(rng, 1, 2, 6, 6, 3, 4, np.float64)
    if mask is not None:
        mask = mask.copy()
        mask[2] = False                                     # a fully masked query
    report = check_op(forward, backward, inputs=[q, k, v], kwargs={"mask": mask, "causal": causal})
    assert report.passed, report


def test_flash_attention_signatures_equal_the_reference():
    for name in ("scaled_dot_product_attention_forward", "scaled_dot_product_attention_backward"):
        assert inspect.signature(getattr(attention, name)) == inspect.signature(getattr(ref, name)), name


def _bad_calls():
    good = np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 5, 4)), np.zeros((1, 2, 5, 6))
    q, k, v = good
    return {
        "q not 4-D": ((np.zeros((2, 3, 4)), k, v), {}),
        "k heads differ": ((q, np.zeros((1, 3, 5, 4)), v), {}),
        "v length differs": ((q, k, np.zeros((1, 2, 4, 6))), {}),
        "mixed dtypes": ((q.astype(np.float32), k, v), {}),
        "integer q": ((q.astype(np.int64), k, v), {}),
        "causal not bool": (good, {"causal": 1}),
        "mask not bool": (good, {"mask": np.ones((3, 5))}),
        "mask wrong shape": (good, {"mask": np.ones((3, 4), dtype=bool)}),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_flash_attention_rejects_bad_inputs_like_the_reference(case):
    args, kwargs = _bad_calls()[case]
    with pytest.raises((TypeError, ValueError)) as expected:
        ref.scaled_dot_product_attention_forward(*args, **kwargs)
    with pytest.raises(expected.type) as actual:
        forward(*args, **kwargs)
    assert str(actual.value) == str(expected.value)


def test_flash_attention_backward_rejects_a_reference_cache():
    q, k, v, dout = _inputs(np.random.default_rng(8), 1, 1, 2, 2, 2, 2, np.float64)
    _, ref_cache = ref.scaled_dot_product_attention_forward(q, k, v)
    with pytest.raises(TypeError, match="FlashAttentionCache"):
        backward(dout, ref_cache)
    _, cache = forward(q, k, v)
    with pytest.raises(ValueError, match="dout must have the forward output's shape"):
        backward(np.zeros((1, 1, 2, 3)), cache)


def test_flash_attention_restores_the_blas_thread_count():
    import threadpoolctl
    before = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    q, k, v, dout = _inputs(np.random.default_rng(9), 1, 2, 8, 8, 4, 4, np.float32)
    _, cache = forward(q, k, v, causal=True)
    backward(dout, cache)
    after = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert after[:len(before)] == before


# ---------------------------------------------------------------- multi-head attention (fused)
def _mha_inputs(rng, B, T, C, dtype):
    x = rng.standard_normal((B, T, C))
    W_qkv, W_out = rng.standard_normal((C, 3 * C)) / np.sqrt(C), rng.standard_normal((C, C)) / np.sqrt(C)
    b_qkv, b_out = 0.1 * rng.standard_normal(3 * C), 0.1 * rng.standard_normal(C)
    return [a.astype(dtype) for a in (x, W_qkv, b_qkv, W_out, b_out)]


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       B=st.integers(1, 3), T=st.sampled_from([1, 5, 64, 70]), n_head=st.sampled_from([1, 2, 3]),
       head_size=st.sampled_from([1, 4, 8]), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "full", "2d", "padding", "heads"]))
def test_fused_multi_head_attention_matches_reference(seed, dtype, B, T, n_head, head_size, causal, mask_kind):
    rng = np.random.default_rng(seed)
    C = n_head * head_size
    inputs = _mha_inputs(rng, B, T, C, dtype)
    mask = _mask(rng, mask_kind, B, n_head, T, T)
    dy = rng.standard_normal((B, T, C)).astype(dtype)
    originals = [a.copy() for a in inputs + [dy]]
    y, cache = attention.multi_head_attention_forward(*inputs, n_head, causal=causal, mask=mask)
    grads = attention.multi_head_attention_backward(dy, cache)
    ref_y, ref_cache = ref.multi_head_attention_forward(*(a.astype(np.float64) for a in inputs), n_head,
                                                        causal=causal, mask=mask)
    ref_grads = ref.multi_head_attention_backward(dy.astype(np.float64), ref_cache)
    for name, actual, desired in zip(("y", "dx", "dW_qkv", "db_qkv", "dW_out", "db_out"), (y,) + grads,
                                     (ref_y,) + ref_grads):
        assert actual.dtype == dtype and actual.shape == desired.shape, name
        scale = float(np.max(np.abs(desired), initial=0.0))
        np.testing.assert_allclose(actual, desired.astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                                   err_msg=name)
    for before, after in zip(originals, inputs + [dy]):
        np.testing.assert_array_equal(after, before, err_msg="an input was modified")


@settings(max_examples=6)
@given(seed=st.integers(0, 2**32 - 1), B=st.integers(1, 2), T=st.sampled_from([1, 3, 5]),
       n_head=st.sampled_from([1, 2]), causal=st.booleans(), fully_masked=st.booleans())
def test_fused_multi_head_attention_passes_gradient_check(seed, B, T, n_head, causal, fully_masked):
    rng = np.random.default_rng(seed)
    inputs = _mha_inputs(rng, B, T, 2 * n_head, np.float64)
    mask = None
    if fully_masked:                                   # the last query sees no key: no gradient through it
        mask = np.ones((T, T), dtype=bool)
        mask[-1] = False
    report = check_op(attention.multi_head_attention_forward, attention.multi_head_attention_backward, inputs,
                      {"n_head": n_head, "causal": causal, "mask": mask})
    assert report.passed, report


def test_fused_multi_head_attention_layers_interleave_like_a_model():
    # Two layers forward, then backward in reverse, with the backward's reused (B, T, 3C) buffer:
    # every gradient must still be the reference's, and none may change when a later call reuses it.
    rng = np.random.default_rng(11)
    layers = [_mha_inputs(rng, 2, 9, 8, np.float64) for _ in range(2)]
    dys = [rng.standard_normal((2, 9, 8)) for _ in range(2)]
    caches = [attention.multi_head_attention_forward(*inputs, 2, causal=True)[1] for inputs in layers]
    grads = [attention.multi_head_attention_backward(dy, cache) for dy, cache in zip(dys[::-1], caches[::-1])]
    snapshot = [[g.copy() for g in layer] for layer in grads]
    attention.multi_head_attention_backward(dys[0], caches[0])          # reuses the buffer again
    for layer_grads, layer_snapshot, inputs, dy in zip(grads, snapshot, layers[::-1], dys[::-1]):
        ref_grads = ref.multi_head_attention_backward(
            dy, ref.multi_head_attention_forward(*inputs, 2, causal=True)[1])
        for actual, kept, desired in zip(layer_grads, layer_snapshot, ref_grads):
            np.testing.assert_array_equal(actual, kept)
            np.testing.assert_allclose(actual, desired, rtol=1e-10, atol=1e-12)


def test_fused_multi_head_attention_signatures_and_errors_equal_the_reference():
    for name in ("multi_head_attention_forward", "multi_head_attention_backward"):
        assert inspect.signature(getattr(attention, name)) == inspect.signature(getattr(ref, name)), name
    good = (np.zeros((1, 2, 6)), np.zeros((6, 18)), np.zeros(18), np.zeros((6, 6)), np.zeros(6))
    for args, kwargs in [(good + (4,), {}), (good + (2,), {"causal": 1}),
                         (good + (2,), {"mask": np.ones((2, 2))}), (good + (2,), {"mask": np.ones((3, 2), bool)})]:
        with pytest.raises((TypeError, ValueError)) as expected:
            ref.multi_head_attention_forward(*args, **kwargs)
        with pytest.raises(expected.type) as actual:
            attention.multi_head_attention_forward(*args, **kwargs)
        assert str(actual.value) == str(expected.value)
    bad = good + (4,)
    _, ref_cache = ref.multi_head_attention_forward(*bad[:5], 2)
    with pytest.raises(TypeError, match="FlashMultiHeadAttentionCache"):
        attention.multi_head_attention_backward(np.zeros((1, 2, 6)), ref_cache)


def test_flash_attention_mixes_head_layouts():
    # q as split_heads views (read in place), k contiguous (B, H, T, d), v some other view: all agree.
    rng = np.random.default_rng(12)
    q = rng.standard_normal((2, 11, 3, 4)).transpose(0, 2, 1, 3)
    k = rng.standard_normal((2, 3, 11, 4))
    v = rng.standard_normal((2, 3, 22, 5))[:, :, ::2]
    mask = rng.random((2, 3, 11, 11)) < 0.8
    assert_matches_reference(q, k, v, rng.standard_normal((2, 3, 11, 5)), mask=mask, causal=True)


# ---------------------------------------------------------------- CUDA kernels

CUDA_ATTENTION_CASES = {
    # name: (B, H, Tq, Tk, d, dv, mask shape or None, causal)
    "causal_square_T40": (1, 2, 40, 40, 8, 8, None, True),
    "cross_Tq17_Tk33_dv_neq_d": (1, 2, 17, 33, 8, 12, None, False),
    "kv_cache_causal_with_head_mask": (2, 2, 17, 33, 8, 12, (1, 2, 1, 33), True),
    "more_queries_than_keys_causal": (1, 1, 33, 17, 5, 4, None, True),
    "full_2d_mask": (1, 1, 17, 33, 5, 4, (17, 33), False),
    "head_size_at_the_cap": (1, 1, 9, 11, 128, 128, None, True),
}


def _cuda_attention_inputs(case, dtype, seed=8):
    B, H, Tq, Tk, d, dv, mask_shape, causal = CUDA_ATTENTION_CASES[case]
    rng = np.random.default_rng(seed)
    q, k, v = (random_array(rng, (B, H, Tq, d), dtype), random_array(rng, (B, H, Tk, d), dtype),
               random_array(rng, (B, H, Tk, dv), dtype))
    dout = random_array(rng, (B, H, Tq, dv), dtype)
    mask = None
    if mask_shape is not None:
        mask = rng.random(mask_shape) > 0.3
        mask[(0,) * (len(mask_shape) - 1)] = False    # one fully masked row (or head)
    return q, k, v, dout, mask, causal


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CUDA_ATTENTION_CASES))
def test_cuda_attention_forward_and_backward_match_reference(cuda_kernels, case, dtype):
    q, k, v, dout, mask, causal = _cuda_attention_inputs(case, dtype)
    out, cache = cuda_kernels.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
    out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v, mask=mask, causal=causal)
    assert_cuda_matches(out, out_ref, dtype)
    grads = cuda_kernels.scaled_dot_product_attention_backward(dout, cache)
    for grad, grad_ref in zip(grads, ref.scaled_dot_product_attention_backward(dout, cache_ref)):   # dq, dk, dv
        assert_cuda_matches(grad, grad_ref, dtype)


@pytest.mark.cuda
def test_cuda_attention_fully_masked_row_is_zero_and_passes_no_gradient(cuda_kernels):
    q, k, v, dout, _, _ = _cuda_attention_inputs("full_2d_mask", np.float64)
    mask = np.ones((17, 33), dtype=bool)
    mask[4] = False
    out, cache = cuda_kernels.scaled_dot_product_attention_forward(q, k, v, mask=mask)
    dq, dk, dv = cuda_kernels.scaled_dot_product_attention_backward(dout, cache)
    assert np.all(np.isfinite(out)) and np.all(out[:, :, 4] == 0)
    assert np.all(dq[:, :, 4] == 0)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv))


@pytest.mark.cuda
def test_cuda_attention_without_upstream_gradient_returns_zeros(cuda_kernels):
    q, k, v, _, _, _ = _cuda_attention_inputs("cross_Tq17_Tk33_dv_neq_d", np.float32)
    _, cache = cuda_kernels.scaled_dot_product_attention_forward(q, k, v)
    assert all(not np.any(g) for g in cuda_kernels.scaled_dot_product_attention_backward(None, cache))


@pytest.mark.cuda
def test_cuda_attention_rejects_head_sizes_over_the_cap_and_bad_masks(cuda_kernels):
    cap = cuda_kernels.MODULES["attention"].HEAD_DIM_MAX
    big = np.zeros((1, 1, 2, cap + 1), dtype=np.float32)
    with pytest.raises(ValueError, match=f"head sizes up to {cap}"):
        cuda_kernels.scaled_dot_product_attention_forward(big, big, big)
    q = np.zeros((1, 1, 2, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="mask must be a bool"):
        cuda_kernels.scaled_dot_product_attention_forward(q, q, q, mask=np.ones((2, 2), dtype=np.int8))
    with pytest.raises(ValueError, match="broadcastable"):
        cuda_kernels.scaled_dot_product_attention_forward(q, q, q, mask=np.ones((3, 2), dtype=bool))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["scaled_dot_product_attention_forward", "scaled_dot_product_attention_backward"])
def test_cuda_op_has_the_reference_signature(cuda_kernels, name):
    assert inspect.signature(getattr(cuda_kernels, name)) == inspect.signature(getattr(ref, name))


@pytest.mark.cuda
def test_cuda_device_functions_take_and_return_device_arrays(cuda_kernels):
    from numba import cuda
    rng = np.random.default_rng(9)
    a = cuda.to_device(random_array(rng, (1, 5, 7), np.float32))
    b = cuda.to_device(random_array(rng, (1, 7, 3), np.float32))
    c = cuda_kernels.matmul_device(a, b)
    assert not isinstance(c, np.ndarray) and getattr(c, "__cuda_ndarray__", False)
    assert_cuda_matches(c.copy_to_host(), a.copy_to_host() @ b.copy_to_host(), np.float32)
    q, k, v, dout, _, _ = _cuda_attention_inputs("cross_Tq17_Tk33_dv_neq_d", np.float32)
    out, cache = cuda_kernels.scaled_dot_product_attention_forward_device(cuda.to_device(q), cuda.to_device(k),
                                                                          cuda.to_device(v))
    dq, dk, dv = cuda_kernels.scaled_dot_product_attention_backward_device(cuda.to_device(dout), cache)
    out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v)
    assert_cuda_matches(out.copy_to_host(), out_ref, np.float32)
    assert_cuda_matches(dv.copy_to_host(), ref.scaled_dot_product_attention_backward(dout, cache_ref)[2], np.float32)


@pytest.mark.cuda
def test_backend_runs_cuda_ops_and_sends_their_caches_back_to_cuda(cuda_kernels):
    q, k, v, dout, _, _ = _cuda_attention_inputs("causal_square_T40", np.float64)
    with npllm.use_backend("cuda"):
        out, cache = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)
    assert isinstance(cache, cuda_kernels.AttentionCache)
    grads = ops.scaled_dot_product_attention_backward(dout, cache)   # dispatched by the cache's type
    out_ref, cache_ref = ref.scaled_dot_product_attention_forward(q, k, v, causal=True)
    assert_cuda_matches(out, out_ref, np.float64)
    assert_cuda_matches(grads[0], ref.scaled_dot_product_attention_backward(dout, cache_ref)[0], np.float64)


# ---------------------------------------------------------------- bad values, every kernel backend

BAD_VALUE_SHAPE = (2, 3, 6, 4)     # B, H, T, D
BAD_VALUES = [("q", np.nan), ("k", np.nan), ("k", np.inf), ("v", np.nan), ("dout", np.nan), (None, None)]
BAD_IDS = ["nan-q", "nan-k", "inf-k", "nan-v", "nan-dout", "finite"]
MASKINGS = [dict(), dict(causal=True), dict(mask=True), dict(mask=True, causal=True)]
MASK_IDS = ["none", "causal", "mask", "mask+causal"]


def _bad_value_inputs(dtype, where, value, masking):
    """q, k, v, dout (B, H, T, D) with ``value`` at one entry of ``where``, and the options: the mask
    (B, 1, T, T) leaves query 1 of batch 0 with no allowed key and hides key 3 from query 4."""
    B, H, T, D = BAD_VALUE_SHAPE
    rng = np.random.default_rng(0)
    arrays = {name: rng.standard_normal((B, H, T, D)).astype(dtype) for name in ("q", "k", "v", "dout")}
    if where is not None:
        arrays[where][1, 2, 3, 0] = value       # head 2 of batch 1, position 3, component 0
        arrays[where][0, 0, 1, 1] = value       # the fully masked query's row (q), or key 1
    options = dict(causal=masking.get("causal", False))
    if masking.get("mask"):
        mask = np.ones((B, 1, T, T), dtype=bool)
        mask[0, :, 1, :] = False
        mask[:, :, 4, 3] = False
        options["mask"] = mask
    return arrays, options


def assert_same_bad_values(actual, desired, name):
    """Same NaN and inf positions (and signs), and the finite entries equal to the dtype's tolerance."""
    dtype = desired.dtype.type
    assert actual.dtype == desired.dtype and actual.shape == desired.shape, name
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired), err_msg=f"{name}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(desired), err_msg=f"{name}: +inf positions")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(desired), err_msg=f"{name}: -inf positions")
    finite = np.isfinite(desired)
    scale = float(np.max(np.abs(desired[finite]), initial=0.0))
    np.testing.assert_allclose(actual[finite], desired[finite], rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=name)


def _run_attention(module, arrays, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # NumPy warns on the NaN it computes
        out, cache = module.scaled_dot_product_attention_forward(arrays["q"], arrays["k"], arrays["v"], **options)
        return (out,) + tuple(module.scaled_dot_product_attention_backward(arrays["dout"], cache))


@pytest.mark.parametrize("masking", MASKINGS, ids=MASK_IDS)
@pytest.mark.parametrize("where, value", BAD_VALUES, ids=BAD_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_attention_bad_values_land_where_the_reference_puts_them(backend, dtype, where, value, masking):
    arrays, options = _bad_value_inputs(dtype, where, value, masking)
    for name, actual, desired in zip(("out", "dq", "dk", "dv"), _run_attention(backend, arrays, options),
                                     _run_attention(ref, arrays, options)):
        assert_same_bad_values(actual, desired, name)


@pytest.mark.parametrize("where", ["q", "k", "v", "dout"])
def test_attention_nan_reaches_the_output_and_gradients(backend, where):
    """Not a vacuous comparison: each case does produce NaN (the reference's pattern is not all-finite)."""
    arrays, options = _bad_value_inputs(np.float64, where, np.nan, dict(causal=True))
    out, dq, dk, dv = _run_attention(backend, arrays, options)
    assert np.isnan(dq).any() and np.isnan(dk).any()
    assert np.isnan(out).any() == (where != "dout")


def test_attention_fully_masked_query_with_finite_inputs_is_zero_and_passes_no_gradient(backend):
    arrays, options = _bad_value_inputs(np.float64, None, None, dict(mask=True))
    out, dq, dk, dv = _run_attention(backend, arrays, options)
    np.testing.assert_array_equal(out[0, :, 1], 0.0)
    np.testing.assert_array_equal(dq[0, :, 1], 0.0)
    assert all(np.isfinite(g).all() for g in (out, dq, dk, dv))


def _bad_value_mha_inputs(dtype, where, value):
    """x (B, T, C), the four weights and dy, with ``value`` at one entry of ``where``."""
    B, _, T, _ = BAD_VALUE_SHAPE
    rng = np.random.default_rng(1)
    C = 8
    arrays = dict(x=rng.standard_normal((B, T, C)), W_qkv=rng.standard_normal((C, 3 * C)) / 3,
                  b_qkv=rng.standard_normal(3 * C) / 3, W_out=rng.standard_normal((C, C)) / 3,
                  b_out=rng.standard_normal(C) / 3, dy=rng.standard_normal((B, T, C)))
    arrays = {name: a.astype(dtype) for name, a in arrays.items()}
    if where is not None:
        arrays[where].flat[5] = value
    return arrays


def _run_mha(module, arrays, causal):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        names = ("x", "W_qkv", "b_qkv", "W_out", "b_out")
        y, cache = module.multi_head_attention_forward(*(arrays[n] for n in names), 2, causal=causal)
        return (y,) + tuple(module.multi_head_attention_backward(arrays["dy"], cache))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("where, value", [("x", np.nan), ("W_qkv", np.inf), ("b_qkv", np.nan), ("W_out", np.nan),
                                          ("dy", np.nan), (None, None)],
                         ids=["nan-x", "inf-W_qkv", "nan-b_qkv", "nan-W_out", "nan-dy", "finite"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_numba_multi_head_attention_bad_values_land_where_the_reference_puts_them(dtype, where, value, causal):
    arrays = _bad_value_mha_inputs(dtype, where, value)
    names = ("y", "dx", "dW_qkv", "db_qkv", "dW_out", "db_out")
    for name, actual, desired in zip(names, _run_mha(npllm_kernels.cpu, arrays, causal), _run_mha(ref, arrays, causal)):
        assert_same_bad_values(actual, desired, name)


