"""npllm_kernels.cpu._finite.all_finite: the attention ops' test for non-finite inputs.

It must say False for any array holding a NaN, +inf or -inf anywhere (any dtype the kernels take, any
layout), True otherwise, and, unlike a sum, not mistake large finite values for an overflow.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npllm_kernels.cpu._finite import all_finite


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       size=st.integers(1, 5000), bad=st.sampled_from([np.nan, np.inf, -np.inf, None]),
       layout=st.sampled_from(["contiguous", "strided", "transposed"]))
def test_all_finite_finds_any_bad_value(seed, dtype, size, bad, layout):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(2 * size).astype(dtype)
    if bad is not None:
        a[rng.integers(0, 2 * size)] = bad
    view = {"contiguous": a, "strided": a[::2], "transposed": a.reshape(2, size).T}[layout]
    assert all_finite(view) == bool(np.isfinite(view).all())


def test_all_finite_checks_every_array_and_ignores_overflowing_sums():
    big = np.full(1000, np.finfo(np.float32).max / 2, dtype=np.float32)     # its sum overflows to inf
    assert all_finite(big, big.astype(np.float64))
    ok, nan = np.zeros((3, 4)), np.zeros((3, 4))
    nan[2, 3] = np.nan
    assert all_finite(ok, ok) and not all_finite(ok, nan) and not all_finite(nan, ok)
