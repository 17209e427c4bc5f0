"""Sinusoidal positions (Vaswani et al. 2017, §3.5): interleaved sin/cos values and the error on T = 0."""
import math

import numpy as np
import pytest

import npllm.layers as ref


def test_sinusoidal_positions_are_interleaved_sin_cos():
    pe = ref.sinusoidal_positions(5, 6, dtype=np.float64)
    t, i = 3, 1
    assert math.isclose(pe[t, 2 * i], math.sin(t / 10000 ** (2 * i / 6)), rel_tol=1e-14)
    assert math.isclose(pe[t, 2 * i + 1], math.cos(t / 10000 ** (2 * i / 6)), rel_tol=1e-14)
    np.testing.assert_array_equal(pe[0, 0::2], 0.0)
    assert ref.sinusoidal_positions(4, 7).shape == (4, 7)


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.sinusoidal_positions(0, 4), ValueError, "T must be a positive integer, got 0"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()
