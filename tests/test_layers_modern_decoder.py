"""Llama's ops (rms_norm, silu, swiglu, swiglu_mlp, rope, grouped-query attention): values against
independent formulas written here, errors, gradient checks (float64, ≤ 1e-7) and properties."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npllm import layers as L
from npllm.gradcheck import check_op
from npllm.gradcheck_suite import check_case, op_cases

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)
NEW_OPS = ("rms_norm", "silu", "swiglu", "swiglu_mlp", "rope")


# ---- values against independent formulas ---------------------------------------------------------

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


def test_silu_values():
    x = np.array([-800.0, -1.0, 0.0, 1.0, 2.0, 800.0])
    y, _ = L.silu_forward(x)
    np.testing.assert_allclose(y, [-0.0, -1 / (1 + np.e), 0.0, 1 / (1 + np.exp(-1)), 2 / (1 + np.exp(-2)), 800.0],
                               rtol=1e-15, atol=1e-300)
    assert np.all(np.isfinite(L.silu_backward(np.ones_like(x), _)))


def test_swiglu_and_swiglu_mlp_match_llama_mlp():
    x, W_gate, W_up, W_down = f64(2, 3, 5), f64(5, 7), f64(5, 7), f64(7, 5)
    silu = lambda z: z / (1 + np.exp(-z))
    y, _ = L.swiglu_mlp_forward(x, W_gate, W_up, W_down)
    np.testing.assert_allclose(y, (silu(x @ W_gate) * (x @ W_up)) @ W_down, rtol=1e-12)
    gate, up = f64(4, 6), f64(4, 6)
    np.testing.assert_allclose(L.swiglu_forward(gate, up)[0], silu(gate) * up, rtol=1e-14)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_ops_compute_in_the_input_dtype(dtype):
    x = f64(2, 3, 4).astype(dtype)
    W = f64(4, 4).astype(dtype)
    assert L.rms_norm_forward(x, np.ones(4, dtype))[0].dtype == dtype
    assert L.silu_forward(x)[0].dtype == dtype
    assert L.swiglu_forward(x, x)[0].dtype == dtype
    y, cache = L.swiglu_mlp_forward(x, W, W, W)
    assert y.dtype == dtype and all(g.dtype == dtype for g in L.swiglu_mlp_backward(y, cache))
    q = f64(1, 4, 3, 2).astype(dtype)
    kv = f64(1, 2, 3, 2).astype(dtype)
    out, cache = L.scaled_dot_product_attention_forward(q, kv, kv, causal=True)
    assert out.dtype == dtype and all(g.dtype == dtype for g in L.scaled_dot_product_attention_backward(out, cache))


# ---- grouped-query attention -------------------------------------------------------------------

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


# ---- properties ---------------------------------------------------------------------------------

@settings(max_examples=20)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9)), seed=st.integers(0, 999),
       scale=st.floats(1e-2, 1e3))
def test_rms_norm_output_has_unit_rms_times_weight(shape, seed, scale):
    r = np.random.default_rng(seed)
    x, weight = scale * r.standard_normal(shape), r.uniform(0.5, 2.0, shape[-1])
    y, _ = L.rms_norm_forward(x, weight, eps=1e-12)
    rms = np.sqrt(np.mean((y / weight) ** 2, axis=-1))
    np.testing.assert_allclose(rms, 1.0, rtol=1e-6)   # eps=1e-12 against mean(x²) ≥ ~1e-10 here


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


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,message", [
    (lambda: L.rms_norm_forward(f64(2, 4), f64(3)), ValueError, r"weight must have shape \(4,\), got \(3,\)"),
    (lambda: L.rms_norm_forward(f64(2, 4), f64(4), eps=0.0), ValueError, "eps must be > 0, got 0.0"),
    (lambda: L.rms_norm_forward(f64(2, 4), f64(4).astype(np.float32)), TypeError, "must share one dtype"),
    (lambda: L.silu_forward(np.array([1, 2])), TypeError, "x must have dtype float32 or float64, got int64"),
    (lambda: L.swiglu_forward(f64(2, 4), f64(2, 3)), ValueError, r"up must have shape \(2, 4\), got \(2, 3\)"),
    (lambda: L.swiglu_mlp_forward(f64(2, 3), f64(4, 6), f64(4, 6), f64(6, 4)), ValueError,
     r"x's last dimension must equal W_gate's first \(C = 4\), got x \(2, 3\)"),
    (lambda: L.swiglu_mlp_forward(f64(2, 4), f64(4, 6), f64(4, 5), f64(6, 4)), ValueError, r"W_up must have shape \(4, 6\), got \(4, 5\)"),
    (lambda: L.swiglu_mlp_forward(f64(2, 4), f64(4, 6), f64(4, 6), f64(5, 4)), ValueError, r"W_down must have shape \(6, \*\), got \(5, 4\)"),
    (lambda: L.rope_forward(f64(1, 2, 3, 5), np.arange(3)), ValueError, r"x's last dimension \(HS\) must be even.*got 5"),
    (lambda: L.rope_forward(f64(2, 3, 4), np.arange(3)), ValueError, r"x must have 4 dimensions \(B, NH, T, HS\)"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), np.arange(3.0)), TypeError, "positions must have an integer dtype, got float64"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), [0, 1, 2]), TypeError, "positions must be a numpy.ndarray of integers, got list"),
    (lambda: L.rope_forward(f64(2, 2, 3, 4), np.arange(4)), ValueError, r"positions must have shape \(T,\) = \(3,\) or \(B, T\) = \(2, 3\), got \(4,\)"),
    (lambda: L.rope_forward(f64(2, 2, 3, 4), np.zeros((1, 3), int)), ValueError, r"positions must have shape.*got \(1, 3\)"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), np.arange(3), theta=0.0), ValueError, "theta must be a finite number > 0, got 0.0"),
    (lambda: L.rope_forward(f64(1, 2, 3, 4), np.arange(3), interleaved="yes"), TypeError, "interleaved must be a bool, got str"),
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 4, 3, 2), f64(1, 3, 5, 2), f64(1, 3, 5, 2)), ValueError,
     r"k's head count Hkv \(axis 1\) must divide q's H = 4.*got 3 in shape \(1, 3, 5, 2\)"),
    (lambda: L.scaled_dot_product_attention_forward(f64(1, 4, 3, 2), f64(1, 2, 5, 2), f64(1, 1, 5, 2)), ValueError,
     r"v must have shape \(1, 2, 5, \*\), got \(1, 1, 5, 2\)"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_rejects_another_ops_cache():
    _, cache = L.rms_norm_forward(f64(2, 3), np.ones(3))
    with pytest.raises(TypeError, match="cache must be the RopeCache returned by the forward, got RMSNormCache"):
        L.rope_backward(np.ones((1, 1, 2, 3)), cache)


def test_kernel_checks_refuse_grouped_query_inputs_clearly():
    # The numba attention kernel calls check_attention_inputs without grouped=True.
    from npllm.layers.attention import check_attention_inputs
    with pytest.raises(ValueError, match="k has 2 heads and q 4: grouped-query attention .* not by this kernel"):
        check_attention_inputs(f64(1, 4, 3, 2), f64(1, 2, 5, 2), f64(1, 2, 5, 2), None, False)


# ---- gradient checks (float64, ≤ 1e-7) ----------------------------------------------------------

SUITE = [(name, case) for name in NEW_OPS + ("scaled_dot_product_attention",)
         for case in op_cases(name, np.random.default_rng(2))]


@pytest.mark.parametrize("name,case", SUITE, ids=[f"{n}-{c.label}" for n, c in SUITE])
def test_suite_cases_pass_the_gradient_check(name, case):
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


@settings(max_examples=15)
@given(B=st.integers(1, 2), NH=st.integers(1, 3), T=st.sampled_from([1, 3, 5]), half=st.integers(1, 3),
       offset=st.integers(0, 100), per_row=st.booleans(), interleaved=st.booleans(), seed=st.integers(0, 999))
def test_rope_backward_on_random_shapes_and_positions(B, NH, T, half, offset, per_row, interleaved, seed):
    r = np.random.default_rng(seed)
    positions = offset + (np.sort(r.choice(200, size=(B, T))) if per_row else np.arange(T))
    report = check_op(L.rope_forward, L.rope_backward, [r.standard_normal((B, NH, T, 2 * half)), positions],
                      {"interleaved": interleaved})
    assert report.passed, str(report)


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


@settings(max_examples=10)
@given(shape=st.sampled_from([(1, 3), (2, 3, 4), (1, 5, 2)]), intermediate=st.integers(1, 7), seed=st.integers(0, 999))
def test_swiglu_mlp_backward_on_random_shapes(shape, intermediate, seed):
    r = np.random.default_rng(seed)
    C = shape[-1]
    inputs = [r.standard_normal(shape), 0.5 * r.standard_normal((C, intermediate)),
              0.5 * r.standard_normal((C, intermediate)), 0.5 * r.standard_normal((intermediate, C))]
    report = check_op(L.swiglu_mlp_forward, L.swiglu_mlp_backward, inputs)
    assert report.passed, str(report)
