"""Llama (Touvron et al. 2023, "LLaMA" and "Llama 2") in NumPy; Qwen2 with ``attention_bias=True``.

The decoder of Llama, Mistral and Qwen2 as Hugging Face's ``LlamaForCausalLM`` computes it: a token
embedding and no position table, ``n_layer`` pre-RMSNorm blocks

    x = x + o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),   h = input_layernorm(x)
    x = x + down_proj(SiLU(gate_proj(h)) ⊙ up_proj(h)),                       h = post_attention_layernorm(x)

with causal grouped-query attention (n_kv_head key/value heads, each shared by n_head / n_kv_head query
heads), RoPE on q and k (rotate-half pairing, as Hugging Face's checkpoints expect), a final RMSNorm and
an lm head that is its own matrix unless ``tie_word_embeddings``.  No dropout, as in Llama.

Dimensions: B batch, T time, C = n_embd, V vocabulary, NH = n_head, NKV = n_kv_head, HS = C / NH head
size, I = intermediate_size.  ``params`` is one flat dict named as ``LlamaForCausalLM``'s state dict,
with matrices in npllm's (in, out) layout (nn.Linear's transposed): q_proj (C, NH·HS), k_proj and
v_proj (C, NKV·HS), o_proj (C, C), gate_proj and up_proj (C, I), down_proj (I, C), lm_head (C, V);
the embedding stays (V, C).  ``forward`` returns logits and a cache, ``backward`` walks the chain in
reverse; nothing is kept on ``self``.  Hot ops go through :data:`npllm.backend.ops`.  In training
(no key/value cache) a block calls ``rope_attention`` where the backend provides it, which on numba
rotates q and k inside the flash loops instead of making rotated copies; otherwise, and when decoding
with a cache (whose keys are stored already rotated), it calls ``rope`` then the attention.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from npllm.backend import ops, provides
from npllm.layers.attention import merge_heads, split_heads
from npllm.models import llama_io
from npllm.models._common import check_token_ids


@dataclass
class LlamaConfig:
    """Sizes of a Llama; Hugging Face's LlamaConfig names them hidden_size (n_embd),
    num_attention_heads (n_head), num_key_value_heads (n_kv_head) and max_position_embeddings (block_size)."""
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd ({self.n_embd}) must be n_head ({self.n_head}) times an even head size "
                             f"(RoPE rotates pairs)")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        for name in ("tie_word_embeddings", "attention_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


class LlamaBlockCache(NamedTuple):
    """Everything one block's backward needs, in forward order."""
    input_layernorm: object
    q_proj: object
    k_proj: object
    v_proj: object
    q_rope: object          # None when attn is a rope_attention cache (RoPE fused into the attention)
    k_rope: object
    attn: object
    o_proj: object
    post_attention_layernorm: object
    mlp: object             # SwiGLUMLPCache of gate_proj, up_proj, SiLU ⊙ and down_proj


class LlamaCache(NamedTuple):
    embed_tokens: object
    blocks: list            # one LlamaBlockCache per layer
    norm: object
    lm_head: object         # LinearCache of x @ lm_head (or x @ embed_tokens.T when tied)


class LlamaKVCache:
    """Rotated keys and values of the positions seen so far, per layer: each (B, NKV, capacity, HS).

    Keys are stored after RoPE, so a new query attends to them without recomputing anything.  The
    capacity starts at block_size (at most INITIAL_CAPACITY: a Hugging Face model's block_size may be
    131,072) and doubles when a forward needs more: RoPE computes the angle of any
    position, so decoding may continue past block_size (a model trained on shorter sequences extrapolates
    there as well or as badly as RoPE lets it).
    """

    INITIAL_CAPACITY = 1024

    def __init__(self, config: LlamaConfig, batch_size: int, dtype):
        capacity = min(config.block_size, self.INITIAL_CAPACITY)
        self.shape = (batch_size, config.n_kv_head, capacity, config.n_embd // config.n_head)
        self.keys = [np.zeros(self.shape, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [np.zeros(self.shape, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0     # positions filled (the same in every layer once a forward finishes)

    def extend(self, layer: int, k: np.ndarray, v: np.ndarray):
        """Write k, v (B, NKV, T, HS) after the filled positions; return all keys and values so far."""
        start, T = self.length, k.shape[2]
        capacity = self.keys[layer].shape[2]
        if start + T > capacity:                       # grow by doubling: amortised O(1) per token
            grown = max(2 * capacity, start + T)
            for store in (self.keys, self.values):
                bigger = np.zeros(store[layer].shape[:2] + (grown,) + store[layer].shape[3:], store[layer].dtype)
                bigger[:, :, :start] = store[layer][:, :, :start]
                store[layer] = bigger
        self.keys[layer][:, :, start:start + T] = k
        self.values[layer][:, :, start:start + T] = v
        return self.keys[layer][:, :, :start + T], self.values[layer][:, :, :start + T]


class Llama:
    """The Llama architecture with hand-written forward and backward (see the module docstring)."""

    kind = "llama"
    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig, seed: int = 0, dtype=np.float32):
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
        self.config = config
        self.params = self.init_params(config, np.random.default_rng(seed), np.dtype(dtype))

    @staticmethod
    def init_params(config: LlamaConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        """Hugging Face's Llama init: every matrix N(0, 0.02) (initializer_range), biases 0, RMSNorm weights 1."""
        C, V, I = config.n_embd, config.vocab_size, config.intermediate_size
        KV = config.n_kv_head * (C // config.n_head)

        def normal(shape):
            return rng.normal(0.0, 0.02, size=shape).astype(dtype)

        params = {"model.embed_tokens.weight": normal((V, C))}
        for i in range(config.n_layer):
            p = f"model.layers.{i}."
            params[p + "input_layernorm.weight"] = np.ones(C, dtype)
            for name, width in (("q_proj", C), ("k_proj", KV), ("v_proj", KV)):
                params[p + f"self_attn.{name}.weight"] = normal((C, width))
                if config.attention_bias:
                    params[p + f"self_attn.{name}.bias"] = np.zeros(width, dtype)
            params[p + "self_attn.o_proj.weight"] = normal((C, C))
            params[p + "post_attention_layernorm.weight"] = np.ones(C, dtype)
            params[p + "mlp.gate_proj.weight"] = normal((C, I))
            params[p + "mlp.up_proj.weight"] = normal((C, I))
            params[p + "mlp.down_proj.weight"] = normal((I, C))
        params["model.norm.weight"] = np.ones(C, dtype)
        if not config.tie_word_embeddings:
            params["lm_head.weight"] = normal((C, V))
        return params

    # ------------------------------------------------------------------ forward
    def forward(self, idx, training: bool = False, rng: np.random.Generator | None = None):
        """idx int (B, T), T <= block_size → logits (B, T, V), LlamaCache.  training and rng are accepted
        for the common model interface; Llama has no dropout, so they change nothing."""
        check_token_ids(idx, self.config.vocab_size, self.config.block_size)
        return self._forward(idx, 0, None)

    def forward_cached(self, idx, kv_cache: LlamaKVCache | None = None):
        """Inference on new tokens idx (B, T) after the kv_cache's positions → logits (B, T, V), kv_cache.

        With kv_cache None a fresh one is made (the "prefill"); it is updated in place and returned.
        Positions continue past block_size (the cache grows; see :class:`LlamaKVCache`).
        """
        B, T = check_token_ids(idx, self.config.vocab_size, None)
        if kv_cache is None:
            kv_cache = LlamaKVCache(self.config, B, self.params["model.embed_tokens.weight"].dtype)
        if not isinstance(kv_cache, LlamaKVCache):
            raise TypeError(f"kv_cache must be a LlamaKVCache or None, got {type(kv_cache).__name__}")
        if kv_cache.shape[0] != B:
            raise ValueError(f"idx has batch size {B}, the kv_cache was made for {kv_cache.shape[0]}")
        logits, _ = self._forward(idx, kv_cache.length, kv_cache)
        kv_cache.length += T
        return logits, kv_cache

    def _forward(self, idx, start: int, kv_cache):
        """The whole forward for positions start..start+T-1 (kv_cache: attend to earlier positions too)."""
        params, config = self.params, self.config
        positions = np.arange(start, start + idx.shape[1])                               # (T,)
        x, embed_cache = ops.embedding_forward(idx, params["model.embed_tokens.weight"])  # (B, T, C)
        blocks = []
        for i in range(config.n_layer):
            x, block_cache = self._block_forward(i, x, positions, kv_cache)
            blocks.append(block_cache)
        x, norm = ops.rms_norm_forward(x, params["model.norm.weight"], config.rms_norm_eps)
        head = params["model.embed_tokens.weight"].T if config.tie_word_embeddings else params["lm_head.weight"]
        logits, lm_head = ops.linear_forward(x, head, None)                                # (B, T, V)
        return logits, LlamaCache(embed_cache, blocks, norm, lm_head)

    def _block_forward(self, i: int, x, positions, kv_cache):
        """x (B, T, C) → x + attention(input_layernorm(x)), then + mlp(post_attention_layernorm(·))."""
        params, config = self.params, self.config
        p = f"model.layers.{i}."
        NH, NKV = config.n_head, config.n_kv_head
        h, input_layernorm = ops.rms_norm_forward(x, params[p + "input_layernorm.weight"], config.rms_norm_eps)
        projections = []
        for name, heads in (("q_proj", NH), ("k_proj", NKV), ("v_proj", NKV)):
            out, proj_cache = ops.linear_forward(h, params[p + f"self_attn.{name}.weight"],
                                                 params.get(p + f"self_attn.{name}.bias"))
            projections.append((split_heads(out, heads), proj_cache))               # (B, heads, T, HS)
        (q, q_proj), (k, k_proj), (v, v_proj) = projections
        if kv_cache is None and provides("rope_attention_forward"):
            # RoPE fused into the attention: dq, dk come back with respect to the unrotated q, k.
            y, attn = ops.rope_attention_forward(q, k, v, positions, config.rope_theta, causal=True)
            q_rope = k_rope = None
        else:
            q, q_rope = ops.rope_forward(q, positions, config.rope_theta)
            k, k_rope = ops.rope_forward(k, positions, config.rope_theta)
            if kv_cache is not None:
                k, v = kv_cache.extend(i, k, v)                                      # (B, NKV, start+T, HS)
            y, attn = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)   # (B, NH, T, HS)
        y, o_proj = ops.linear_forward(merge_heads(y), params[p + "self_attn.o_proj.weight"], None)   # (B, T, C)
        x = x + y
        h, post_attention_layernorm = ops.rms_norm_forward(x, params[p + "post_attention_layernorm.weight"],
                                                           config.rms_norm_eps)
        h, mlp = ops.swiglu_mlp_forward(h, params[p + "mlp.gate_proj.weight"], params[p + "mlp.up_proj.weight"],
                                        params[p + "mlp.down_proj.weight"])         # (B, T, C)
        x = x + h
        return x, LlamaBlockCache(input_layernorm, q_proj, k_proj, v_proj, q_rope, k_rope, attn, o_proj,
                                  post_attention_layernorm, mlp)

    # ----------------------------------------------------------------- backward
    def backward(self, dlogits, cache: LlamaCache) -> dict[str, np.ndarray]:
        """dlogits (B, T, V) → grads: a dict with the keys and shapes of params (fresh arrays)."""
        if not isinstance(cache, LlamaCache):
            raise TypeError(f"cache must be the LlamaCache returned by forward, got {type(cache).__name__}")
        grads: dict[str, np.ndarray] = {}
        dx, dhead, _ = ops.linear_backward(dlogits, cache.lm_head)                      # dx (B, T, C)
        dx, grads["model.norm.weight"] = ops.rms_norm_backward(dx, cache.norm)
        for i in reversed(range(self.config.n_layer)):
            dx = self._block_backward(i, dx, cache.blocks[i], grads)
        dembed = ops.embedding_backward(dx, cache.embed_tokens)                         # (V, C)
        if self.config.tie_word_embeddings:
            # The embedding is used twice (input lookup and head): its gradient is the sum.
            grads["model.embed_tokens.weight"] = dembed + dhead.T
        else:
            grads["model.embed_tokens.weight"], grads["lm_head.weight"] = dembed, dhead
        return {name: grads[name] for name in self.params}                            # params' order

    def _block_backward(self, i: int, dx, cache: LlamaBlockCache, grads: dict):
        """dx (B, T, C) at the block's output → dx at its input; writes the block's grads."""
        p = f"model.layers.{i}."
        # MLP branch: x_out = x_mid + down_proj(SiLU(gate_proj(h)) ⊙ up_proj(h)), h = post_attention_layernorm(x_mid).
        dh, *mlp_grads = ops.swiglu_mlp_backward(dx, cache.mlp)
        mlp_names = [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
        grads.update(zip(mlp_names, mlp_grads))
        dh, grads[p + "post_attention_layernorm.weight"] = ops.rms_norm_backward(dh, cache.post_attention_layernorm)
        dx = dx + dh                                                                  # residual: both paths
        # Attention branch: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)), h = input_layernorm(x_in).
        dy, grads[p + "self_attn.o_proj.weight"], _ = ops.linear_backward(dx, cache.o_proj)
        dy = split_heads(dy, self.config.n_head)                                       # (B, NH, T, HS)
        if cache.q_rope is None:                                                        # rope_attention
            dq, dk, dv = ops.rope_attention_backward(dy, cache.attn)                    # dk, dv (B, NKV, T, HS)
        else:
            dq, dk, dv = ops.scaled_dot_product_attention_backward(dy, cache.attn)
            dq = ops.rope_backward(dq, cache.q_rope)
            dk = ops.rope_backward(dk, cache.k_rope)
        dh = None
        for name, grad, proj_cache in (("v_proj", dv, cache.v_proj), ("k_proj", dk, cache.k_proj),
                                       ("q_proj", dq, cache.q_proj)):
            dh_part, dW, db = ops.linear_backward(merge_heads(grad), proj_cache)
            grads[p + f"self_attn.{name}.weight"] = dW
            if db is not None:
                grads[p + f"self_attn.{name}.bias"] = db
            dh = dh_part if dh is None else dh + dh_part                               # h fed all three
        dh, grads[p + "input_layernorm.weight"] = ops.rms_norm_backward(dh, cache.input_layernorm)
        return dx + dh

    # -------------------------------------------------------------- utilities
    def num_params(self) -> int:
        """Number of scalar parameters (a tied head counted once)."""
        return sum(int(a.size) for a in self.params.values())

    def config_dict(self) -> dict:
        """The config as a JSON-able dict (for checkpoints)."""
        return asdict(self.config)

    @classmethod
    def from_pretrained(cls, path) -> "Llama":
        """Load a Hugging Face Llama, Qwen2 or Mistral directory (config.json + model.safetensors or its
        shards) from local disk; bfloat16/float16 weights become float32 (llama_io explains how).

        llama_io checks the config and every tensor's name, shape and dtype before a weight is read."""
        config, params = llama_io.read_pretrained(path)
        model = cls.__new__(cls)        # no random init: a billion normals drawn only to be replaced
        model.config, model.params = LlamaConfig(**config), params   # params in init_params' order
        return model

    def save_pretrained(self, path, tokenizer=None) -> None:
        """Write config.json + model.safetensors in Hugging Face's layout (LlamaForCausalLM, or
        Qwen2ForCausalLM with q/k/v biases), plus a BPE tokenizer's files when given."""
        llama_io.save_pretrained(self, path, tokenizer)
