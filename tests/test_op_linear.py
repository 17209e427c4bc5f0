"""Linear (y = x W + b): the reference's errors and its float64 gradient check.

(Its product, ``matmul``, has a file of its own: test_op_matmul.py.)
"""
import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases

import npllm.layers as ref

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.linear_forward(f64(2, 3), f64(4, 5), f64(5)), ValueError, r"x's last dimension must equal W's first \(D = 4\).*\(2, 3\)"),
    (lambda: ref.linear_forward(f64(2, 3), f64(3, 5), f64(4)), ValueError, r"b must have shape \(5,\), got \(4,\)"),
    (lambda: ref.linear_forward(f64(2, 3), f64(3, 5).astype(np.float32), f64(5)), TypeError, "must share one dtype"),
    (lambda: ref.linear_forward([[1.0, 2.0]], f64(2, 2), f64(2)), TypeError, "x must be a numpy.ndarray"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("linear"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)
