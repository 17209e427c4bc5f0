"""RoPE (``rope``) and RoPE fused with attention (``rope_attention``): the reference against Hugging Face's
and Meta's formulas, its properties, errors and float64 gradient checks; the kernels against the reference.

Kernels: the Numba ``rope_attention`` (RoPE applied inside the flash loops) and the CUDA ``rope``, on
hypothesis-drawn shapes (odd T, n_kv_head = 1 and = n_head, positions with an offset or one row per batch
element, both pairings), float32 and float64, compared with the reference evaluated in float64 on the same
inputs: float64 to 1e-10, float32 to 1e-4 relative to the size of the terms (attention's gradients are
sums that cancel).  Every kernel backward is gradient-checked in float64 (≤ 1e-7) on the suite's cases,
keeps the reference's signature and errors, and puts NaN/inf where the reference does.
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
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
CUDA = pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)








# ---- rope reference: values and properties -------------------------------------------------------

def _rope_rotate_half_reference(x, positions, theta):
    """Hugging Face's LlamaRotaryEmbedding + apply_rotary_pos_emb, one (T,) position row, loops over t."""
    HS = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, HS, 2) / HS)
    out = np.empty_like(x)
    for t, p in enumerate(positions):
        emb = np.concatenate([p * inv_freq, p * inv_freq])
        rotated_half = np.concatenate([-x[..., t, HS // 2:], x[..., t, :HS // 2]], axis=-1)
        out[..., t, :] = x[..., t, :] * np.cos(emb) + rotated_half * np.sin(emb)
    return out


def _rope_complex_reference(x, positions, theta):
    """Meta's Llama / CS336: consecutive pairs as complex numbers times e^{i p θ_i}."""
    HS = x.shape[-1]
    freqs = np.outer(positions, 1.0 / theta ** (np.arange(0, HS, 2)[: HS // 2] / HS))   # (T, HS/2)
    as_complex = x[..., 0::2] + 1j * x[..., 1::2]
    rotated = as_complex * np.exp(1j * freqs)
    return np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)


@pytest.mark.parametrize("positions", [np.arange(6), np.array([3, 4, 5, 9, 17, 1000])], ids=["0..5", "offset, gaps"])
def test_rope_rotate_half_matches_hugging_face(positions):
    x = f64(2, 3, 6, 8)
    y, _ = L.rope_forward(x, positions)
    np.testing.assert_allclose(y, _rope_rotate_half_reference(x, positions, 10000.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("positions", [np.arange(5), np.array([7, 8, 20, 21, 500])], ids=["0..4", "offset, gaps"])
def test_rope_interleaved_matches_complex_multiplication(positions):
    x = f64(1, 2, 5, 6)
    y, _ = L.rope_forward(x, positions, theta=500.0, interleaved=True)
    np.testing.assert_allclose(y, _rope_complex_reference(x, positions, 500.0), rtol=1e-12, atol=1e-12)


def test_rope_pairings_differ_by_a_permutation_of_the_head_dimension():
    x, positions = f64(2, 2, 4, 8), np.arange(3, 7)
    to_halves = np.r_[0:8:2, 1:8:2]                     # (2i, 2i+1) → (i, i + HS/2)
    y_half, _ = L.rope_forward(x[..., to_halves], positions)
    y_interleaved, _ = L.rope_forward(x, positions, interleaved=True)
    np.testing.assert_allclose(y_half, y_interleaved[..., to_halves], rtol=1e-13, atol=1e-14)


def test_rope_with_batch_positions_rotates_each_row_by_its_own_positions():
    x = f64(2, 3, 4, 6)
    positions = np.array([[0, 1, 2, 3], [10, 11, 30, 31]])
    y, _ = L.rope_forward(x, positions)
    for b in range(2):
        np.testing.assert_array_equal(y[b:b + 1], L.rope_forward(x[b:b + 1], positions[b])[0])


def test_rope_at_position_zero_is_the_identity():
    x = f64(1, 2, 1, 4)
    np.testing.assert_array_equal(L.rope_forward(x, np.array([0]))[0], x)


def test_rope_computes_its_angles_in_the_input_dtype():
    # At position 10^6 a float32 angle is off by ~0.03 rad; float64 input must get float64 angles.
    x, positions = f64(1, 1, 2, 4), np.array([10**6, 10**6 + 1])
    y, cache = L.rope_forward(x, positions)
    assert y.dtype == np.float64 and cache.cos.dtype == np.float64
    np.testing.assert_allclose(y, _rope_rotate_half_reference(x, positions, 10000.0), rtol=1e-9, atol=1e-9)
    y32, cache32 = L.rope_forward(x.astype(np.float32), positions)
    assert y32.dtype == np.float32 and cache32.cos.dtype == np.float32
    assert L.rope_backward(np.ones_like(y32), cache32).dtype == np.float32




@settings(max_examples=20)
@given(T=st.integers(1, 7), half=st.integers(1, 4), offset=st.integers(0, 5000), interleaved=st.booleans(),
       seed=st.integers(0, 999))
def test_rope_preserves_norms_and_its_backward_undoes_it(T, half, offset, interleaved, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((2, 2, T, 2 * half))
    y, cache = L.rope_forward(x, offset + np.arange(T), interleaved=interleaved)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(L.rope_backward(y, cache), x, rtol=1e-10, atol=1e-12)   # Rᵀ R = I


@settings(max_examples=20)
@given(Tq=st.integers(1, 4), Tk=st.integers(1, 5), half=st.integers(1, 4), shift=st.integers(1, 3000),
       interleaved=st.booleans(), seed=st.integers(0, 999))
def test_rope_scores_depend_only_on_relative_position(Tq, Tk, half, shift, interleaved, seed):
    r = np.random.default_rng(seed)
    q, k = r.standard_normal((1, 2, Tq, 2 * half)), r.standard_normal((1, 2, Tk, 2 * half))
    q_positions, k_positions = r.choice(50, size=Tq), r.choice(50, size=Tk)   # any integers, unsorted

    def scores(q_pos, k_pos):
        rotated_q, _ = L.rope_forward(q, q_pos, interleaved=interleaved)
        rotated_k, _ = L.rope_forward(k, k_pos, interleaved=interleaved)
        return rotated_q @ rotated_k.swapaxes(-1, -2)                 # (1, 2, Tq, Tk)

    # Angles up to ~3000 rad lose ~1e-13 each to rounding: compare at 1e-9.
    np.testing.assert_allclose(scores(q_positions + shift, k_positions + shift), scores(q_positions, k_positions),
                               rtol=1e-9, atol=1e-9)


def test_rope_scores_change_with_the_distance():
    local = np.random.default_rng(3)
    q, k = local.standard_normal((1, 1, 1, 8)), local.standard_normal((1, 1, 1, 8))

    def score(m, n):
        return float(L.rope_forward(q, np.array([m]))[0].ravel() @ L.rope_forward(k, np.array([n]))[0].ravel())

    assert score(5, 5) == pytest.approx(float(q.ravel() @ k.ravel()), rel=1e-12)
    assert abs(score(5, 2) - score(5, 5)) > 1e-3 and score(5, 2) == pytest.approx(score(103, 100), rel=1e-10)




@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rope_and_rope_attention_compute_in_the_input_dtype(dtype):
    x = f64(1, 2, 3, 4).astype(dtype)
    y, cache = L.rope_forward(x, np.arange(3))
    assert y.dtype == dtype and L.rope_backward(y, cache).dtype == dtype
    out, cache = L.rope_attention_forward(x, x[:, :1], x[:, :1], np.arange(3))
    assert out.dtype == dtype and all(g.dtype == dtype for g in L.rope_attention_backward(out, cache))


# ---- rope_attention reference ------------------------------------------------------------------

def _attention_by_hand(q, k, v, causal):
    """softmax(q kᵀ/√d) v with k, v repeated over each group of query heads (Hugging Face's repeat_kv)."""
    groups = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if causal:
        T = q.shape[2]
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


@pytest.mark.parametrize("H,Hkv", [(4, 1), (4, 2), (2, 2)])
@pytest.mark.parametrize("causal", [False, True])
def test_rope_attention_is_hugging_faces_llama_attention(H, Hkv, causal):
    q, k, v, positions = f64(2, H, 5, 8), f64(2, Hkv, 5, 8), f64(2, Hkv, 5, 3), np.arange(4, 9)
    out, _ = L.rope_attention_forward(q, k, v, positions, causal=causal)
    rotated_q = _rope_rotate_half_reference(q, positions, 10000.0)
    rotated_k = _rope_rotate_half_reference(k, positions, 10000.0)
    np.testing.assert_allclose(out, _attention_by_hand(rotated_q, rotated_k, v, causal), rtol=1e-12, atol=1e-13)


def test_rope_attention_backward_is_the_chain_through_rope_and_attention():
    q, k, v, positions = f64(1, 4, 3, 6), f64(1, 2, 3, 6), f64(1, 2, 3, 2), np.array([[2, 7, 9]])
    out, cache = L.rope_attention_forward(q, k, v, positions, theta=100.0, interleaved=True)
    dout = f64(*out.shape)
    dq, dk, dv = L.rope_attention_backward(dout, cache)
    rq, q_cache = L.rope_forward(q, positions, 100.0, True)
    rk, k_cache = L.rope_forward(k, positions, 100.0, True)
    _, attn_cache = L.scaled_dot_product_attention_forward(rq, rk, v, causal=True)
    drq, drk, dv_expected = L.scaled_dot_product_attention_backward(dout, attn_cache)
    np.testing.assert_array_equal(dq, L.rope_backward(drq, q_cache))
    np.testing.assert_array_equal(dk, L.rope_backward(drk, k_cache))
    np.testing.assert_array_equal(dv, dv_expected)


# ---- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,message", [
    (lambda: L.rope_forward(f64(1, 2, 3, 5), np.arange(3)), ValueError, r"x's last dimension \(HS\) must be even.*got 5"),
    (lambda: L.rope_forward(f64(2, 3, 4), np.arange(3)), ValueError, r"x must have 4 dimensions \(B, NH, T, HS\)"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), np.arange(3.0)), TypeError, "positions must have an integer dtype, got float64"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), [0, 1, 2]), TypeError, "positions must be a numpy.ndarray of integers, got list"),
    (lambda: L.rope_forward(f64(2, 2, 3, 4), np.arange(4)), ValueError, r"positions must have shape \(T,\) = \(3,\) or \(B, T\) = \(2, 3\), got \(4,\)"),
    (lambda: L.rope_forward(f64(2, 2, 3, 4), np.zeros((1, 3), int)), ValueError, r"positions must have shape.*got \(1, 3\)"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), np.arange(3), theta=0.0), ValueError, "theta must be a finite number > 0, got 0.0"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), np.arange(3), interleaved="yes"), TypeError, "interleaved must be a bool, got str"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_rejects_another_ops_cache():
    _, cache = L.rms_norm_forward(f64(2, 3), np.ones(3))
    with pytest.raises(TypeError, match="cache must be the RopeCache returned by the forward, got RMSNormCache"):
        L.rope_backward(np.ones((1, 1, 2, 3)), cache)


ROPE_ATTENTION_BAD_CALLS = [
    ((f64(1, 2, 3, 5), f64(1, 2, 3, 5), f64(1, 2, 3, 5), np.arange(3)), {}, ValueError,
     r"q's last dimension \(HS\) must be even.*got 5"),
    ((f64(1, 2, 3, 4), f64(1, 2, 4, 4), f64(1, 2, 4, 4), np.arange(3)), {}, ValueError,
     r"positions must have shape \(T,\) = \(4,\) or \(B, T\) = \(1, 4\), got \(3,\)"),
    ((f64(1, 2, 3, 4), f64(1, 2, 3, 4), f64(1, 2, 3, 4), np.arange(3.0)), {}, TypeError,
     "positions must have an integer dtype, got float64"),
    ((f64(1, 4, 3, 4), f64(1, 3, 3, 4), f64(1, 3, 3, 4), np.arange(3)), {}, ValueError,
     r"k's head count Hkv \(axis 1\) must divide q's H = 4"),
    ((f64(1, 2, 3, 4), f64(1, 2, 3, 4), f64(1, 2, 3, 4), np.arange(3)), {"causal": 1}, TypeError,
     "causal must be a bool, got int"),
    ((f64(1, 2, 3, 4), f64(1, 2, 3, 4), f64(1, 2, 3, 4), np.arange(3)), {"mask": np.ones((3, 2), bool)}, ValueError,
     r"mask must be broadcastable to \(B, H, Tq, Tk\)"),
    ((f64(1, 2, 3, 4), f64(1, 2, 3, 4).astype(np.float32), f64(1, 2, 3, 4), np.arange(3)), {}, TypeError,
     "must share one dtype"),
]


@pytest.mark.parametrize("args,kwargs,error,message", ROPE_ATTENTION_BAD_CALLS)
def test_rope_attention_bad_input_raises_a_clear_error(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        L.rope_attention_forward(*args, **kwargs)


# ---- reference: gradient checks (float64, ≤ 1e-7) ------------------------------------------------

SUITE = [(name, case) for name in ("rope", "rope_attention") for case in op_cases(name, np.random.default_rng(2))]


@pytest.mark.parametrize("name,case", SUITE, ids=[f"{n}-{c.label}" for n, c in SUITE])
def test_suite_cases_pass_the_gradient_check(name, case):
    report = check_case(case)
    assert report.passed and report.max_error <= 1e-7, str(report)


@settings(max_examples=15)
@given(B=st.integers(1, 2), NH=st.integers(1, 3), T=st.sampled_from([1, 3, 5]), half=st.integers(1, 3),
       offset=st.integers(0, 100), per_row=st.booleans(), interleaved=st.booleans(), seed=st.integers(0, 999))
def test_rope_backward_on_random_shapes_and_positions(B, NH, T, half, offset, per_row, interleaved, seed):
    r = np.random.default_rng(seed)
    positions = offset + (np.sort(r.choice(200, size=(B, T))) if per_row else np.arange(T))
    report = check_op(L.rope_forward, L.rope_backward, [r.standard_normal((B, NH, T, 2 * half)), positions],
                      {"interleaved": interleaved})
    assert report.passed, str(report)




@settings(max_examples=10)
@given(B=st.integers(1, 2), n_kv_head=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]), T=st.sampled_from([1, 3, 5]),
       half=st.integers(1, 3), offset=st.integers(0, 100), per_row=st.booleans(), interleaved=st.booleans(),
       causal=st.booleans(), seed=st.integers(0, 999))
def test_rope_attention_backward_on_random_shapes(B, n_kv_head, groups, T, half, offset, per_row, interleaved, causal,
                                                  seed):
    r = np.random.default_rng(seed)
    positions = offset + (np.sort(r.choice(200, size=(B, T))) if per_row else np.arange(T))
    inputs = [r.standard_normal((B, n_kv_head * groups, T, 2 * half)), r.standard_normal((B, n_kv_head, T, 2 * half)),
              r.standard_normal((B, n_kv_head, T, 3)), positions]
    report = check_op(L.rope_attention_forward, L.rope_attention_backward, inputs,
                      {"interleaved": interleaved, "causal": causal})
    assert report.passed, str(report)


# ---- kernels: rope_attention (numba) -------------------------------------------------------------

def _term_scales(q, k, v, dout):
    """Sizes of the terms each output and gradient sums (float64): attention's dq, dk cancel to ~0 when
    the probabilities are nearly one-hot, and then carry the rounding of their terms."""
    scale = 1 / np.sqrt(q.shape[-1])
    size = lambda a: float(np.max(np.abs(a), initial=0.0))  # noqa: E731
    T = k.shape[2]
    return [size(v), size(dout) * size(v) * T * size(k) * scale * 4, size(dout) * size(v) * T * size(q) * scale * 4,
            size(dout) * T * 2]


def _compare_rope_attention(module, args, kwargs, dout, dtype):
    originals = [a.copy() for a in args[:3] + (dout,)]
    out, cache = module.rope_attention_forward(*args, **kwargs)
    out_ref, cache_ref = L.rope_attention_forward(*[a.astype(np.float64) for a in args[:3]], args[3], **kwargs)
    grads = module.rope_attention_backward(dout, cache)
    grads_ref = L.rope_attention_backward(dout.astype(np.float64), cache_ref)
    scales = _term_scales(*[a.astype(np.float64) for a in args[:3]], dout.astype(np.float64))
    for actual, desired, scale in zip((out,) + grads, (out_ref,) + grads_ref, scales):
        assert_close(actual, desired, dtype, scale=scale if dtype == np.float32 else None)
    for before, after in zip(originals, args[:3] + (dout,)):
        np.testing.assert_array_equal(after, before)


def test_rope_attention_kernel_has_the_reference_signature():
    module = kernel_module("numba", "rope_attention")
    for name in ("rope_attention_forward", "rope_attention_backward"):
        assert inspect.signature(getattr(module, name)) == inspect.signature(getattr(L, name))


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=10)
@given(B=st.integers(1, 2), n_kv_head=st.sampled_from([1, 2]), groups=st.sampled_from([1, 3]),
       T=st.sampled_from([1, 3, 5, 9, 17]), d=st.sampled_from([2, 4, 6]), offset=st.integers(0, 1000),
       per_row=st.booleans(), interleaved=st.booleans(), causal=st.booleans(), views=st.booleans(),
       seed=st.integers(0, 999))
def test_rope_attention_kernel_matches_the_reference(dtype, B, n_kv_head, groups, T, d, offset, per_row, interleaved,
                                                      causal, views, seed):
    module = kernel_module("numba", "rope_attention")
    r = np.random.default_rng(seed)
    H = n_kv_head * groups                                     # groups = 1: n_kv_head = n_head
    positions = offset + (np.sort(r.choice(50, size=(B, T))) if per_row else np.arange(T))

    def heads(n, width):
        if views:   # split_heads views of a (B, T, n·width) projection, as the model passes them
            return r.standard_normal((B, T, n * width)).astype(dtype).reshape(B, T, n, width).transpose(0, 2, 1, 3)
        return r.standard_normal((B, n, T, width)).astype(dtype)

    args = (heads(H, d), heads(n_kv_head, d), heads(n_kv_head, 3), positions)
    dout = r.standard_normal((B, H, T, 3)).astype(dtype)
    _compare_rope_attention(module, args, {"interleaved": interleaved, "causal": causal}, dout, dtype)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_rope_attention_numba_parallel_kernel_matches_the_reference(n_kv_head):
    # B·H·T²·d above PARALLEL_MIN_WORK: the parallel loops run, per key tile when there are fewer kv
    # heads than threads (n_kv_head = 1), per kv head otherwise; T = 131 crosses the 64 and 128 tiles.
    module = kernel_module("numba", "rope_attention")
    args = (f64(1, 4, 131, 8), f64(1, n_kv_head, 131, 8), f64(1, n_kv_head, 131, 8), np.arange(3, 134))
    _compare_rope_attention(module, args, {"causal": True}, f64(1, 4, 131, 8), np.float64)


@pytest.mark.parametrize("name,case", [s for s in SUITE if s[0] == "rope_attention"],
                         ids=[c.label for n, c in SUITE if n == "rope_attention"])
def test_rope_attention_kernel_passes_the_gradient_check(name, case):
    report = check_case(_on_backend(case, kernel_module("numba", "rope_attention")))
    assert report.passed and report.max_error <= 1e-7, str(report)


@pytest.mark.parametrize("args,kwargs,error,message", ROPE_ATTENTION_BAD_CALLS)
def test_rope_attention_kernel_raises_the_reference_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        kernel_module("numba", "rope_attention").rope_attention_forward(*args, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("where", ["q", "k", "v", "dout"])
def test_rope_attention_kernel_bad_values_land_where_the_reference_puts_them(dtype, value, where):
    module = kernel_module("numba", "rope_attention")
    arrays = {name: f64(*shape).astype(dtype) for name, shape in
              (("q", (1, 4, 5, 4)), ("k", (1, 2, 5, 4)), ("v", (1, 2, 5, 3)), ("dout", (1, 4, 5, 3)))}
    arrays[where][0, 1, 2, 1] = value
    positions = np.arange(7, 12)
    with np.errstate(all="ignore"):
        out, cache = module.rope_attention_forward(arrays["q"], arrays["k"], arrays["v"], positions)
        out_ref, cache_ref = L.rope_attention_forward(arrays["q"], arrays["k"], arrays["v"], positions)
        grads = module.rope_attention_backward(arrays["dout"], cache)
        grads_ref = L.rope_attention_backward(arrays["dout"], cache_ref)
    for actual, desired in zip((out,) + grads, (out_ref,) + grads_ref):
        assert_same_bad_values(actual, desired, dtype)


def test_rope_attention_kernel_cache_is_refused_by_the_attention_backward():
    module = kernel_module("numba", "rope_attention")
    q = f64(1, 2, 3, 4)
    out, cache = module.rope_attention_forward(q, q, q, np.arange(3))
    with pytest.raises(TypeError, match="cache must be the FlashAttentionCache"):
        module.scaled_dot_product_attention_backward(out, cache)


# ---- kernels: rope (cuda) ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", [CUDA])
def test_rope_kernels_have_the_reference_signature(backend):
    module = kernel_module(backend, "rope")
    for name in ("rope_forward", "rope_backward"):
        assert inspect.signature(getattr(module, name)) == inspect.signature(getattr(L, name))


@pytest.mark.parametrize("backend", [CUDA])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=5)
@given(B=st.integers(1, 2), NH=st.sampled_from([1, 3]), T=st.sampled_from([1, 3, 7]), half=st.integers(1, 5),
       offset=st.integers(0, 5000), per_row=st.booleans(), interleaved=st.booleans(), seed=st.integers(0, 999))
def test_rope_kernel_matches_the_reference(backend, dtype, B, NH, T, half, offset, per_row, interleaved, seed):
    module = kernel_module(backend, "rope")
    r = np.random.default_rng(seed)
    positions = offset + (np.sort(r.choice(100, size=(B, T))) if per_row else np.arange(T))
    x, dy = (r.standard_normal((B, NH, T, 2 * half)).astype(dtype) for _ in range(2))
    y, cache = module.rope_forward(x, positions, 500.0, interleaved)
    y_ref, cache_ref = L.rope_forward(x, positions, 500.0, interleaved)   # the same dtype: the same angles
    assert_close(y, y_ref, dtype)
    assert_close(module.rope_backward(dy, cache), L.rope_backward(dy, cache_ref), dtype)


@pytest.mark.parametrize("backend", [CUDA])
@pytest.mark.parametrize("case", [c for n, c in SUITE if n == "rope"], ids=[c.label for n, c in SUITE if n == "rope"])
def test_rope_kernel_passes_the_gradient_check(backend, case):
    report = check_case(_on_backend(case, kernel_module(backend, "rope")))
    assert report.passed and report.max_error <= 1e-7, str(report)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the CUDA simulator's threads warn on inf · 0
@pytest.mark.parametrize("backend", [CUDA])
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_rope_kernel_bad_values_land_where_the_reference_puts_them(backend, value):
    module = kernel_module(backend, "rope")
    x, dy = f64(1, 2, 3, 4), f64(1, 2, 3, 4)
    x[0, 1, 2, 3] = value
    dy[0, 0, 1, 0] = value
    with np.errstate(all="ignore"):
        y, cache = module.rope_forward(x, np.arange(3))
        y_ref, cache_ref = L.rope_forward(x, np.arange(3))
        assert_same_bad_values(y, y_ref, np.float64)
        assert_same_bad_values(module.rope_backward(dy, cache), L.rope_backward(dy, cache_ref), np.float64)
