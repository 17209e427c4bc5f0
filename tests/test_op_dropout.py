"""Dropout: inverted scaling in training, the identity in eval, its errors and its float64 gradient check."""
import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases

import npllm.layers as ref

rng = np.random.default_rng(0)
f64 = lambda *s: rng.standard_normal(s)  # noqa: E731


def test_dropout_is_inverted_and_identity_in_eval():
    x = np.ones((200, 200))
    y, _ = ref.dropout_forward(x, 0.25, np.random.default_rng(0))
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert abs(y.mean() - 1) < 0.02
    y_eval, _ = ref.dropout_forward(x, 0.25, None, training=False)
    assert y_eval is x


@pytest.mark.parametrize("call,error,message", [
    (lambda: ref.dropout_forward(f64(3), -0.1, rng), ValueError, r"p must be a dropout probability in \[0, 1\), got -0.1"),
    (lambda: ref.dropout_forward(f64(3), 1.0, rng), ValueError, "p must be a dropout probability"),
    (lambda: ref.dropout_forward(f64(3), 0.5, None), TypeError, "rng must be a numpy.random.Generator"),
])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("name,case", gradcheck_cases("dropout"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)
