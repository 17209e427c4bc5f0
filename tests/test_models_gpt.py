"""GPT: GPT-2's parameter names and init, causal forward, hand-written backward vs numerical gradients."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from npllm.gradcheck import check_params
from npllm.layers import cross_entropy_backward, cross_entropy_forward
from npllm.models import GPT, GPTConfig, build_model

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def tiny_gpt(dtype=np.float64, **overrides):
    config = GPTConfig(**{**TINY.__dict__, **overrides})
    return GPT(config, seed=0, dtype=dtype)


def random_ids(shape, vocab=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


def test_gpt_params_use_hugging_face_gpt2_names_and_layouts():
    C = 8
    expected = {"wte.weight": (11, C), "wpe.weight": (8, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(2):
        expected.update({f"h.{i}.ln_1.weight": (C,), f"h.{i}.ln_1.bias": (C,),
                         f"h.{i}.attn.c_attn.weight": (C, 3 * C), f"h.{i}.attn.c_attn.bias": (3 * C,),
                         f"h.{i}.attn.c_proj.weight": (C, C), f"h.{i}.attn.c_proj.bias": (C,),
                         f"h.{i}.ln_2.weight": (C,), f"h.{i}.ln_2.bias": (C,),
                         f"h.{i}.mlp.c_fc.weight": (C, 4 * C), f"h.{i}.mlp.c_fc.bias": (4 * C,),
                         f"h.{i}.mlp.c_proj.weight": (4 * C, C), f"h.{i}.mlp.c_proj.bias": (C,)})
    model = tiny_gpt()
    assert {name: value.shape for name, value in model.params.items()} == expected
    assert "lm_head.weight" not in model.params          # tied to wte


def test_gpt_init_follows_gpt2_scaled_residual_projections():
    n_layer = 6
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=n_layer, n_head=4, n_embd=128), seed=1)
    p = model.params
    assert p["wte.weight"].std() == pytest.approx(0.02, rel=0.05)
    assert p["h.0.mlp.c_fc.weight"].std() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / np.sqrt(2 * n_layer)
    assert p["h.3.attn.c_proj.weight"].std() == pytest.approx(residual, rel=0.05)
    assert p["h.3.mlp.c_proj.weight"].std() == pytest.approx(residual, rel=0.05)
    assert np.all(p["h.2.ln_1.weight"] == 1) and np.all(p["h.2.attn.c_attn.bias"] == 0)
    assert all(value.dtype == np.float32 for value in p.values())


def test_gpt_same_seed_same_weights_different_seed_different_weights():
    a, b, c = (GPT(TINY, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["wte.weight"], c.params["wte.weight"])


def test_gpt_forward_shapes_and_dtype_follow_the_params():
    model = tiny_gpt(np.float32)
    logits, _ = model.forward(random_ids((3, 5)))
    assert logits.shape == (3, 5, 11) and logits.dtype == np.float32
    model.params = {name: value.astype(np.float64) for name, value in model.params.items()}
    logits64, _ = model.forward(random_ids((3, 5)))
    assert logits64.dtype == np.float64
    assert_allclose(logits64, logits, rtol=1e-4, atol=1e-5)


def test_gpt_is_causal_future_tokens_do_not_change_earlier_logits():
    model = tiny_gpt()
    idx = random_ids((2, 8))
    changed = idx.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    before, _ = model.forward(idx)
    after, _ = model.forward(changed)
    assert_allclose(after[:, :5], before[:, :5], rtol=0, atol=1e-12)
    assert not np.allclose(after[:, 5:], before[:, 5:])


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_gpt_backward_matches_numerical_gradient_for_every_parameter(dropout):
    model = tiny_gpt(dropout=dropout)
    idx, targets = random_ids((2, 6), seed=1), random_ids((2, 6), seed=2)

    def loss_fn():
        # A fresh generator with the same seed: the same dropout mask on every evaluation.
        logits, _ = model.forward(idx, training=True, rng=np.random.default_rng(7))
        return float(cross_entropy_forward(logits, targets)[0])

    logits, cache = model.forward(idx, training=True, rng=np.random.default_rng(7))
    _, ce_cache = cross_entropy_forward(logits, targets)
    grads = model.backward(cross_entropy_backward(1.0, ce_cache), cache)
    assert list(grads) == list(model.params)
    assert all(grads[k].shape == model.params[k].shape for k in grads)
    report = check_params(loss_fn, model.params, grads, tol=1e-6)
    assert report.passed, report


def test_gpt_tied_embedding_gradient_sums_lookup_and_head():
    model = tiny_gpt()
    idx = random_ids((1, 4))
    logits, cache = model.forward(idx)
    dlogits = np.zeros_like(logits)
    dlogits[0, -1, 3] = 1.0         # only the head's use of wte row 3 (token 3 never looked up, maybe)
    grads = model.backward(dlogits, cache)
    unused = sorted(set(range(11)) - set(idx.ravel().tolist()) - {3})
    assert np.all(grads["wte.weight"][unused] == 0)   # rows neither looked up nor scored: no gradient
    assert np.any(grads["wte.weight"][3] != 0)


def test_gpt_dropout_changes_training_forward_only():
    model = tiny_gpt(dropout=0.5)
    idx = random_ids((2, 6))
    eval_a, _ = model.forward(idx)
    eval_b, _ = model.forward(idx, training=False, rng=np.random.default_rng(0))
    train, _ = model.forward(idx, training=True, rng=np.random.default_rng(0))
    assert_allclose(eval_a, eval_b)
    assert not np.allclose(train, eval_a)
    with pytest.raises(TypeError, match="rng"):
        model.forward(idx, training=True)


def test_gpt_forward_cached_in_chunks_matches_one_forward():
    model = tiny_gpt()
    idx = random_ids((2, 8))
    full, _ = model.forward(idx)
    first, kv = model.forward_cached(idx[:, :3])
    second, kv = model.forward_cached(idx[:, 3:7], kv)
    third, kv = model.forward_cached(idx[:, 7:], kv)
    assert kv.length == 8
    assert_allclose(np.concatenate([first, second, third], axis=1), full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="block_size"):
        model.forward_cached(idx[:, :1], kv)


@pytest.mark.parametrize("idx, error, match", [
    (np.zeros((2, 3), dtype=np.float32), TypeError, "integer dtype"),
    (np.zeros(3, dtype=np.int64), ValueError, r"\(B, T\)"),
    (np.full((1, 3), 11), ValueError, r"\[0, 11\)"),
    (np.full((1, 3), -1), ValueError, r"\[0, 11\)"),
    (np.zeros((1, 9), dtype=np.int64), ValueError, "block_size = 8"),
    ([[1, 2]], TypeError, "numpy.ndarray"),
])
def test_gpt_forward_rejects_bad_token_ids(idx, error, match):
    with pytest.raises(error, match=match):
        tiny_gpt().forward(idx)


def test_gpt_config_rejects_embedding_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=3, n_embd=8)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=0, n_head=2, n_embd=8)


def test_build_model_rebuilds_a_gpt_from_its_config_dict():
    model = tiny_gpt(np.float32)
    rebuilt = build_model("gpt", model.config_dict(), seed=0)
    assert rebuilt.config == model.config
    assert all(np.array_equal(rebuilt.params[k], model.params[k]) for k in model.params)
