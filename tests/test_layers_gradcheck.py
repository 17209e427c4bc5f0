"""Every backward of every op in npllm.layers agrees with central differences in float64 (≤ 1e-7)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npllm import layers as L
from npllm.gradcheck import check_op
from npllm.gradcheck_suite import check_case, op_cases

CASES = [(name, case) for name in L.OPS for case in op_cases(name, np.random.default_rng(1))]


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{c.label}" for n, c in CASES])
def test_backward_matches_numerical_gradient(name, case):
    report = check_case(case)
    assert report.passed, str(report)
    assert report.max_error <= 1e-7


def test_every_op_in_the_table_has_cases():
    assert set(L.OPS) == {n for n, _ in CASES}


@settings(max_examples=10)
@given(B=st.integers(1, 3), T=st.integers(1, 4), D=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 99))
def test_lstm_backward_matches_numerical_gradient_on_random_shapes(B, T, D, H, seed):
    rng = np.random.default_rng(seed)
    p = L.init_lstm(D, H, rng, dtype=np.float64)
    inputs = [rng.standard_normal((B, T, D)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
              p["Wx"], p["Wh"], p["b"]]
    report = check_op(L.lstm_forward, L.lstm_backward, inputs, time_axis=1)
    assert report.passed, str(report)


@settings(max_examples=10)
@given(B=st.integers(1, 2), T=st.integers(1, 4), D=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 99))
def test_gru_backward_matches_numerical_gradient_on_random_shapes(B, T, D, H, seed):
    rng = np.random.default_rng(seed)
    p = L.init_gru(D, H, rng, dtype=np.float64)
    inputs = [rng.standard_normal((B, T, D)), rng.standard_normal((B, H)), p["Wx"], p["Wh"],
              rng.standard_normal(3 * H) * 0.1, rng.standard_normal(3 * H) * 0.1]
    assert check_op(L.gru_forward, L.gru_backward, inputs, time_axis=1).passed


@settings(max_examples=15)
@given(Tq=st.integers(1, 5), Tk=st.integers(1, 6), d=st.integers(1, 4), causal=st.booleans(),
       use_mask=st.booleans(), seed=st.integers(0, 99))
def test_attention_backward_matches_numerical_gradient_with_masks(Tq, Tk, d, causal, use_mask, seed):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, 2, Tq, d)), rng.standard_normal((2, 2, Tk, d)), rng.standard_normal((2, 2, Tk, 3))
    mask = rng.random((2, 1, Tq, Tk)) > 0.3 if use_mask else None
    report = check_op(L.scaled_dot_product_attention_forward, L.scaled_dot_product_attention_backward,
                      [q, k, v], {"mask": mask, "causal": causal})
    assert report.passed, str(report)


def test_cross_entropy_gradient_is_zero_on_ignored_targets():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4))
    targets = np.array([[1, -100, 2], [-100, -100, 0]])
    _, cache = L.cross_entropy_forward(logits, targets)
    dlogits = L.cross_entropy_backward(1.0, cache)
    np.testing.assert_array_equal(dlogits[targets == -100], 0.0)
    # Mean over the 3 kept targets: each kept row's gradient sums to 0 and has −(1 − p)/3 at the target.
    np.testing.assert_allclose(dlogits.sum(axis=-1), 0.0, atol=1e-15)


def test_attention_fully_masked_row_is_zero_and_gets_no_gradient():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 1, 3, 4)), rng.standard_normal((1, 1, 5, 4)), rng.standard_normal((1, 1, 5, 2))
    mask = np.ones((1, 1, 3, 5), dtype=bool)
    mask[0, 0, 1] = False
    out, cache = L.scaled_dot_product_attention_forward(q, k, v, mask=mask)
    assert np.all(np.isfinite(out)) and np.all(out[0, 0, 1] == 0)
    dq, dk, dv = L.scaled_dot_product_attention_backward(np.ones_like(out), cache)
    assert np.all(dq[0, 0, 1] == 0)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv))
    # Masked keys get no gradient from queries that cannot see them.
    only = np.zeros((1, 1, 3, 5), dtype=bool)
    only[..., 0] = True
    out, cache = L.scaled_dot_product_attention_forward(q, k, v, mask=only)
    dq, dk, dv = L.scaled_dot_product_attention_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dk[..., 1:, :], 0.0)
    np.testing.assert_array_equal(dv[..., 1:, :], 0.0)
