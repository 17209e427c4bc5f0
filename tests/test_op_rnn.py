"""The vanilla RNN (CS231n's rnn_step / rnn): the reference's errors and float64 gradient checks."""
import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases

import npllm.layers as ref

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.rnn_step_forward(f64(2, 3), f64(2, 4), f64(3, 4), f64(4, 5), f64(4)), ValueError, r"Wh must have shape \(4, 4\), got \(4, 5\)"),
    (lambda: ref.rnn_forward(f64(2, 3), f64(2, 4), f64(3, 4), f64(4, 4), f64(4)), ValueError, r"x must have 3 dimensions \(B, T, D\), got shape \(2, 3\)"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("rnn_step", "rnn"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)
