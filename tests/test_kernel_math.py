"""The vectorizable exp/tanh/sigmoid of the Numba kernels against NumPy over the whole range fed to them.

Called from Python, ``fast_exp`` & co. run a compiled loop built with the kernels' own fast-math flags
(``reassoc`` included), so these tests also hold the range reduction's rounding trick to account there.
"""
import numpy as np
import pytest

from npllm_kernels.cpu._math import fast_exp, fast_sigmoid, fast_tanh

# Promised accuracy (module docstring of _math): about 2 ulp in float32, 1e-15 relative in float64.
EXP_RTOL = {np.float32: 3e-7, np.float64: 1e-15}
# Results below the smallest normal number exp can build flush to zero (x < -86.5 or x < -708).
FLUSH_BELOW = {np.float32: -86.5, np.float64: -708.0}
SPECIALS = [-np.inf, -1e30, -1000.0, -745.0, -708.5, -100.0, -87.5, -1.0, -1e-30, 0.0, 1e-30, 1.0, 88.0,
            88.72, 100.0, 709.7, 1e30, np.inf]
DTYPES = [np.float32, np.float64]


def _exp_inputs(dtype):
    limit = 90.0 if dtype == np.float32 else 712.0
    grid = np.linspace(-limit, limit, 400_001)
    logs = np.logspace(-30, np.log10(limit), 2_001)
    return np.concatenate([SPECIALS, grid, logs, -logs]).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_exp_matches_numpy_exp_wherever_the_result_is_a_normal_number(dtype):
    x = _exp_inputs(dtype)
    with np.errstate(over="ignore"):
        expected = np.exp(x.astype(np.float64))
    got = fast_exp(x)
    assert got.dtype == dtype
    normal = (x >= FLUSH_BELOW[dtype]) & (expected <= np.finfo(dtype).max)
    np.testing.assert_allclose(got[normal], expected[normal], rtol=EXP_RTOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_exp_edges_minus_inf_and_underflow_give_zero_overflow_gives_inf_nan_stays_nan(dtype):
    x = np.array([-np.inf, -1e30, -1000.0, FLUSH_BELOW[dtype] - 0.5, 1e30, np.inf, 1000.0, np.nan], dtype=dtype)
    got = fast_exp(x)
    np.testing.assert_array_equal(got[:4], 0.0)
    np.testing.assert_array_equal(got[4:7], np.inf)
    assert np.isnan(got[7])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_exp_flush_region_is_below_the_smallest_normal_number(dtype):
    x = np.linspace(FLUSH_BELOW[dtype] - 40, FLUSH_BELOW[dtype], 1001).astype(dtype)
    got = fast_exp(x)
    assert np.all(got >= 0) and np.all(got <= 4 * np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_tanh_matches_numpy_tanh_including_tiny_and_saturated_inputs(dtype):
    grid = np.linspace(-25, 25, 200_001)
    logs = np.logspace(-30, 1.5, 3_001)
    y = np.concatenate([grid, logs, -logs, [0.0, 1e30, -1e30, np.inf, -np.inf]]).astype(dtype)
    got = fast_tanh(y)
    assert got.dtype == dtype
    # Relative accuracy even near 0, where 1 - 2/(e^2y + 1) alone would lose digits to cancellation.
    rtol = 5e-7 if dtype == np.float32 else 5e-15
    np.testing.assert_allclose(got, np.tanh(y.astype(np.float64)), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_sigmoid_matches_the_definition_without_overflow(dtype):
    z = np.concatenate([np.linspace(-80, 80, 100_001), [-1e30, 1e30, -np.inf, np.inf, 0.0]]).astype(dtype)
    with np.errstate(over="ignore"):
        expected = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    got = fast_sigmoid(z)
    assert got.dtype == dtype and np.all(np.isfinite(got))
    rtol = 5e-7 if dtype == np.float32 else 5e-15
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=np.finfo(dtype).tiny)
