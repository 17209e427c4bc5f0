"""The models train to the same losses on every CPU backend (the issue's 1e-5), and the GPT's attention
takes the fused multi-head op only where the backend has one."""
import numpy as np
import pytest

pytest.importorskip("numba")
from npllm import backend  # noqa: E402
from npllm.backend import ops, use_backend  # noqa: E402
from npllm.models import GPT, GPTConfig, LSTMLM, RNNLMConfig  # noqa: E402
from npllm.optim import AdamW  # noqa: E402


def _losses(make_model, backend_name, steps=4, B=3, T=16, V=11):
    model = make_model()
    optimizer = AdamW(lr=1e-2)
    rng = np.random.default_rng(0)
    losses = []
    with use_backend(backend_name):
        for _ in range(steps):
            x = (rng.integers(0, V, (B, 1)) + np.arange(T)) % V     # a learnable rule: y = x + 1
            y = (x + 1) % V
            out = model.forward(x)
            logits, cache = out[0], out[-1]
            loss, ce_cache = ops.cross_entropy_forward(logits, y)
            optimizer.step(model.params, model.backward(ops.cross_entropy_backward(1.0, ce_cache), cache))
            losses.append(float(loss))
    return losses


@pytest.mark.parametrize("make_model", [
    lambda: GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16), seed=1),
    lambda: LSTMLM(RNNLMConfig(vocab_size=11, hidden_size=12, n_layer=2, block_size=16), seed=1),
], ids=["gpt", "lstm"])
def test_training_steps_give_the_same_losses_on_numpy_and_numba(make_model):
    reference, kernels = _losses(make_model, "numpy"), _losses(make_model, "numba")
    assert reference[-1] < reference[0], "the check needs a model that is actually learning"
    np.testing.assert_allclose(kernels, reference, rtol=1e-5)


def test_gpt_attention_and_mlp_are_fused_ops_where_the_backend_has_them(monkeypatch):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    x = np.zeros((1, 8), dtype=np.int64)
    for name in ("numpy", "numba"):
        with use_backend(name):
            block = model.forward(x)[1].blocks[0]
            assert block.c_attn is None and block.gelu is None     # multi_head_attention's and mlp's caches
    kernels = backend._load("numba")
    monkeypatch.delattr(kernels, "multi_head_attention_forward")     # a backend without the fused ops
    monkeypatch.delattr(kernels, "mlp_forward")
    with use_backend("numba"):
        logits, cache = model.forward(x)
        assert type(cache.blocks[0].attn).__name__ == "FlashAttentionCache"   # its attention kernel
        assert type(cache.blocks[0].gelu).__name__ == "FusedGeluCache"
        assert cache.blocks[0].c_attn is not None
        grads = model.backward(np.ones_like(logits), cache)
    with use_backend("numpy"):
        ref_logits, ref_cache = model.forward(x)
        ref_grads = model.backward(np.ones_like(ref_logits), ref_cache)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-6)
    for name in ref_grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, err_msg=name)
