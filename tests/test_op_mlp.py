"""The feed-forward block (linear → GELU → linear, GPT-2's MLP): the reference's gradients and Numba's fused kernel.

Reference (``npllm.layers.mlp``): float64 gradient checks of the op table's cases.  The Numba kernel
(``npllm_kernels.cpu.mlp``, with reused backward buffers and parallel versions) must give the reference's
output and five gradients, with or without biases, in either GELU form; tolerances: ``tests/_helpers.py``
(a weight gradient sums over every row, so it is compared relative to the size of its terms).
"""
import inspect

import numpy as np
import pytest
from _helpers import assert_close, assert_passes_gradient_check, gradcheck_cases
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.gradcheck import check_op
from npllm_kernels.cpu import mlp

dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------- reference


@pytest.mark.parametrize("name,case", gradcheck_cases("mlp"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


# ---------------------------------------------------------------- Numba: the fused kernel

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
def test_numba_mlp_matches_reference(dtype, seed, lead, C, M, approximate, biases):
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


def test_numba_mlp_layers_interleave_like_a_model():
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
def test_numba_mlp_passes_gradient_check(seed, lead, C, M, approximate):
    rng = np.random.default_rng(seed)
    report = check_op(mlp.mlp_forward, mlp.mlp_backward, _mlp_inputs(rng, lead, C, M, np.float64),
                      {"approximate": approximate})
    assert report.passed, report


def test_numba_mlp_rejects_bad_inputs_like_the_reference():
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
def test_numba_mlp_parallel_kernels_match_the_reference(dtype, parallel_on_any_size):
    rng = np.random.default_rng(15)
    inputs = _mlp_inputs(rng, (3, 37), 6, 20, dtype)
    dy = rng.standard_normal((3, 37, 6)).astype(dtype)
    grads = mlp.mlp_backward(dy, mlp.mlp_forward(*inputs)[1])
    ref_grads = ref.mlp_backward(dy.astype(np.float64),
                                 ref.mlp_forward(*[a.astype(np.float64) for a in inputs])[1])
    scales = _mlp_term_scales([a.astype(np.float64) for a in inputs], dy.astype(np.float64), "tanh")
    for name, grad, ref_grad in zip(("dx", "dW_fc", "db_fc", "dW_proj", "db_proj"), grads, ref_grads):
        assert_close(grad, ref_grad, dtype, name, scales[name])
