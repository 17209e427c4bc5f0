"""The GRU (PyTorch's gate equations, r, z, n): the reference's values, errors and float64 gradient checks."""
import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases
from hypothesis import given, settings
from hypothesis import strategies as st

import npllm.layers as ref
from npllm.gradcheck import check_op

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


def test_gru_step_matches_pytorch_equations():
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    p = ref.init_gru(3, 4, rng, dtype=np.float64)
    bx, bh = rng.standard_normal(12), rng.standard_normal(12)
    out, _ = ref.gru_step_forward(x, h, p["Wx"], p["Wh"], bx, bh)
    sig = lambda a: 1 / (1 + np.exp(-a))
    Wx, Wh = p["Wx"], p["Wh"]
    r = sig(x @ Wx[:, :4] + bx[:4] + h @ Wh[:, :4] + bh[:4])
    z = sig(x @ Wx[:, 4:8] + bx[4:8] + h @ Wh[:, 4:8] + bh[4:8])
    n = np.tanh(x @ Wx[:, 8:] + bx[8:] + r * (h @ Wh[:, 8:] + bh[8:]))
    np.testing.assert_allclose(out, (1 - z) * n + z * h, rtol=1e-13)


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.gru_forward(f64(2, 5, 3), f64(1, 4), f64(3, 12), f64(4, 12), f64(12), f64(12)), ValueError, r"h0 must have shape \(2, \*\), got \(1, 4\)"),
    (lambda: ref.gru_step_forward(f64(2, 3), f64(2, 4), f64(3, 12), f64(4, 12), f64(12), f64(9)), ValueError, r"bh must have shape \(12,\), got \(9,\)"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("gru_step", "gru"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


@settings(max_examples=10)
@given(B=st.integers(1, 2), T=st.integers(1, 4), D=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 99))
def test_gru_backward_matches_numerical_gradient_on_random_shapes(B, T, D, H, seed):
    rng = np.random.default_rng(seed)
    p = ref.init_gru(D, H, rng, dtype=np.float64)
    inputs = [rng.standard_normal((B, T, D)), rng.standard_normal((B, H)), p["Wx"], p["Wh"],
              rng.standard_normal(3 * H) * 0.1, rng.standard_normal(3 * H) * 0.1]
    assert check_op(ref.gru_forward, ref.gru_backward, inputs, time_axis=1).passed
