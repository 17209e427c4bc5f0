"""Attention with one query (a step of KV-cached decoding) on the Numba backend: ``_decode``'s kernel.

``scaled_dot_product_attention_forward`` sends Tq = 1 without a mask to a kernel that reads q, k and v
where they are, as a ``KVCache`` hands them over (slices of a longer buffer: not contiguous).  It must
give the reference's output for any such layout, grouped-query heads included, causal or not; its
backward is the reference's, recomputed from the inputs; non-finite inputs must come out with the
reference's NaN positions; the parallel and serial kernels must agree.  Tolerances: ``_helpers.RTOL``
against the reference evaluated in float64 on the same inputs.
"""
import warnings

import numpy as np
import pytest
from _helpers import assert_close, assert_same_bad_values
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.gradcheck import check_op
from npllm_kernels.cpu import _decode, attention


def _cached(rng, B, Hkv, Tk, width, dtype, room=5):
    """(B, Hkv, Tk, width) as a KVCache hands it over: the first Tk positions of a longer buffer."""
    buffer = rng.standard_normal((B, Hkv, Tk + room, width)).astype(dtype)
    return buffer[:, :, :Tk]


def _one_query(rng, B, H, Hkv, Tk, d, dv, dtype):
    q = rng.standard_normal((B, H, 1, d)).astype(dtype)
    return q, _cached(rng, B, Hkv, Tk, d, dtype), _cached(rng, B, Hkv, Tk, dv, dtype)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]), B=st.integers(1, 3),
       Hkv=st.integers(1, 3), group=st.sampled_from([1, 2, 3]), Tk=st.sampled_from([1, 2, 17, 64, 129, 300]),
       d=st.sampled_from([1, 5, 16, 64]), dv=st.sampled_from([1, 7, 64]), causal=st.booleans())
def test_one_query_attention_matches_reference(seed, dtype, B, Hkv, group, Tk, d, dv, causal):
    rng = np.random.default_rng(seed)
    q, k, v = _one_query(rng, B, Hkv * group, Hkv, Tk, d, dv, dtype)
    originals = [x.copy() for x in (q, k, v)]
    out, cache = attention.scaled_dot_product_attention_forward(q, k, v, causal=causal)
    assert isinstance(cache, attention.DecodeAttentionCache)
    expected, ref_cache = ref.scaled_dot_product_attention_forward(*(x.astype(np.float64) for x in (q, k, v)),
                                                                   causal=causal)
    assert_close(out, expected, dtype, "out")
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = attention.scaled_dot_product_attention_backward(dout, cache)
    expected_grads = ref.scaled_dot_product_attention_backward(dout.astype(np.float64), ref_cache)
    for name, actual, desired in zip(("dq", "dk", "dv"), grads, expected_grads):
        assert_close(actual, desired, dtype, name)
    for before, after in zip(originals, (q, k, v)):
        np.testing.assert_array_equal(after, before)


def test_one_query_with_a_mask_takes_the_flash_loops():
    q, k, v = _one_query(np.random.default_rng(0), 1, 2, 2, 9, 4, 4, np.float64)
    mask = np.ones((1, 1, 1, 9), dtype=bool)
    mask[..., 3] = False
    out, cache = attention.scaled_dot_product_attention_forward(q, k, v, mask=mask)
    assert isinstance(cache, attention.FlashAttentionCache)
    assert_close(out, ref.scaled_dot_product_attention_forward(q, k, v, mask=mask)[0], np.float64, "out")


def test_one_query_backward_passes_gradient_check():
    q, k, v = _one_query(np.random.default_rng(3), 2, 4, 2, 7, 3, 5, np.float64)
    report = check_op(attention.scaled_dot_product_attention_forward,
                      attention.scaled_dot_product_attention_backward, inputs=[q, k, v], kwargs={"causal": True})
    assert report.passed, report


@pytest.mark.parametrize("where, value", [("q", np.nan), ("k", np.nan), ("k", np.inf), ("k", -np.inf),
                                          ("v", np.nan), ("v", np.inf)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_one_query_bad_values_land_where_the_reference_puts_them(dtype, where, value):
    rng = np.random.default_rng(1)
    arrays = dict(zip("qkv", _one_query(rng, 2, 4, 2, 6, 4, 4, dtype)))
    arrays[where][1, 1, 0 if where == "q" else 3, 2] = value
    dout = rng.standard_normal((2, 4, 1, 4)).astype(dtype)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # NumPy warns on the NaN it computes
        for module in (attention, ref):
            out, cache = module.scaled_dot_product_attention_forward(arrays["q"], arrays["k"], arrays["v"],
                                                                    causal=True)
            results.append((out,) + tuple(module.scaled_dot_product_attention_backward(dout, cache)))
    assert not np.isfinite(results[1][0]).all()                 # the case does reach the output
    for actual, desired in zip(*results):
        assert_same_bad_values(actual, desired, dtype)


def test_parallel_and_serial_kernels_agree():
    rng = np.random.default_rng(2)
    H, Hkv, Tk, d = 6, 3, 333, 16
    q, k, v = _one_query(rng, 2, H, Hkv, Tk, d, d, np.float32)
    views = [x for a in (q, k, v) for x in _decode.flat_view(a)]
    outs = []
    for kernel in (_decode.decode_kernel, attention._decode_serial):
        out = np.full((2, 1, H * d), np.nan, dtype=np.float32)
        assert kernel(*views, H, Hkv, Tk, d, d, np.float32(0.25), out, np.empty((2 * H, Tk), np.float32))
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_flat_view_shares_row_contiguous_memory_and_copies_otherwise():
    buffer = np.arange(2 * 3 * 10 * 4, dtype=np.float64).reshape(2, 3, 10, 4)
    sliced = buffer[:, :, :7]
    flat, strides = _decode.flat_view(sliced)
    assert np.shares_memory(flat, buffer) and flat.flags.c_contiguous
    assert list(strides) == [120, 40, 4, 1]
    b, h, t, c = 1, 2, 6, 3
    assert flat[b * strides[0] + h * strides[1] + t * strides[2] + c] == sliced[b, h, t, c]
    swapped = buffer.swapaxes(2, 3)                               # rows not contiguous: copied
    flat, strides = _decode.flat_view(swapped)
    assert not np.shares_memory(flat, buffer)
    assert flat[1 * strides[0] + 2 * strides[1] + 3 * strides[2] + 6] == swapped[1, 2, 3, 6]
