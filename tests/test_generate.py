"""Generation: KV-cached and uncached decoding agree, greedy/top-k/top-p behave, seeds reproduce."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from npllm.generate import generate, iter_next_logits, sample_next
from npllm.models import GPT, GPTConfig, GRULM, LSTMLM, RNNLMConfig

V = 13


def gpt(block_size=8):
    return GPT(GPTConfig(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=8), seed=0,
               dtype=np.float64)


def lstm():
    return LSTMLM(RNNLMConfig(vocab_size=V, hidden_size=6, n_layer=2), seed=0, dtype=np.float64)


def prompt(B=2, T=3, seed=0):
    return np.random.default_rng(seed).integers(0, V, (B, T))


def all_step_logits(model, tokens, start, kv_cache):
    return np.stack(list(iter_next_logits(model, tokens, start, tokens.shape[1], kv_cache)), axis=1)


@pytest.mark.parametrize("make", [gpt, lstm, lambda: GRULM(RNNLMConfig(V, 5, 1), dtype=np.float64)],
                         ids=["gpt", "lstm", "gru"])
def test_cached_and_uncached_logits_agree_at_every_step(make):
    model = make()
    # 20 tokens with block_size 8: the GPT's context is cropped and its cache rebuilt from step 9 on.
    tokens = np.random.default_rng(1).integers(0, V, (2, 20))
    cached = all_step_logits(model, tokens, 2, kv_cache=True)
    uncached = all_step_logits(model, tokens, 2, kv_cache=False)
    assert cached.shape == (2, 18, V)
    assert_allclose(cached, uncached, rtol=0, atol=1e-6)
    assert np.abs(cached - uncached).max() < 1e-10     # in float64 they agree far below the 1e-6 bar


def test_uncached_gpt_step_is_the_forward_of_the_cropped_context():
    model = gpt(block_size=8)
    tokens = np.random.default_rng(2).integers(0, V, (1, 12))
    logits = all_step_logits(model, tokens, 11, kv_cache=True)[:, 0]
    expected, _ = model.forward(tokens[:, 3:11])         # the last 8 tokens, positions 0..7
    assert_allclose(logits, expected[:, -1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [gpt, lstm], ids=["gpt", "lstm"])
def test_greedy_decoding_is_identical_with_and_without_cache(make):
    model = make()
    cached = generate(model, prompt(), 15, temperature=0)
    uncached = generate(model, prompt(), 15, temperature=0, kv_cache=False)
    assert cached.shape == (2, 18)
    assert np.array_equal(cached, uncached)
    assert np.array_equal(cached[:, :3], prompt())        # the prompt is kept


def test_greedy_picks_the_argmax_of_the_forward():
    model = gpt()
    out = generate(model, prompt(), 1, temperature=0)
    logits, _ = model.forward(prompt())
    assert np.array_equal(out[:, -1], logits[:, -1].argmax(axis=-1))


def test_top_k_one_equals_greedy():
    model = gpt()
    greedy = generate(model, prompt(), 12, temperature=0)
    top1 = generate(model, prompt(), 12, temperature=1.3, top_k=1, rng=5)
    assert np.array_equal(top1, greedy)


def test_same_seed_same_sample_different_seed_different_sample():
    model = gpt()
    a = generate(model, prompt(), 20, rng=7)
    b = generate(model, prompt(), 20, rng=np.random.default_rng(7))
    c = generate(model, prompt(), 20, rng=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampling_frequencies_follow_the_softmax():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    logits = np.repeat(logits, 20000, axis=0)
    draws = sample_next(logits, rng=np.random.default_rng(0))
    freq = np.bincount(draws, minlength=4) / draws.size
    assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)   # ~4 standard errors at n = 20000


def test_temperature_sharpens_and_flattens():
    logits = np.repeat(np.log(np.array([[0.6, 0.4]])), 20000, axis=0)
    cold = np.mean(sample_next(logits, temperature=0.25, rng=np.random.default_rng(0)) == 0)
    hot = np.mean(sample_next(logits, temperature=4.0, rng=np.random.default_rng(0)) == 0)
    assert cold > 0.8 and 0.5 < hot < 0.56    # 0.6^4/(0.6^4+0.4^4) = 0.84; (0.6/0.4)^0.25 → 0.525


@pytest.mark.parametrize("top_p, allowed", [(0.5, {0}), (0.7, {0, 1}), (0.79, {0, 1}), (0.81, {0, 1, 2}),
                                            (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, allowed):
    # Probabilities 0.5, 0.3, 0.15, 0.05 in shuffled order: the nucleus must follow probability, not index.
    order = np.array([2, 0, 3, 1])
    probs = np.array([0.15, 0.5, 0.05, 0.3])
    logits = np.repeat(np.log(probs)[None], 5000, axis=0)
    draws = sample_next(logits, top_p=top_p, rng=np.random.default_rng(1))
    assert set(np.unique(order[draws]).tolist()) == allowed


def test_top_k_never_samples_outside_the_k_largest():
    logits = np.repeat(np.array([[0.0, 3.0, 1.0, 2.0, -1.0]]), 5000, axis=0)
    draws = sample_next(logits, top_k=2, rng=np.random.default_rng(2))
    assert set(np.unique(draws).tolist()) == {1, 3}


def test_generate_with_zero_new_tokens_returns_the_prompt():
    out = generate(gpt(), prompt(), 0)
    assert np.array_equal(out, prompt()) and out.dtype == np.int64


@pytest.mark.parametrize("kwargs, match", [
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"temperature": -0.5}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
])
def test_generate_rejects_bad_options(kwargs, match):
    options = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(gpt(), prompt(), **options)


def test_generate_rejects_an_empty_prompt():
    with pytest.raises(ValueError, match="at least one token"):
        generate(gpt(), np.zeros((1, 0), dtype=np.int64), 3)
