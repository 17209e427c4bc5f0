"""Additive (Bahdanau) attention: the reference's values, masking, multi-query form, errors and gradients.

Values against the equations written as loops; gradients: the op table's cases and hand-picked shapes.
"""
import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases
from numpy.testing import assert_allclose

from npllm.gradcheck import check_op
from npllm.layers import (additive_attention_backward, additive_attention_forward,
                          additive_attention_projected_forward)


def _inputs(rng, B=2, Tk=5, Hq=4, Hk=6, A=3, dtype=np.float64):
    return [rng.standard_normal(s).astype(dtype) for s in [(B, Hq), (B, Tk, Hk), (Hq, A), (Hk, A), (A,)]]


def _loop_reference(query, keys, W_q, W_k, v, mask):
    """e_j = vᵀ tanh(q W_q + k_j W_k), α = softmax over valid j, ctx = Σ α_j k_j — one row, one key at a time."""
    B, Tk, Hk = keys.shape
    context, weights = np.zeros((B, Hk)), np.zeros((B, Tk))
    for b in range(B):
        valid = [j for j in range(Tk) if mask[b, j]]
        scores = {j: v @ np.tanh(query[b] @ W_q + keys[b, j] @ W_k) for j in valid}
        total = sum(np.exp(s) for s in scores.values())
        for j in valid:
            weights[b, j] = np.exp(scores[j]) / total
            context[b] += weights[b, j] * keys[b, j]
    return context, weights


def test_additive_attention_matches_the_equations_with_padding():
    rng = np.random.default_rng(0)
    query, keys, W_q, W_k, v = _inputs(rng, B=3)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=bool)
    context, weights, _ = additive_attention_forward(query, keys, W_q, W_k, v, mask=mask)
    want_context, want_weights = _loop_reference(query, keys, W_q, W_k, v, mask)
    assert_allclose(weights, want_weights, rtol=1e-12, atol=1e-14)   # float64: only round-off differs
    assert_allclose(context, want_context, rtol=1e-12, atol=1e-14)
    assert np.all(weights[~mask] == 0.0)                             # padding gets exactly no weight
    assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)


def test_additive_attention_fully_masked_row_is_zero_and_passes_no_gradient():
    rng = np.random.default_rng(1)
    query, keys, W_q, W_k, v = _inputs(rng)
    mask = np.ones((2, 5), dtype=bool)
    mask[0] = False
    context, weights, cache = additive_attention_forward(query, keys, W_q, W_k, v, mask=mask)
    assert np.all(context[0] == 0) and np.all(weights[0] == 0)
    dquery, dkeys, *_ = additive_attention_backward(np.ones_like(context), np.ones_like(weights), cache)
    assert np.all(np.isfinite(dquery)) and np.all(dquery[0] == 0) and np.all(dkeys[0] == 0)


def test_many_queries_at_once_equal_one_query_at_a_time():
    rng = np.random.default_rng(2)
    _, keys, W_q, W_k, v = _inputs(rng)
    queries = rng.standard_normal((2, 4, 4))                          # (B, Tq, Hq)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    context, weights, _ = additive_attention_forward(queries, keys, W_q, W_k, v, mask=mask)
    assert context.shape == (2, 4, 6) and weights.shape == (2, 4, 5)
    for t in range(4):
        one_context, one_weights, _ = additive_attention_forward(queries[:, t], keys, W_q, W_k, v, mask=mask)
        assert_allclose(context[:, t], one_context, rtol=1e-12, atol=1e-14)
        assert_allclose(weights[:, t], one_weights, rtol=1e-12, atol=1e-14)


def test_projected_form_equals_the_op():
    rng = np.random.default_rng(3)
    query, keys, W_q, W_k, v = _inputs(rng)
    context, weights, _ = additive_attention_forward(query, keys, W_q, W_k, v)
    context_p, weights_p, _ = additive_attention_projected_forward(query @ W_q, keys, keys @ W_k, v)
    assert_allclose(context_p, context, rtol=1e-12, atol=1e-14)
    assert_allclose(weights_p, weights, rtol=1e-12, atol=1e-14)


def test_additive_attention_keeps_float32_and_huge_scores_stay_finite():
    rng = np.random.default_rng(4)
    query, keys, W_q, W_k, v = _inputs(rng, dtype=np.float32)
    context, weights, cache = additive_attention_forward(query, keys, W_q, W_k, 1e4 * v)   # scores ~ ±1e4
    assert context.dtype == np.float32 and weights.dtype == np.float32
    grads = additive_attention_backward(np.ones_like(context), None, cache)
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("name,case", gradcheck_cases("additive_attention"))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


@pytest.mark.parametrize("B, Tk, Tq", [(1, 1, None), (2, 4, None), (2, 3, 3)])
def test_additive_attention_backward_matches_numerical_gradient(B, Tk, Tq):
    rng = np.random.default_rng(5)
    query, keys, W_q, W_k, v = _inputs(rng, B=B, Tk=Tk)
    if Tq is not None:
        query = rng.standard_normal((B, Tq, query.shape[1]))
    mask = np.ones((B, Tk), dtype=bool)
    mask[-1, Tk // 2 + 1:] = False
    report = check_op(additive_attention_forward, additive_attention_backward, [query, keys, W_q, W_k, v],
                      {"mask": mask}, time_axis=None if Tq is None else 1)
    assert report.passed, str(report)


@pytest.mark.parametrize("change, error, words", [
    (lambda a: a.update(query=a["query"][0]), ValueError, "query must have 2 or 3 dimensions"),
    (lambda a: a.update(W_q=a["W_q"][:-1]), ValueError, "W_q must have shape (4, *)"),
    (lambda a: a.update(W_k=a["W_k"][:, :2]), ValueError, "W_k must have shape (6, 3)"),
    (lambda a: a.update(v=a["v"][:2]), ValueError, "v must have shape (3,)"),
    (lambda a: a.update(keys=a["keys"][:1]), ValueError, "query must have batch size 1"),
    (lambda a: a.update(mask=np.ones((2, 4), dtype=bool)), ValueError, "mask must have shape (2, 5)"),
    (lambda a: a.update(mask=np.ones((2, 5))), TypeError, "mask must be a bool"),
    (lambda a: a.update(v=a["v"].astype(np.float32)), TypeError, "share one dtype"),
])
def test_additive_attention_names_the_bad_argument(change, error, words):
    rng = np.random.default_rng(6)
    args = dict(zip(["query", "keys", "W_q", "W_k", "v"], _inputs(rng)), mask=None)
    change(args)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        additive_attention_forward(**args)
