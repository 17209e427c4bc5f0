"""Fused Numba CPU kernels (cross-entropy, layer norm, GELU) against the NumPy reference in npllm.layers.

Each kernel must agree with its reference op on values and every gradient, leave its inputs untouched,
keep the reference's signature, and pass a float64 numerical gradient check of its own.

Tolerances: float64 1e-10, float32 1e-4, relative to each entry or to the size of the terms it is
computed from (``scale``; by default the largest entry of the expected array), since an entry that is
a sum cancelling to ~0 carries the rounding error of its terms.  A float32 kernel is compared with the
reference evaluated in float64 on the same float32 inputs — the exact answer up to float32 rounding —
so the reference's own float32 rounding (1 + tanh(u) in GELU's tail, x − μ in layer norm) does not
count against the kernel; its output dtype must still be float32.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.backend import ops, use_backend
from npllm.gradcheck import check_op
from npllm_kernels.cpu import activations, cross_entropy, layer_norm, mlp

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)
FUSED = {"cross_entropy": cross_entropy, "layer_norm": layer_norm, "gelu": activations}


def _float64(a):
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


def assert_close(actual, desired, dtype, name="", scale=None):
    """actual has ``dtype``, desired's shape, and entries within RTOL of desired's or of ``scale``."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == desired.shape, f"{name}: shape {actual.shape} vs {desired.shape}"
    if scale is None:
        scale = float(np.max(np.abs(desired), initial=0.0))
    np.testing.assert_allclose(actual, desired.astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=name)


def assert_matches_reference(op, inputs, kwargs, douts, dtype, out_scales=None, grad_scales=None):
    """Kernel forward + backward vs the reference's (in float64); inputs and douts must stay unchanged."""
    kernel_fw, kernel_bw = getattr(FUSED[op], f"{op}_forward"), getattr(FUSED[op], f"{op}_backward")
    ref_fw, ref_bw = getattr(ref, f"{op}_forward"), getattr(ref, f"{op}_backward")
    originals = [np.copy(x) for x in inputs + douts]
    *outs, cache = kernel_fw(*inputs, **kwargs)
    *ref_outs, ref_cache = ref_fw(*[_float64(x) for x in inputs], **kwargs)
    for k, (out, ref_out, scale) in enumerate(zip(outs, ref_outs, out_scales or [None] * len(outs))):
        assert_close(out, ref_out, dtype, f"{op} output {k}", scale)
    grads = kernel_bw(*douts, cache)
    ref_grads = ref_bw(*[_float64(d) for d in douts], ref_cache)
    grads, ref_grads = (grads, ref_grads) if isinstance(grads, tuple) else ((grads,), (ref_grads,))
    assert len(grads) == len(ref_grads)
    for k, (grad, ref_grad, scale) in enumerate(zip(grads, ref_grads, grad_scales or [None] * len(grads))):
        assert_close(grad, ref_grad, dtype, f"{op} gradient {k}", scale)
    for before, after in zip(originals, inputs + douts):
        np.testing.assert_array_equal(after, before, err_msg=f"{op} modified an input")


@pytest.mark.parametrize("op", sorted(FUSED))
def test_kernel_signatures_equal_the_reference(op):
    for suffix in ("_forward", "_backward"):
        name = op + suffix
        assert inspect.signature(getattr(FUSED[op], name)) == inspect.signature(getattr(ref, name)), name


@pytest.mark.parametrize("op", sorted(FUSED))
def test_numba_backend_runs_the_fused_kernel_and_its_backward(op):
    with use_backend("numba"):
        assert getattr(ops, f"{op}_forward") is getattr(FUSED[op], f"{op}_forward")


# ---- cross-entropy ----

@given(dtype=dtypes, seed=seeds, lead=st.sampled_from([(1,), (5,), (2, 3), (3, 1, 2)]),
       V=st.sampled_from([1, 2, 17, 513, 1025]), ignore_index=st.sampled_from([-100, 0, 3]),
       scale=st.sampled_from([0.1, 5.0, 1e4]), dloss=st.sampled_from([1.0, -0.5, None]))
def test_cross_entropy_matches_reference(dtype, seed, lead, V, ignore_index, scale, dloss):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(lead + (V,)) * scale).astype(dtype)
    targets = rng.integers(0, V, lead)
    targets[rng.random(lead) < 0.3] = ignore_index    # exercise ignored rows (ignore_index may be a class)
    # The loss is lse − logit[target], a difference of numbers as large as the logits: a confident row
    # leaves a tiny loss whose float32 error is relative to the logits' size, not to the loss's.
    loss_scale = max(1.0, float(np.max(np.abs(logits), initial=0.0)))
    # dlogits = dloss (softmax − onehot) / n_kept: on a confident row p − 1 cancels, so its float32 error
    # is relative to the terms' size |dloss| / n_kept, not to the small difference.
    n_kept = max(1, int(np.count_nonzero(targets != ignore_index)))
    grad_scale = abs(1.0 if dloss is None else dloss) / n_kept
    assert_matches_reference("cross_entropy", [logits, targets], {"ignore_index": ignore_index}, [dloss], dtype,
                             out_scales=[loss_scale], grad_scales=[grad_scale])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_and_exact_for_logits_of_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    targets = np.array([1, 0, 0])
    loss, cache = cross_entropy.cross_entropy_forward(logits, targets)
    # loss per row: 2e4, 2e4, log 2 (two tied maxima)
    np.testing.assert_allclose(loss, (4e4 + np.log(2.0)) / 3, rtol=RTOL[dtype])
    dlogits = cross_entropy.cross_entropy_backward(1.0, cache)
    np.testing.assert_allclose(dlogits, np.array([[1, -1, 0], [-1, 0, 1], [-0.5, 0.5, 0]]) / 3, atol=RTOL[dtype])


def test_cross_entropy_with_masked_minus_inf_logits_matches_reference():
    logits = np.random.default_rng(0).standard_normal((4, 600))
    logits[:, 1::3] = -np.inf                        # a masked vocabulary; every target is allowed
    logits[2, :] = -np.inf
    logits[2, 599] = 0.0                             # one row with a single allowed class
    targets = np.array([0, 3, 599, 597])
    assert_matches_reference("cross_entropy", [logits, targets], {}, [1.0], np.float64)


def test_cross_entropy_all_targets_ignored_gives_zero_loss_and_zero_gradient():
    loss, cache = cross_entropy.cross_entropy_forward(np.ones((2, 3, 5)), np.full((2, 3), -100))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(cross_entropy.cross_entropy_backward(1.0, cache), 0.0)


def test_cross_entropy_backward_writes_into_the_cache_buffer_once():
    logits = np.random.default_rng(1).standard_normal((3, 4))
    _, cache = cross_entropy.cross_entropy_forward(logits, np.array([0, 1, 2]))
    dlogits = cross_entropy.cross_entropy_backward(1.0, cache)
    assert np.shares_memory(dlogits, cache.dlogits) and not np.shares_memory(dlogits, logits)
    with pytest.raises(RuntimeError, match="already used"):
        cross_entropy.cross_entropy_backward(1.0, cache)


def test_cross_entropy_rejects_bad_targets_like_the_reference():
    logits = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        cross_entropy.cross_entropy_forward(logits, np.array([0, 5]))
    with pytest.raises(TypeError, match="integer"):
        cross_entropy.cross_entropy_forward(logits, np.array([0.0, 1.0]))
    _, cache = cross_entropy.cross_entropy_forward(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="dloss must be a scalar"):
        cross_entropy.cross_entropy_backward(np.ones(2), cache)
    with pytest.raises(TypeError, match="FusedCrossEntropyCache"):
        cross_entropy.cross_entropy_backward(1.0, ref.cross_entropy_forward(logits, np.array([0, 1]))[1])


def test_cross_entropy_backward_passes_gradient_check():
    rng = np.random.default_rng(2)
    targets = np.array([[1, -100, 4], [0, 2, 2]])
    report = check_op(cross_entropy.cross_entropy_forward, cross_entropy.cross_entropy_backward,
                      inputs=[rng.standard_normal((2, 3, 5)), targets])
    assert report.passed, report


# ---- layer norm ----

@given(dtype=dtypes, seed=seeds, lead=st.sampled_from([(1,), (7,), (2, 3), (17, 1)]),
       C=st.sampled_from([1, 2, 33, 768]), offset=st.sampled_from([0.0, 100.0]),
       eps=st.sampled_from([1e-5, 0.1]), none_dy=st.booleans())
def test_layer_norm_matches_reference(dtype, seed, lead, C, offset, eps, none_dy):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(lead + (C,)) + offset).astype(dtype)   # offset: |mean| >> std
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    dy = None if none_dy else rng.standard_normal(x.shape).astype(dtype)
    assert_matches_reference("layer_norm", [x, gamma, beta], {"eps": eps}, [dy], dtype,
                             grad_scales=[_layer_norm_dx_scale(x, gamma, dy, eps), None, None])


def _layer_norm_dx_scale(x, gamma, dy, eps):
    """Size of the terms of dx = (g − mean g − x̂ mean(g x̂)) rstd: max |dy γ| · max rstd."""
    if dy is None:
        return 0.0
    rstd = 1.0 / np.sqrt(x.astype(np.float64).var(axis=-1) + eps)
    return float(np.max(np.abs(dy.astype(np.float64) * gamma)) * np.max(rstd))


def test_layer_norm_accepts_a_non_contiguous_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5))[::2, ::-1]          # strided view
    assert_matches_reference("layer_norm", [x, np.ones(5), np.zeros(5)], {}, [rng.standard_normal((3, 5))],
                             np.float64)


def test_layer_norm_rejects_mismatched_gamma_like_the_reference():
    with pytest.raises(ValueError, match=r"gamma must have shape \(4,\)"):
        layer_norm.layer_norm_forward(np.zeros((2, 4)), np.ones(3), np.zeros(4))


def test_layer_norm_backward_passes_gradient_check():
    rng = np.random.default_rng(4)
    report = check_op(layer_norm.layer_norm_forward, layer_norm.layer_norm_backward,
                      inputs=[rng.standard_normal((2, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)])
    assert report.passed, report


# ---- GELU ----

@given(dtype=dtypes, seed=seeds, shape=st.sampled_from([(1,), (3, 5), (2, 4097), (2, 3, 7)]),
       approximate=st.sampled_from(["tanh", "none"]), scale=st.sampled_from([1.0, 12.0]),
       none_dy=st.booleans())
def test_gelu_matches_reference(dtype, seed, shape, approximate, scale, none_dy):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)      # scale 12: deep in both tails
    dy = None if none_dy else rng.standard_normal(shape).astype(dtype)
    # y = x Φ(x) and dx = dy GELU'(x) with 0 ≤ Φ ≤ 1, |GELU'| < 1.2: |x| and |dy| size the terms (in the
    # far negative tail the reference's 1 + tanh(u) is exactly 0, the kernel's x σ(2u) a tiny number).
    dy_scale = 0.0 if dy is None else np.max(np.abs(dy))
    assert_matches_reference("gelu", [x], {"approximate": approximate}, [dy], dtype,
                             out_scales=[np.max(np.abs(x))], grad_scales=[dy_scale])


def test_gelu_tanh_stays_accurate_in_the_negative_tail_where_one_plus_tanh_cancels():
    x = np.array([-6.0, -8.0, -10.0])
    y, _ = activations.gelu_forward(x)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    exact = x / (1 + np.exp(-2 * u))                           # = 0.5 x (1 + tanh u), no cancellation
    np.testing.assert_allclose(y, exact, rtol=1e-13)


def test_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ValueError, match="approximate must be 'tanh' or 'none'"):
        activations.gelu_forward(np.zeros(3), approximate="sigmoid")


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_backward_passes_gradient_check(approximate):
    x = np.random.default_rng(5).standard_normal((3, 7)) * 2
    report = check_op(activations.gelu_forward, activations.gelu_backward, inputs=[x],
                      kwargs={"approximate": approximate})
    assert report.passed, report


@pytest.fixture
def one_numba_thread():
    """Run the test with one Numba thread (the kernels then take their serial twins), then restore."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["gelu", "layer_norm"])
def test_serial_twins_used_with_one_thread_match_the_reference(op, dtype, one_numba_thread):
    import numba
    assert numba.get_num_threads() == 1
    assert activations.for_thread_count(activations._gelu_tanh_kernel, activations._gelu_tanh_serial) \
        is activations._gelu_tanh_serial
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    if op == "gelu":
        for approximate in ("tanh", "none") if dtype == np.float32 else ("tanh",):   # erf: one compile
            assert_matches_reference("gelu", [x], {"approximate": approximate}, [dy], dtype,
                                     out_scales=[np.max(np.abs(x))], grad_scales=[np.max(np.abs(dy))])
    else:
        gamma, beta = rng.standard_normal(33).astype(dtype), rng.standard_normal(33).astype(dtype)
        assert_matches_reference("layer_norm", [x, gamma, beta], {}, [dy], dtype,
                                 grad_scales=[_layer_norm_dx_scale(x, gamma, dy, 1e-5), None, None])


@pytest.fixture
def parallel_on_any_size(monkeypatch):
    """Make the kernels take their parallel versions even on the small shapes tests use."""
    from npllm_kernels.cpu import _threads
    monkeypatch.setattr(_threads, "PARALLEL_MIN_WORK", 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["gelu", "layer_norm", "cross_entropy"])
def test_parallel_kernels_used_on_large_inputs_match_the_reference(op, dtype, parallel_on_any_size):
    import numba
    from npllm_kernels.cpu._threads import for_thread_count
    if numba.get_num_threads() > 1:
        assert for_thread_count(activations._gelu_tanh_kernel, activations._gelu_tanh_serial, 1) \
            is activations._gelu_tanh_kernel
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((5, 9, 33)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    if op == "gelu":
        assert_matches_reference("gelu", [x], {"approximate": "tanh"}, [dy], dtype,
                                 out_scales=[np.max(np.abs(x))], grad_scales=[np.max(np.abs(dy))])
    elif op == "layer_norm":
        gamma, beta = rng.standard_normal(33).astype(dtype), rng.standard_normal(33).astype(dtype)
        assert_matches_reference("layer_norm", [x, gamma, beta], {}, [dy], dtype,
                                 grad_scales=[_layer_norm_dx_scale(x, gamma, dy, 1e-5), None, None])
    else:
        targets = rng.integers(0, 33, (5, 9))
        assert_matches_reference("cross_entropy", [x, targets], {}, [1.0], dtype,
                                 out_scales=[max(1.0, float(np.max(np.abs(x))))])


# ---- the feed-forward block (linear → GELU → linear) ----

def _mlp_inputs(rng, lead, C, M, dtype, biases=True):
    arrays = [rng.standard_normal(lead + (C,)), rng.standard_normal((C, M)) / np.sqrt(C),
              0.1 * rng.standard_normal(M), rng.standard_normal((M, C)) / np.sqrt(M), 0.1 * rng.standard_normal(C)]
    arrays = [a.astype(dtype) for a in arrays]
    if not biases:
        arrays[2] = arrays[4] = None
    return arrays


def _mlp_term_scales(inputs, dy, approximate):
    """Largest Σ|terms| behind each gradient entry (float64): a weight gradient sums over every row, and
    where its terms cancel, float32 rounding is relative to them, not to the small result."""
    x, W_fc, b_fc, W_proj, _ = inputs
    C, M = W_fc.shape
    x2, dy2 = x.reshape(-1, C), dy.reshape(-1, W_proj.shape[1])
    u = x2 @ W_fc + (0 if b_fc is None else b_fc)
    h, gelu_cache = ref.gelu_forward(u, approximate)
    du = ref.gelu_backward(dy2 @ W_proj.T, gelu_cache)
    top = lambda a: float(np.max(a, initial=0.0))  # noqa: E731
    return {"dx": top(np.abs(du) @ np.abs(W_fc).T), "dW_fc": top(np.abs(x2).T @ np.abs(du)),
            "db_fc": top(np.abs(du).sum(axis=0)), "dW_proj": top(np.abs(h).T @ np.abs(dy2)),
            "db_proj": top(np.abs(dy2).sum(axis=0))}


@given(dtype=dtypes, seed=seeds, lead=st.sampled_from([(1,), (3, 5), (2, 1, 4)]), C=st.sampled_from([1, 6]),
       M=st.sampled_from([1, 7, 24]), approximate=st.sampled_from(["tanh", "none"]), biases=st.booleans())
def test_mlp_matches_reference(dtype, seed, lead, C, M, approximate, biases):
    rng = np.random.default_rng(seed)
    inputs = _mlp_inputs(rng, lead, C, M, dtype, biases)
    dy = rng.standard_normal(lead + (C,)).astype(dtype)
    originals = [None if a is None else a.copy() for a in inputs + [dy]]
    y, cache = mlp.mlp_forward(*inputs, approximate=approximate)
    grads = mlp.mlp_backward(dy, cache)
    ref_y, ref_cache = ref.mlp_forward(*[None if a is None else a.astype(np.float64) for a in inputs],
                                       approximate=approximate)
    ref_grads = ref.mlp_backward(dy.astype(np.float64), ref_cache)
    assert_close(y, ref_y, dtype, "y")
    scales = _mlp_term_scales([None if a is None else a.astype(np.float64) for a in inputs],
                              dy.astype(np.float64), approximate)
    for name, grad, ref_grad in zip(("dx", "dW_fc", "db_fc", "dW_proj", "db_proj"), grads, ref_grads):
        assert (grad is None) == (ref_grad is None), name
        if grad is not None:
            assert_close(grad, ref_grad, dtype, name, scales[name])
    for before, after in zip(originals, inputs + [dy]):
        if before is not None:
            np.testing.assert_array_equal(after, before, err_msg="mlp modified an input")


def test_mlp_layers_interleave_like_a_model():
    # The backward's reused buffers: two layers' gradients, taken in reverse order, stay the reference's.
    rng = np.random.default_rng(13)
    layers = [_mlp_inputs(rng, (2, 5), 4, 16, np.float64) for _ in range(2)]
    dys = [rng.standard_normal((2, 5, 4)) for _ in range(2)]
    caches = [mlp.mlp_forward(*inputs)[1] for inputs in layers]
    grads = [mlp.mlp_backward(dy, cache) for dy, cache in zip(dys[::-1], caches[::-1])]
    for layer_grads, inputs, dy in zip(grads, layers[::-1], dys[::-1]):
        for grad, ref_grad in zip(layer_grads, ref.mlp_backward(dy, ref.mlp_forward(*inputs)[1])):
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


@settings(max_examples=6)
@given(seed=seeds, lead=st.sampled_from([(1,), (2, 3)]), C=st.sampled_from([1, 5]), M=st.sampled_from([3, 12]),
       approximate=st.sampled_from(["tanh", "none"]))
def test_mlp_passes_gradient_check(seed, lead, C, M, approximate):
    rng = np.random.default_rng(seed)
    report = check_op(mlp.mlp_forward, mlp.mlp_backward, _mlp_inputs(rng, lead, C, M, np.float64),
                      {"approximate": approximate})
    assert report.passed, report


def test_mlp_rejects_bad_inputs_like_the_reference():
    rng = np.random.default_rng(14)
    for name in ("mlp_forward", "mlp_backward"):
        assert inspect.signature(getattr(mlp, name)) == inspect.signature(getattr(ref, name)), name
    x, W_fc, b_fc, W_proj, b_proj = _mlp_inputs(rng, (2, 3), 5, 12, np.float64)
    for bad in ([x, W_fc, b_fc, W_proj[:4], b_proj], [x, W_fc, b_fc, W_proj, b_proj[:2]],
                [x[..., :4], W_fc, b_fc, W_proj, b_proj], [x.astype(np.float32), W_fc, b_fc, W_proj, b_proj]):
        with pytest.raises((TypeError, ValueError)) as expected:
            ref.mlp_forward(*bad)
        with pytest.raises(expected.type) as actual:
            mlp.mlp_forward(*bad)
        assert str(actual.value) == str(expected.value)
    with pytest.raises(TypeError, match="FusedMLPCache"):
        mlp.mlp_backward(np.zeros((2, 3, 5)), ref.mlp_forward(x, W_fc, b_fc, W_proj, b_proj)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlp_parallel_kernels_match_the_reference(dtype, parallel_on_any_size):
    rng = np.random.default_rng(15)
    inputs = _mlp_inputs(rng, (3, 37), 6, 20, dtype)
    dy = rng.standard_normal((3, 37, 6)).astype(dtype)
    grads = mlp.mlp_backward(dy, mlp.mlp_forward(*inputs)[1])
    ref_grads = ref.mlp_backward(dy.astype(np.float64),
                                 ref.mlp_forward(*[a.astype(np.float64) for a in inputs])[1])
    scales = _mlp_term_scales([a.astype(np.float64) for a in inputs], dy.astype(np.float64), "tanh")
    for name, grad, ref_grad in zip(("dx", "dW_fc", "db_fc", "dW_proj", "db_proj"), grads, ref_grads):
        assert_close(grad, ref_grad, dtype, name, scales[name])
