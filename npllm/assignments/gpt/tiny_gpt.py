"""A one-block, attention-only GPT that learns to copy, trained with *your* layers (provided: do not edit).

Every sequence is 4 random tokens followed by the same 4 again, ``a b c d a b c d``.  The model reads
the first 7 tokens and predicts the next token at each position.  The first three predictions can
only be guesses (loss ln V ≈ 2.08); the last four are copies of the token 4 steps back, which only
attention can fetch.  Their mean loss, the *copy loss*, falls near 0 in a few hundred steps when
your causal attention and layer norm are right, forward and backward — and stays near ln V otherwise.

    x      = wte[idx] + wpe[:T]                          (B, T, C) token + position embeddings
    h      = x + attention(layer_norm(x; g1, b1))        the residual stream
    logits = layer_norm(h; gf, bf) @ W_head              (B, T, V)

``layers`` is any object with ``causal_self_attention_forward/backward`` and
``layer_norm_forward/backward`` (your module; the grader re-scores the trained weights with npllm's).
"""
import numpy as np

V, T, C, N_HEAD, HALF = 8, 7, 32, 4, 4
STEPS, LEARNING_RATE, BATCH = 250, 1e-2, 32
COPY_LOSS_THRESHOLD = 0.3    # ln 8 ≈ 2.08 without working attention
PARAM_NAMES = ("wte", "wpe", "g1", "b1", "W_qkv", "b_qkv", "W_out", "b_out", "gf", "bf", "W_head")


def batch(rng, size):
    """(idx, targets), both (size, T) int: sequences a b c d a b c d, shifted by one."""
    first = rng.integers(0, V, size=(size, HALF))
    sequence = np.concatenate([first, first], axis=1)                 # (size, 2 HALF)
    return sequence[:, :-1], sequence[:, 1:]


def init_params(rng) -> dict:
    def normal(*shape):
        return rng.standard_normal(shape) * 0.1
    return {"wte": normal(V, C), "wpe": normal(T, C), "g1": np.ones(C), "b1": np.zeros(C),
            "W_qkv": normal(C, 3 * C), "b_qkv": np.zeros(3 * C), "W_out": normal(C, C), "b_out": np.zeros(C),
            "gf": np.ones(C), "bf": np.zeros(C), "W_head": normal(C, V)}


def loss_and_grads(params, idx, targets, layers, backward=True):
    """(mean loss, copy loss, grads dict or None)."""
    p = params
    x = p["wte"][idx] + p["wpe"][None, :idx.shape[1]]                  # (B, T, C)
    ln1, ln1_cache = layers.layer_norm_forward(x, p["g1"], p["b1"])
    attended, attention_cache = layers.causal_self_attention_forward(ln1, p["W_qkv"], p["b_qkv"], p["W_out"],
                                                                     p["b_out"], N_HEAD)
    h = x + attended
    lnf, lnf_cache = layers.layer_norm_forward(h, p["gf"], p["bf"])
    logits = lnf @ p["W_head"]                                          # (B, T, V)
    shifted = logits - logits.max(axis=-1, keepdims=True)              # stable log-softmax
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]   # (B, T)
    loss, copy_loss = float(nll.mean()), float(nll[:, HALF - 1:].mean())
    if not backward:
        return loss, copy_loss, None
    dlogits = np.exp(log_probs)
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1, -1)
    dlogits /= nll.size
    grads = {"W_head": lnf.reshape(-1, C).T @ dlogits.reshape(-1, V)}
    dh, grads["gf"], grads["bf"] = layers.layer_norm_backward(dlogits @ p["W_head"].T, lnf_cache)
    dln1, grads["W_qkv"], grads["b_qkv"], grads["W_out"], grads["b_out"] = \
        layers.causal_self_attention_backward(dh, attention_cache)
    dx_ln, grads["g1"], grads["b1"] = layers.layer_norm_backward(dln1, ln1_cache)
    dx = dh + dx_ln                                                     # the residual adds both paths
    grads["wte"] = np.zeros_like(p["wte"])
    np.add.at(grads["wte"], idx, dx)
    grads["wpe"] = dx.sum(axis=0)
    return loss, copy_loss, grads


def train(layers, seed=0, steps=STEPS):
    """Adam on fresh batches; returns (copy losses per step, *the trained parameters in PARAM_NAMES order)."""
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    moments = {name: (np.zeros_like(w), np.zeros_like(w)) for name, w in params.items()}
    copy_losses = np.empty(steps)
    for step in range(1, steps + 1):
        idx, targets = batch(rng, BATCH)
        _, copy_losses[step - 1], grads = loss_and_grads(params, idx, targets, layers)
        for name, w in params.items():
            m, v = moments[name]
            m[...] = 0.9 * m + 0.1 * grads[name]
            v[...] = 0.999 * v + 0.001 * grads[name] ** 2
            params[name] = w - LEARNING_RATE * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return (copy_losses, *(params[name] for name in PARAM_NAMES))


def evaluate(layers, params, seed=1, size=256) -> float:
    """The copy loss of ``params`` (a dict or a sequence in PARAM_NAMES order) on a fresh batch."""
    if not isinstance(params, dict):
        params = dict(zip(PARAM_NAMES, params))
    idx, targets = batch(np.random.default_rng(seed), size)
    return loss_and_grads(params, idx, targets, layers, backward=False)[1]
