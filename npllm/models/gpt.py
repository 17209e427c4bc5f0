"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") in NumPy.

The architecture of GPT-2 and nanoGPT: token + learned position embeddings, ``n_layer`` pre-LayerNorm
blocks (causal multi-head self-attention, then a GELU(tanh) MLP of width 4C, each added back to the
residual stream), a final LayerNorm and a language-model head tied to the token embedding.

Dimensions, as in llm.c: B batch, T time, C = n_embd, V vocabulary, NH heads, HS = C / NH head size.
The parameters live in one flat dict named as Hugging Face's GPT-2 (without ``transformer.``), with its
``(in, out)`` weight layouts, so a GPT-2 checkpoint maps on name for name.  ``forward`` returns the
logits and a cache; ``backward`` walks the same chain in reverse order and returns a gradient dict.
Nothing is kept on ``self`` between calls.  The hot ops go through :data:`npllm.backend.ops`, so the
numba/cuda backends speed this file up without changing it.

Generation uses :meth:`GPT.forward_cached` with a :class:`KVCache`: the keys and values of earlier
positions are kept per layer, so each new token costs one position instead of the whole prefix.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from npllm.backend import ops, provides
from npllm.layers.attention import merge_heads, split_heads
from npllm.models import gpt2_io
from npllm.models._common import check_token_ids


@dataclass
class GPTConfig:
    """Sizes of a GPT; ``dropout`` applies to the embeddings and to each residual branch in training."""
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")


class BlockCache(NamedTuple):
    """Everything one transformer block's backward needs, in forward order."""
    ln_1: object
    c_attn: object          # None when attn is a multi_head_attention cache (c_attn and c_proj inside)
    attn: object
    attn_c_proj: object     # None, as c_attn
    attn_drop: object
    ln_2: object
    c_fc: object            # an mlp cache (c_fc, GELU and c_proj) when gelu is None
    gelu: object
    mlp_c_proj: object      # None, as gelu
    mlp_drop: object


class GPTCache(NamedTuple):
    wte: object             # EmbeddingCache of the token lookup
    wpe: object             # EmbeddingCache of the position lookup
    emb_drop: object
    blocks: list            # one BlockCache per layer
    ln_f: object
    lm_head: object         # LinearCache of x @ wte.T


class KVCache:
    """Keys and values of the positions seen so far, per layer: each (B, NH, block_size, HS).

    Preallocated to block_size so appending a token writes one slot instead of copying the prefix.
    """

    def __init__(self, config: GPTConfig, batch_size: int, dtype):
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0     # positions filled (the same in every layer once a forward finishes)

    def extend(self, layer: int, k: np.ndarray, v: np.ndarray):
        """Write k, v (B, NH, T, HS) after the filled positions; return all keys and values so far."""
        start, T = self.length, k.shape[2]
        self.keys[layer][:, :, start:start + T] = k
        self.values[layer][:, :, start:start + T] = v
        return self.keys[layer][:, :, :start + T], self.values[layer][:, :, :start + T]


class GPT:
    """The GPT-2 architecture with hand-written forward and backward (see the module docstring)."""

    kind = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig, seed: int = 0, dtype=np.float32):
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.params = self.init_params(config, np.random.default_rng(seed), np.dtype(dtype))

    @staticmethod
    def init_params(config: GPTConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        """GPT-2's init: weights N(0, 0.02); residual projections N(0, 0.02/sqrt(2·n_layer)); biases 0; LN 1."""
        C, V = config.n_embd, config.vocab_size
        # Each block adds two projections to the residual stream; scaling them keeps the stream's
        # variance from growing with depth (GPT-2 paper, section 2.3).
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)

        def normal(shape, std=0.02):
            return rng.normal(0.0, std, size=shape).astype(dtype)

        params = {"wte.weight": normal((V, C)), "wpe.weight": normal((config.block_size, C))}
        for i in range(config.n_layer):
            p = f"h.{i}."
            params[p + "ln_1.weight"], params[p + "ln_1.bias"] = np.ones(C, dtype), np.zeros(C, dtype)
            params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"] = normal((C, 3 * C)), np.zeros(3 * C, dtype)
            params[p + "attn.c_proj.weight"] = normal((C, C), residual_std)
            params[p + "attn.c_proj.bias"] = np.zeros(C, dtype)
            params[p + "ln_2.weight"], params[p + "ln_2.bias"] = np.ones(C, dtype), np.zeros(C, dtype)
            params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"] = normal((C, 4 * C)), np.zeros(4 * C, dtype)
            params[p + "mlp.c_proj.weight"] = normal((4 * C, C), residual_std)
            params[p + "mlp.c_proj.bias"] = np.zeros(C, dtype)
        params["ln_f.weight"], params["ln_f.bias"] = np.ones(C, dtype), np.zeros(C, dtype)
        return params

    # ------------------------------------------------------------------ forward
    def forward(self, idx, training: bool = False, rng: np.random.Generator | None = None):
        """idx int (B, T), T <= block_size → logits (B, T, V), GPTCache (dropout needs training and rng)."""
        B, T = check_token_ids(idx, self.config.vocab_size, self.config.block_size)
        return self._forward(idx, 0, None, self._dropout_p(training, rng), rng)

    def forward_cached(self, idx, kv_cache: KVCache | None = None):
        """Inference on new tokens idx (B, T) after the kv_cache's positions → logits (B, T, V), kv_cache.

        With kv_cache None a fresh one is made (the "prefill"); it is updated in place and returned.
        """
        B, T = check_token_ids(idx, self.config.vocab_size, None)
        dtype = self.params["wte.weight"].dtype
        if kv_cache is None:
            kv_cache = KVCache(self.config, B, dtype)
        if kv_cache.keys[0].shape[0] != B:
            raise ValueError(f"idx has batch size {B}, the kv_cache was made for {kv_cache.keys[0].shape[0]}")
        if kv_cache.length + T > self.config.block_size:
            raise ValueError(f"kv_cache holds {kv_cache.length} positions; {T} more exceed block_size "
                             f"{self.config.block_size} (crop the context and rebuild the cache)")
        logits, _ = self._forward(idx, kv_cache.length, kv_cache, 0.0, None)
        kv_cache.length += T
        return logits, kv_cache

    def _dropout_p(self, training: bool, rng) -> float:
        if not (training and self.config.dropout > 0):
            return 0.0
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator when training with dropout "
                            f"{self.config.dropout}, got {type(rng).__name__}")
        return self.config.dropout

    def _forward(self, idx, start: int, kv_cache, p_drop: float, rng):
        """The whole forward for positions start..start+T-1 (kv_cache: attend to earlier positions too)."""
        params = self.params
        T = idx.shape[1]
        tok, wte_cache = ops.embedding_forward(idx, params["wte.weight"])              # (B, T, C)
        positions = np.arange(start, start + T)
        pos, wpe_cache = ops.embedding_forward(positions, params["wpe.weight"])        # (T, C)
        x, emb_drop = ops.dropout_forward(tok + pos, p_drop, rng)                          # (B, T, C)
        blocks = []
        for i in range(self.config.n_layer):
            x, block_cache = self._block_forward(i, x, kv_cache, p_drop, rng)
            blocks.append(block_cache)
        x, ln_f = ops.layer_norm_forward(x, params["ln_f.weight"], params["ln_f.bias"])
        # Tied head: the output layer reuses the token embedding, logits[v] = x · wte[v].
        logits, lm_head = ops.linear_forward(x, params["wte.weight"].T, None)         # (B, T, V)
        return logits, GPTCache(wte_cache, wpe_cache, emb_drop, blocks, ln_f, lm_head)

    def _block_forward(self, i: int, x, kv_cache, p_drop: float, rng):
        """x (B, T, C) → x + attn(ln_1(x)), then + mlp(ln_2(·)); returns (B, T, C) and a BlockCache."""
        params, NH = self.params, self.config.n_head
        p = f"h.{i}."
        h, ln_1 = ops.layer_norm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"])
        weights = (params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"],
                   params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"])
        if kv_cache is None and provides("multi_head_attention_forward"):
            # One op for c_attn, the heads' attention and c_proj: the same arithmetic, and a backend
            # may fuse it (numba's reads q, k, v straight out of the qkv projection, without copies).
            y, attn = ops.multi_head_attention_forward(h, *weights, NH, causal=True)      # (B, T, C)
            c_attn = attn_c_proj = None
        else:
            qkv, c_attn = ops.linear_forward(h, weights[0], weights[1])
            q, k, v = (split_heads(part, NH) for part in np.split(qkv, 3, axis=-1))  # 3 × (B, NH, T, HS)
            if kv_cache is not None:
                k, v = kv_cache.extend(i, k, v)                                       # (B, NH, start+T, HS)
            y, attn = ops.scaled_dot_product_attention_forward(q, k, v, causal=True)  # (B, NH, T, HS)
            y, attn_c_proj = ops.linear_forward(merge_heads(y), weights[2], weights[3])  # (B, T, C)
        y, attn_drop = ops.dropout_forward(y, p_drop, rng)
        x = x + y
        h, ln_2 = ops.layer_norm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"])
        mlp_weights = (params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"],
                       params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"])
        if provides("mlp_forward"):
            # linear → GELU → linear as one op (numba's keeps the (B, T, 4C) hidden in reused buffers).
            h, c_fc = ops.mlp_forward(h, *mlp_weights, approximate="tanh")
            gelu = mlp_c_proj = None
        else:
            h, c_fc = ops.linear_forward(h, mlp_weights[0], mlp_weights[1])          # (B, T, 4C)
            h, gelu = ops.gelu_forward(h, approximate="tanh")
            h, mlp_c_proj = ops.linear_forward(h, mlp_weights[2], mlp_weights[3])
        h, mlp_drop = ops.dropout_forward(h, p_drop, rng)
        x = x + h
        return x, BlockCache(ln_1, c_attn, attn, attn_c_proj, attn_drop, ln_2, c_fc, gelu, mlp_c_proj, mlp_drop)

    # ----------------------------------------------------------------- backward
    def backward(self, dlogits, cache: GPTCache) -> dict[str, np.ndarray]:
        """dlogits (B, T, V) → grads: a dict with the keys and shapes of params (fresh arrays)."""
        if not isinstance(cache, GPTCache):
            raise TypeError(f"cache must be the GPTCache returned by forward, got {type(cache).__name__}")
        grads: dict[str, np.ndarray] = {}
        dx, dwte_T, _ = ops.linear_backward(dlogits, cache.lm_head)                   # dx (B, T, C)
        dwte_head = dwte_T.T                                                          # (V, C)
        dx, grads["ln_f.weight"], grads["ln_f.bias"] = ops.layer_norm_backward(dx, cache.ln_f)
        for i in reversed(range(self.config.n_layer)):
            dx = self._block_backward(i, dx, cache.blocks[i], grads)
        dx = ops.dropout_backward(dx, cache.emb_drop)
        grads["wpe.weight"] = ops.embedding_backward(dx.sum(axis=0), cache.wpe)       # positions shared by the batch
        # The token embedding is used twice (input lookup and tied head): its gradient is the sum.
        grads["wte.weight"] = ops.embedding_backward(dx, cache.wte) + dwte_head
        return {name: grads[name] for name in self.params}                            # params' order

    def _block_backward(self, i: int, dx, cache: BlockCache, grads: dict):
        """dx (B, T, C) at the block's output → dx at its input; writes the block's grads."""
        p = f"h.{i}."
        NH = self.config.n_head
        # MLP branch: x_out = x_mid + drop(c_proj(gelu(c_fc(ln_2(x_mid))))).
        dh = ops.dropout_backward(dx, cache.mlp_drop)
        mlp_names = [p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", p + "mlp.c_proj.weight", p + "mlp.c_proj.bias"]
        if cache.gelu is None:                                                        # the fused op's cache
            dh, *mlp_grads = ops.mlp_backward(dh, cache.c_fc)
            grads.update(zip(mlp_names, mlp_grads))
        else:
            dh, grads[mlp_names[2]], grads[mlp_names[3]] = ops.linear_backward(dh, cache.mlp_c_proj)
            dh = ops.gelu_backward(dh, cache.gelu)
            dh, grads[mlp_names[0]], grads[mlp_names[1]] = ops.linear_backward(dh, cache.c_fc)
        dh, grads[p + "ln_2.weight"], grads[p + "ln_2.bias"] = ops.layer_norm_backward(dh, cache.ln_2)
        dx = dx + dh                                                                  # residual: both paths
        # Attention branch: x_mid = x_in + drop(c_proj(attn(c_attn(ln_1(x_in))))).
        dy = ops.dropout_backward(dx, cache.attn_drop)
        names = [p + "attn.c_attn.weight", p + "attn.c_attn.bias", p + "attn.c_proj.weight", p + "attn.c_proj.bias"]
        if cache.c_attn is None:                                                      # the fused op's cache
            dh, *attn_grads = ops.multi_head_attention_backward(dy, cache.attn)
            grads.update(zip(names, attn_grads))
        else:
            dy, grads[names[2]], grads[names[3]] = ops.linear_backward(dy, cache.attn_c_proj)
            dq, dk, dv = ops.scaled_dot_product_attention_backward(split_heads(dy, NH), cache.attn)
            dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # (B, T, 3C)
            dh, grads[names[0]], grads[names[1]] = ops.linear_backward(dqkv, cache.c_attn)
        dh, grads[p + "ln_1.weight"], grads[p + "ln_1.bias"] = ops.layer_norm_backward(dh, cache.ln_1)
        return dx + dh

    # -------------------------------------------------------------- utilities
    def num_params(self) -> int:
        """Number of scalar parameters (the tied head counted once)."""
        return sum(int(a.size) for a in self.params.values())

    def config_dict(self) -> dict:
        """The config as a JSON-able dict (for checkpoints)."""
        return asdict(self.config)

    @classmethod
    def from_pretrained(cls, path) -> "GPT":
        """Load a Hugging Face GPT-2 directory (config.json + model.safetensors) from local disk.

        gpt2_io checks the config and every tensor's name, shape and dtype before a weight is read."""
        sizes, params = gpt2_io.read_pretrained(path)
        model = cls(GPTConfig(**asdict(sizes)), dtype=next(iter(params.values())).dtype)
        model.params = {name: params[name] for name in model.params}
        return model

    def save_pretrained(self, path, tokenizer=None) -> None:
        """Write config.json + model.safetensors in Hugging Face GPT-2's layout (+ a BPE tokenizer's files)."""
        gpt2_io.save_pretrained(self, path, tokenizer)
