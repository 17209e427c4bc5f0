"""Flash attention (Numba CPU) against the NumPy reference ``npllm.layers.scaled_dot_product_attention``.

The kernel must give the reference's output and all three gradients for any shapes (sizes that are not
multiples of its 64-wide tiles, T = 1, Tq ≠ Tk), causal or not, with any boolean mask broadcastable to
(B, H, Tq, Tk); a query with no allowed key must output zeros and pass no gradient (never NaN).

Tolerances: float64 1e-10, float32 1e-4, relative to each entry or to the size of the terms it sums
(:func:`_term_scales`: an entry that is a cancelling sum, such as dq with a single key, where dS = 0,
carries its terms' rounding).  A float32 kernel is compared with the reference evaluated in float64 on
the same float32 inputs: the exact answer up to rounding.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.gradcheck import check_op
from npllm_kernels.cpu import attention

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
forward, backward = attention.scaled_dot_product_attention_forward, attention.scaled_dot_product_attention_backward


def _inputs(rng, B, H, Tq, Tk, d, dv, dtype):
    q, k = (rng.standard_normal((B, H, T, d)).astype(dtype) for T in (Tq, Tk))
    v = rng.standard_normal((B, H, Tk, dv)).astype(dtype)
    dout = rng.standard_normal((B, H, Tq, dv)).astype(dtype)
    return q, k, v, dout


def assert_matches_reference(q, k, v, dout, mask=None, causal=False):
    """Kernel output and gradients equal the float64 reference's; the inputs are left untouched."""
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
