"""Every backend keeps the reference's contract on bad values: NaN in, NaN out in the same positions.

The reference attention (``npllm.layers.attention``) multiplies dense (Tq, Tk) matrices in which a
masked probability is a 0 that still multiplies, so a bad value spreads exactly as IEEE arithmetic says:
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
import warnings

import numpy as np
import pytest

import npllm.layers as ref
import npllm_kernels.cpu

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
B, H, T, D = 2, 3, 6, 4
BAD_VALUES = [("q", np.nan), ("k", np.nan), ("k", np.inf), ("v", np.nan), ("dout", np.nan), (None, None)]
BAD_IDS = ["nan-q", "nan-k", "inf-k", "nan-v", "nan-dout", "finite"]
MASKINGS = [dict(), dict(causal=True), dict(mask=True), dict(mask=True, causal=True)]
MASK_IDS = ["none", "causal", "mask", "mask+causal"]


def _load_backend(name):
    if name == "numba":
        return npllm_kernels.cpu
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install -e .[cuda])")
    return pytest.importorskip("npllm_kernels.cuda")


@pytest.fixture(params=[pytest.param("numba", id="numba"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)])
def backend(request):
    return _load_backend(request.param)


def _attention_inputs(dtype, where, value, masking):
    """q, k, v, dout (B, H, T, D) with ``value`` at one entry of ``where``, and the options: the mask
    (B, 1, T, T) leaves query 1 of batch 0 with no allowed key and hides key 3 from query 4."""
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


def _run(module, arrays, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # NumPy warns on the NaN it computes
        out, cache = module.scaled_dot_product_attention_forward(arrays["q"], arrays["k"], arrays["v"], **options)
        return (out,) + tuple(module.scaled_dot_product_attention_backward(arrays["dout"], cache))


@pytest.mark.parametrize("masking", MASKINGS, ids=MASK_IDS)
@pytest.mark.parametrize("where, value", BAD_VALUES, ids=BAD_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_attention_bad_values_land_where_the_reference_puts_them(backend, dtype, where, value, masking):
    arrays, options = _attention_inputs(dtype, where, value, masking)
    for name, actual, desired in zip(("out", "dq", "dk", "dv"), _run(backend, arrays, options),
                                     _run(ref, arrays, options)):
        assert_same_bad_values(actual, desired, name)


@pytest.mark.parametrize("where", ["q", "k", "v", "dout"])
def test_attention_nan_reaches_the_output_and_gradients(backend, where):
    """Not a vacuous comparison: each case does produce NaN (the reference's pattern is not all-finite)."""
    arrays, options = _attention_inputs(np.float64, where, np.nan, dict(causal=True))
    out, dq, dk, dv = _run(backend, arrays, options)
    assert np.isnan(dq).any() and np.isnan(dk).any()
    assert np.isnan(out).any() == (where != "dout")


def test_attention_fully_masked_query_with_finite_inputs_is_zero_and_passes_no_gradient(backend):
    arrays, options = _attention_inputs(np.float64, None, None, dict(mask=True))
    out, dq, dk, dv = _run(backend, arrays, options)
    np.testing.assert_array_equal(out[0, :, 1], 0.0)
    np.testing.assert_array_equal(dq[0, :, 1], 0.0)
    assert all(np.isfinite(g).all() for g in (out, dq, dk, dv))


def _mha_inputs(dtype, where, value):
    """x (B, T, C), the four weights and dy, with ``value`` at one entry of ``where``."""
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
    arrays = _mha_inputs(dtype, where, value)
    names = ("y", "dx", "dW_qkv", "db_qkv", "dW_out", "db_out")
    for name, actual, desired in zip(names, _run_mha(npllm_kernels.cpu, arrays, causal), _run_mha(ref, arrays, causal)):
        assert_same_bad_values(actual, desired, name)


# ---------------------------------------------------------------- LSTM: the wrong state is named


def _lstm_inputs(h0_shape, c0_shape):
    """x (2, 5, 3) and weights for H = 4, with states of the given shapes."""
    f64 = np.zeros
    return f64((2, 5, 3)), f64(h0_shape), f64(c0_shape), f64((3, 16)), f64((4, 16)), f64(16)


@pytest.mark.parametrize("module", [ref, npllm_kernels.cpu], ids=["numpy", "numba"])
@pytest.mark.parametrize("h0_shape, c0_shape, message", [
    ((2, 5), (2, 4), r"h0 must have shape \(2, 4\) like c0, got \(2, 5\)"),
    ((1, 4), (2, 4), r"h0 must have shape \(2, \*\), got \(1, 4\)"),
    ((2, 4), (2, 5), r"c0 must have shape \(2, 4\), got \(2, 5\)"),
    ((2, 4), (3, 4), r"c0 must have shape \(2, 4\), got \(3, 4\)"),
    ((2, 4), (8,), r"c0 must have 2 dimensions \(B, H\), got shape \(8,\)"),
])
def test_lstm_forward_names_the_state_whose_shape_is_wrong(module, h0_shape, c0_shape, message):
    with pytest.raises(ValueError, match=message):
        module.lstm_forward(*_lstm_inputs(h0_shape, c0_shape))
