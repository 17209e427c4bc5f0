"""The gradcheck API: it passes correct backwards, catches wrong ones, and locates BPTT errors in time."""
import numpy as np
import pytest

from npllm import layers as L
from npllm.commands import main
from npllm.gradcheck import check_function, check_op, check_params, numerical_gradient, relative_error


def test_numerical_gradient_of_a_quadratic_is_exact():
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(numerical_gradient(lambda: np.sum(x ** 2), x), 2 * x, rtol=1e-9)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0])      # restored after perturbation


def test_relative_error_is_zero_for_equal_and_one_for_zero_vs_nonzero():
    assert relative_error(np.ones(3), np.ones(3)) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.zeros(3), np.ones(3)) == 1.0
    assert relative_error(np.zeros(3), np.full(3, 1e-17)) < 1e-8     # both zero up to round-off


def test_check_function_catches_a_wrong_gradient():
    x = np.array([0.3, -1.2])
    good = check_function(lambda x: np.sum(np.sin(x)), [x], [np.cos(x)], names=["x"])
    bad = check_function(lambda x: np.sum(np.sin(x)), [x], [-np.cos(x)], names=["x"])
    assert good.passed and good.max_error < 1e-9
    assert not bad.passed and "FAIL" in str(bad)


def _rnn_backward_forgetting_the_carried_gradient(dhs, cache):
    """A classic student bug: each step's gradient ignores what flows back from step t+1."""
    first = cache.steps[0]
    dx = np.zeros((dhs.shape[0], dhs.shape[1], first.x.shape[1]))
    dWx, dWh, db = np.zeros_like(first.Wx), np.zeros_like(first.Wh), np.zeros(first.Wh.shape[1])
    dh0 = None
    for t in reversed(range(dhs.shape[1])):
        dx[:, t], dh0, a, b_, c = L.rnn_step_backward(dhs[:, t], cache.steps[t])
        dWx, dWh, db = dWx + a, dWh + b_, db + c
    return dx, dh0, dWx, dWh, db


def test_per_step_breakdown_names_the_first_step_where_bptt_goes_wrong():
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5)), rng.standard_normal((3, 5)),
              rng.standard_normal((5, 5)), rng.standard_normal(5)]
    good = check_op(L.rnn_forward, L.rnn_backward, inputs, time_axis=1)
    assert good.passed and good.first_bad_step is None and len(good.per_step) == 4
    bad = check_op(L.rnn_forward, _rnn_backward_forgetting_the_carried_gradient, inputs, time_axis=1)
    assert not bad.passed
    # With the loss at step 0 only, nothing needs carrying back: the bug first shows at t = 1.
    assert bad.per_step[0] <= 1e-7 and bad.first_bad_step == 1
    assert "first time step where analytic and numerical gradients disagree: t=1" in str(bad)


def test_check_op_names_inputs_and_samples_large_tensors():
    rng = np.random.default_rng(0)
    report = check_op(L.linear_forward, L.linear_backward,
                      [rng.standard_normal((40, 30)), rng.standard_normal((30, 20)), rng.standard_normal(20)],
                      max_entries=25)
    assert [r.name for r in report.results] == ["x", "W", "b"]
    assert [r.n_checked for r in report.results] == [25, 25, 20]
    assert report.passed


def test_check_op_converts_float32_inputs_to_float64():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert check_op(L.gelu_forward, L.gelu_backward, [x]).passed


def test_check_params_checks_a_model_params_dict():
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    x = rng.standard_normal((4, 3))
    targets = np.array([0, 1, 1, 0])

    def loss_fn():
        logits, _ = L.linear_forward(x, params["W"], params["b"])
        return L.cross_entropy_forward(logits, targets)[0]

    logits, lin_cache = L.linear_forward(x, params["W"], params["b"])
    _, ce_cache = L.cross_entropy_forward(logits, targets)
    _, dW, db = L.linear_backward(L.cross_entropy_backward(1.0, ce_cache), lin_cache)
    report = check_params(loss_fn, params, {"W": dW, "b": db})
    assert report.passed, str(report)
    assert not check_params(loss_fn, params, {"W": dW, "b": 2 * db}).passed
    with pytest.raises(TypeError, match="float64"):
        check_params(loss_fn, {"W": params["W"].astype(np.float32)}, {"W": dW})


def test_cli_gradcheck_one_op_prints_the_table(capsys):
    assert main(["gradcheck", "--op", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "Wh" in out and "pass" in out and "FAIL" not in out


def test_cli_gradcheck_unknown_op_is_a_usage_error(capsys):
    assert main(["gradcheck", "--op", "convolution"]) == 2
    assert "--op: unknown op 'convolution'" in capsys.readouterr().err


def test_cli_gradcheck_checks_a_backends_kernels(capsys):
    assert main(["gradcheck", "--backend", "numba", "--op", "layer_norm"]) == 0
    out = capsys.readouterr().out
    assert "backend: numba" in out and "gamma" in out and "FAIL" not in out


def test_a_backward_that_omits_a_gradient_fails():
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)]
    report = check_op(L.linear_forward, lambda dy, cache: L.linear_backward(dy, cache)[:2] + (None,), inputs)
    assert not report.passed and [r.passed for r in report.results] == [True, True, False]
