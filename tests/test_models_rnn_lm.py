"""Recurrent LMs (RNN, LSTM, GRU): gradients of every parameter, carried state, step == forward."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from npllm.gradcheck import check_params
from npllm.layers import cross_entropy_backward, cross_entropy_forward
from npllm.models import GRULM, LSTMLM, RNNLM, RNNLMConfig, build_model

MODELS = [RNNLM, LSTMLM, GRULM]
V = 7


def tiny(cls, n_layer=2, dropout=0.0, dtype=np.float64):
    return cls(RNNLMConfig(vocab_size=V, hidden_size=5, n_layer=n_layer, block_size=8, dropout=dropout),
               seed=0, dtype=dtype)


def random_ids(shape, seed=0):
    return np.random.default_rng(seed).integers(0, V, shape)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("n_layer, dropout", [(1, 0.0), (2, 0.3)])
def test_recurrent_lm_backward_matches_numerical_gradient_for_every_parameter(cls, n_layer, dropout):
    model = tiny(cls, n_layer, dropout)
    idx, targets = random_ids((2, 5), seed=1), random_ids((2, 5), seed=2)

    def loss_fn():
        logits, _ = model.forward(idx, training=True, rng=np.random.default_rng(3))
        return float(cross_entropy_forward(logits, targets)[0])

    logits, cache = model.forward(idx, training=True, rng=np.random.default_rng(3))
    grads = model.backward(cross_entropy_backward(1.0, cross_entropy_forward(logits, targets)[1]), cache)
    assert list(grads) == list(model.params)
    report = check_params(loss_fn, model.params, grads, tol=1e-6)
    assert report.passed, report


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_recurrent_lm_params_are_flat_and_named_by_cell(cls):
    model = tiny(cls)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cls.kind]
    assert model.params["embedding.weight"].shape == (V, 5)
    assert model.params[f"{cls.kind}.1.Wx"].shape == (5, gates * 5)
    assert model.params[f"{cls.kind}.1.Wh"].shape == (5, gates * 5)
    assert model.params["head.weight"].shape == (5, V) and model.params["head.bias"].shape == (V,)


def test_lstm_lm_forget_gate_bias_starts_at_one():
    b = tiny(LSTMLM).params["lstm.0.b"]
    H = 5
    assert np.all(b[H:2 * H] == 1) and np.all(b[:H] == 0) and np.all(b[2 * H:] == 0)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_recurrent_lm_step_by_step_equals_one_forward(cls):
    model = tiny(cls)
    idx = random_ids((3, 6))
    full, _ = model.forward(idx)
    state = None
    for t in range(6):
        logits, state = model.step(idx[:, t], state)
        assert_allclose(logits, full[:, t], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_recurrent_lm_carried_state_continues_the_sequence(cls):
    model = tiny(cls)
    idx = random_ids((2, 10))
    full, _ = model.forward(idx)
    first, cache = model.forward(idx[:, :4])
    second, _ = model.forward(idx[:, 4:], state=cache.state)
    assert_allclose(np.concatenate([first, second], axis=1), full, rtol=1e-12, atol=1e-12)
    fresh, _ = model.forward(idx[:, 4:])
    assert not np.allclose(fresh, second)          # the state carries information


def test_recurrent_lm_rejects_a_state_of_the_wrong_shape():
    model = tiny(LSTMLM)
    with pytest.raises(ValueError, match="state"):
        model.forward(random_ids((2, 3)), state=[(np.zeros((2, 5)),)] * 2)      # LSTM needs (h, c)
    with pytest.raises(ValueError, match="state"):
        model.forward(random_ids((2, 3)), state=tiny(LSTMLM).initial_state(3))   # batch 3, not 2


def test_recurrent_lm_config_allows_one_or_two_layers():
    with pytest.raises(ValueError, match="n_layer"):
        RNNLMConfig(vocab_size=V, hidden_size=4, n_layer=3)
    with pytest.raises(ValueError, match="hidden_size"):
        RNNLMConfig(vocab_size=V, hidden_size=0)


def test_recurrent_lm_rejects_out_of_vocabulary_ids():
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        tiny(GRULM).forward(np.array([[1, 7]]))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_build_model_rebuilds_recurrent_models(kind):
    model = build_model(kind, {"vocab_size": V, "hidden_size": 4, "n_layer": 2}, seed=1)
    assert model.kind == kind and model.config.n_layer == 2
    logits, _ = model.forward(random_ids((1, 3)))
    assert logits.shape == (1, 3, V) and logits.dtype == np.float32
