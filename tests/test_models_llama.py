"""Llama: Hugging Face's state-dict names, grouped-query attention wiring, hand-written backward vs
numerical gradients (float64), and KV-cached decoding equal to the uncached forward."""
import dataclasses

import numpy as np
import pytest
from numpy.testing import assert_allclose

from npllm.generate import generate
from npllm.gradcheck import check_params
from npllm.layers import cross_entropy_backward, cross_entropy_forward
from npllm.models.llama import Llama, LlamaConfig, LlamaKVCache

TINY = LlamaConfig(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=8, intermediate_size=12)


def tiny_llama(dtype=np.float64, seed=0, **overrides):
    model = Llama(dataclasses.replace(TINY, **overrides), seed=seed, dtype=dtype)
    # Norm weights away from 1 and nonzero biases, so their gradients are exercised on typical values.
    rng = np.random.default_rng(seed + 100)
    for name, value in model.params.items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            model.params[name] = (1 + 0.1 * rng.standard_normal(value.shape)).astype(dtype)
        elif name.endswith(".bias"):
            model.params[name] = (0.1 * rng.standard_normal(value.shape)).astype(dtype)
        else:
            model.params[name] = (0.3 * rng.standard_normal(value.shape)).astype(dtype)   # livelier than 0.02
    return model


def random_ids(shape, vocab=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


def test_llama_params_use_hugging_face_names_and_in_out_layouts():
    C, KV, I = 8, 4, 12                                   # KV = n_kv_head · head size = 2 · 2
    expected = {"model.embed_tokens.weight": (11, C), "model.norm.weight": (C,), "lm_head.weight": (C, 11)}
    for i in range(2):
        p = f"model.layers.{i}."
        expected.update({p + "input_layernorm.weight": (C,), p + "self_attn.q_proj.weight": (C, C),
                         p + "self_attn.k_proj.weight": (C, KV), p + "self_attn.v_proj.weight": (C, KV),
                         p + "self_attn.o_proj.weight": (C, C), p + "post_attention_layernorm.weight": (C,),
                         p + "mlp.gate_proj.weight": (C, I), p + "mlp.up_proj.weight": (C, I),
                         p + "mlp.down_proj.weight": (I, C)})
    model = Llama(TINY)
    assert {name: value.shape for name, value in model.params.items()} == expected
    assert all(value.dtype == np.float32 for value in model.params.values())
    assert model.num_params() == sum(int(np.prod(s)) for s in expected.values())
    assert model.kind == "llama" and model.config_class is LlamaConfig
    assert Llama(LlamaConfig(**model.config_dict())).config == TINY


def test_llama_qwen2_biases_and_tied_head_change_the_params():
    model = Llama(dataclasses.replace(TINY, attention_bias=True, tie_word_embeddings=True))
    names = set(model.params)
    assert "lm_head.weight" not in names
    assert {"model.layers.1.self_attn.q_proj.bias", "model.layers.1.self_attn.k_proj.bias",
            "model.layers.1.self_attn.v_proj.bias"} <= names
    assert model.params["model.layers.0.self_attn.k_proj.bias"].shape == (4,)
    assert "model.layers.0.self_attn.o_proj.bias" not in names
    assert np.all(model.params["model.layers.0.self_attn.q_proj.bias"] == 0)
    assert np.all(model.params["model.layers.0.input_layernorm.weight"] == 1)


@pytest.mark.parametrize("overrides", [
    {"n_kv_head": 1}, {"n_kv_head": 2}, {"n_kv_head": 4},
    {"n_kv_head": 2, "attention_bias": True, "tie_word_embeddings": True},
], ids=["multi-query", "grouped", "multi-head", "qwen2 biases, tied head"])
def test_llama_backward_matches_numerical_gradient_for_every_parameter(overrides):
    model = tiny_llama(**overrides)
    idx, targets = random_ids((2, 5), seed=1), random_ids((2, 5), seed=2)

    def loss_fn():
        logits, _ = model.forward(idx)
        return float(cross_entropy_forward(logits, targets)[0])

    logits, cache = model.forward(idx)
    _, ce_cache = cross_entropy_forward(logits, targets)
    grads = model.backward(cross_entropy_backward(1.0, ce_cache), cache)
    assert list(grads) == list(model.params)
    assert all(grads[k].shape == model.params[k].shape and grads[k].dtype == np.float64 for k in grads)
    report = check_params(loss_fn, model.params, grads, tol=1e-7, max_entries=None)   # every entry
    assert report.passed, report


def test_llama_tied_embedding_gradient_sums_lookup_and_head():
    model = tiny_llama(tie_word_embeddings=True)
    idx = np.array([[0, 1, 2, 1]])
    logits, cache = model.forward(idx)
    dlogits = np.zeros_like(logits)
    dlogits[0, -1, 7] = 1.0                              # token 7 is never looked up: only the head uses it
    grads = model.backward(dlogits, cache)
    assert np.all(grads["model.embed_tokens.weight"][[3, 4, 5, 6, 8, 9, 10]] == 0)
    assert np.any(grads["model.embed_tokens.weight"][7] != 0)


def test_grouped_query_llama_equals_multi_head_llama_with_repeated_kv_weights():
    # Hugging Face's repeat_kv: kv head j serves query heads j·G … j·G + G − 1, so copying k_proj's and
    # v_proj's head columns G times gives a multi-head model with the same function.
    gqa = tiny_llama(n_kv_head=2)
    mha = Llama(dataclasses.replace(TINY, n_kv_head=4), dtype=np.float64)
    HS, G = 2, 2
    for name, value in gqa.params.items():
        if "k_proj" in name or "v_proj" in name:
            heads = value.reshape(8, 2, HS)                               # (C, NKV, HS)
            mha.params[name] = np.repeat(heads, G, axis=1).reshape(8, 4 * HS)
        else:
            mha.params[name] = value.copy()
    idx = random_ids((2, 7), seed=3)
    assert_allclose(gqa.forward(idx)[0], mha.forward(idx)[0], rtol=1e-12, atol=1e-13)


def test_llama_is_causal_future_tokens_do_not_change_earlier_logits():
    model = tiny_llama()
    idx = random_ids((2, 8))
    changed = idx.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    before, _ = model.forward(idx)
    after, _ = model.forward(changed)
    assert_allclose(after[:, :5], before[:, :5], rtol=0, atol=1e-12)
    assert not np.allclose(after[:, 5:], before[:, 5:])


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_llama_forward_cached_in_chunks_matches_one_forward(n_kv_head):
    model = tiny_llama(n_kv_head=n_kv_head)
    idx = random_ids((2, 8))
    full, _ = model.forward(idx)
    first, kv = model.forward_cached(idx[:, :3])
    second, kv = model.forward_cached(idx[:, 3:7], kv)
    third, kv = model.forward_cached(idx[:, 7:], kv)
    assert kv.length == 8
    assert_allclose(np.concatenate([first, second, third], axis=1), full, rtol=1e-6, atol=1e-6)
    steps = [model.forward_cached(idx[:, :1])]
    for t in range(1, 8):
        steps.append(model.forward_cached(idx[:, t:t + 1], steps[-1][1]))
    assert_allclose(np.concatenate([logits for logits, _ in steps], axis=1), full, rtol=1e-6, atol=1e-6)


def test_llama_kv_cache_continues_past_block_size():
    # No position table: the same weights run at any length, so a model with a longer block_size gives
    # the uncached logits to compare with.
    model = tiny_llama()
    longer = Llama(dataclasses.replace(TINY, block_size=32), dtype=np.float64)
    longer.params = model.params
    idx = random_ids((1, 20), seed=4)
    logits, kv = model.forward_cached(idx[:, :6])
    chunks = [logits]
    for start in range(6, 20, 5):
        logits, kv = model.forward_cached(idx[:, start:start + 5], kv)
        chunks.append(logits)
    assert kv.length == 20 and kv.keys[0].shape[2] >= 20
    assert_allclose(np.concatenate(chunks, axis=1), longer.forward(idx)[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="block_size = 8"):
        model.forward(idx)


def test_llama_forward_cached_rejects_another_batch_size():
    model = tiny_llama()
    _, kv = model.forward_cached(random_ids((2, 3)))
    with pytest.raises(ValueError, match="batch size 1, the kv_cache was made for 2"):
        model.forward_cached(random_ids((1, 1)), kv)
    with pytest.raises(TypeError, match="kv_cache must be a LlamaKVCache"):
        model.forward_cached(random_ids((1, 1)), object())


def test_llama_generates_the_same_tokens_with_and_without_the_kv_cache():
    model = tiny_llama()
    prompt = random_ids((2, 3), seed=5)
    cached = generate(model, prompt, 9, temperature=0, kv_cache=True)     # runs past block_size = 8
    uncached = generate(model, prompt, 9, temperature=0, kv_cache=False)
    assert cached.shape == (2, 12)
    np.testing.assert_array_equal(cached, uncached)


def test_llama_forward_dtype_follows_the_params():
    model = tiny_llama(np.float32)
    logits, cache = model.forward(random_ids((2, 5)))
    assert logits.dtype == np.float32
    grads = model.backward(np.ones_like(logits), cache)
    assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("overrides, match", [
    ({"n_kv_head": 3}, r"n_kv_head \(3\) must divide n_head \(4\)"),
    ({"n_embd": 12}, r"n_embd \(12\) must be n_head \(4\) times an even head size"),
    ({"intermediate_size": 0}, "intermediate_size must be a positive int, got 0"),
    ({"rope_theta": 0.0}, "rope_theta must be a number > 0, got 0.0"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps must be a number > 0"),
    ({"tie_word_embeddings": 1}, "tie_word_embeddings must be a bool, got 1"),
])
def test_llama_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **overrides)


def test_llama_rejects_a_foreign_config_or_cache():
    with pytest.raises(TypeError, match="config must be a LlamaConfig"):
        Llama({"vocab_size": 11})
    with pytest.raises(TypeError, match="cache must be the LlamaCache"):
        tiny_llama().backward(np.zeros((1, 1, 11)), None)
    assert isinstance(tiny_llama().forward_cached(random_ids((1, 2)))[1], LlamaKVCache)


@pytest.mark.parametrize("n_kv_head", [1, 4], ids=["grouped-query", "multi-head"])
def test_llama_on_the_numba_backend_matches_the_reference(n_kv_head):
    pytest.importorskip("numba")
    from npllm.backend import use_backend
    model = tiny_llama(n_kv_head=n_kv_head)
    idx = random_ids((2, 6))
    logits, cache = model.forward(idx)
    grads = model.backward(np.ones_like(logits), cache)
    with use_backend("numba"):
        numba_logits, numba_cache = model.forward(idx)
        numba_grads = model.backward(np.ones_like(numba_logits), numba_cache)
    assert_allclose(numba_logits, logits, rtol=1e-10, atol=1e-12)
    for name in grads:
        assert_allclose(numba_grads[name], grads[name], rtol=1e-9, atol=1e-11, err_msg=name)
