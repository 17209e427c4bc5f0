"""What each model's config may hold, and the parameter shapes a config implies — from numbers alone.

A loader checks a stored config against these bounds and against the tensor shapes recorded in the file
*before* it builds a model: an edited ``n_layer: 100000`` or ``block_size: 1e9`` is then one clear
error, never gigabytes of allocation.  The shapes here mirror each model's ``init_params`` (gpt.py,
llama.py, rnn_lm.py, seq2seq.py); a test builds small models and compares, so the two cannot drift apart.

The limits are far above any model npllm trains or loads (GPT-2 XL: 48 layers, n_embd 1600, 1,024
positions, 50,257 tokens, 1.6 billion parameters) and far below what would exhaust memory.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from npllm.checkpoint import Field, check_config_bounds, check_tensor_shapes
from npllm.errors import CheckpointError

MAX_VOCAB = 2**21          # tokens in a vocabulary
MAX_WIDTH = 2**16          # n_embd, n_head, hidden sizes
MAX_LAYERS = 1024
MAX_POSITIONS = 2**20      # block_size
MAX_PARAMETERS = 2**32     # scalars in all of a model's parameters together (16 GiB of float32)

_DROPOUT = Field(float, 0.0, 1.0)
CONFIG_FIELDS: dict[str, dict[str, Field]] = {
    "gpt": {"vocab_size": Field(int, 1, MAX_VOCAB), "block_size": Field(int, 1, MAX_POSITIONS),
            "n_layer": Field(int, 1, MAX_LAYERS), "n_head": Field(int, 1, MAX_WIDTH),
            "n_embd": Field(int, 1, MAX_WIDTH), "dropout": _DROPOUT},
    "rnn": {"vocab_size": Field(int, 1, MAX_VOCAB), "hidden_size": Field(int, 1, MAX_WIDTH),
            "n_layer": Field(int, 1, 2), "block_size": Field(int, 1, MAX_POSITIONS), "dropout": _DROPOUT},
    "seq2seq": {"src_vocab_size": Field(int, 1, MAX_VOCAB), "tgt_vocab_size": Field(int, 1, MAX_VOCAB),
                "embed_size": Field(int, 1, MAX_WIDTH), "hidden_size": Field(int, 1, MAX_WIDTH),
                "attention_size": Field(int, 1, MAX_WIDTH), "pad_id": Field(int, 0, MAX_VOCAB),
                "bos_id": Field(int, 0, MAX_VOCAB), "eos_id": Field(int, 0, MAX_VOCAB)},
    "llama": {"vocab_size": Field(int, 1, MAX_VOCAB), "block_size": Field(int, 1, MAX_POSITIONS),
              "n_layer": Field(int, 1, MAX_LAYERS), "n_head": Field(int, 1, MAX_WIDTH),
              "n_kv_head": Field(int, 1, MAX_WIDTH), "n_embd": Field(int, 1, MAX_WIDTH),
              "intermediate_size": Field(int, 1, 4 * MAX_WIDTH), "rope_theta": Field(float, 0.0, 1e12),
              "rms_norm_eps": Field(float, 0.0, 1.0), "tie_word_embeddings": Field(bool, 0, 1),
              "attention_bias": Field(bool, 0, 1)},
}
CONFIG_FIELDS["lstm"] = CONFIG_FIELDS["gru"] = CONFIG_FIELDS["rnn"]
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}      # a recurrent layer's weight widths are gates × H


def param_shapes(kind: str, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """name → shape of the params a ``kind`` model with this (bounds-checked) config has, in init order."""
    if kind == "gpt":
        V, P, C = config["vocab_size"], config["block_size"], config["n_embd"]
        shapes = {"wte.weight": (V, C), "wpe.weight": (P, C)}
        for i in range(config["n_layer"]):
            for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                                ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                                ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                                ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                                ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                                ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
                shapes[f"h.{i}.{name}"] = shape
        shapes["ln_f.weight"], shapes["ln_f.bias"] = (C,), (C,)
        return shapes
    if kind == "llama":
        V, C, I = config["vocab_size"], config["n_embd"], config["intermediate_size"]
        KV = config["n_kv_head"] * (C // config["n_head"])
        shapes = {"model.embed_tokens.weight": (V, C)}
        for i in range(config["n_layer"]):
            p = f"model.layers.{i}."
            shapes[p + "input_layernorm.weight"] = (C,)
            for name, width in (("q_proj", C), ("k_proj", KV), ("v_proj", KV)):
                shapes[p + f"self_attn.{name}.weight"] = (C, width)
                if config["attention_bias"]:
                    shapes[p + f"self_attn.{name}.bias"] = (width,)
            shapes[p + "self_attn.o_proj.weight"] = (C, C)
            shapes[p + "post_attention_layernorm.weight"] = (C,)
            shapes.update({p + "mlp.gate_proj.weight": (C, I), p + "mlp.up_proj.weight": (C, I),
                           p + "mlp.down_proj.weight": (I, C)})
        shapes["model.norm.weight"] = (C,)
        if not config["tie_word_embeddings"]:
            shapes["lm_head.weight"] = (C, V)
        return shapes
    if kind in _GATES:
        V, H, G = config["vocab_size"], config["hidden_size"], _GATES[kind]
        shapes = {"embedding.weight": (V, H)}
        for layer in range(config["n_layer"]):
            biases = ("bx", "bh") if kind == "gru" else ("b",)
            shapes.update({f"{kind}.{layer}.Wx": (H, G * H), f"{kind}.{layer}.Wh": (H, G * H)})
            shapes.update({f"{kind}.{layer}.{bias}": (G * H,) for bias in biases})
        shapes["head.weight"], shapes["head.bias"] = (H, V), (V,)
        return shapes
    if kind == "seq2seq":
        E, H, A = config["embed_size"], config["hidden_size"], config["attention_size"]
        lstm = {"Wx": (E, 4 * H), "Wh": (H, 4 * H), "b": (4 * H,)}
        shapes = {"src_embedding.weight": (config["src_vocab_size"], E)}
        shapes.update({f"encoder.{name}": shape for name, shape in lstm.items()})
        shapes["tgt_embedding.weight"] = (config["tgt_vocab_size"], E)
        shapes.update({f"decoder.{name}": shape for name, shape in lstm.items()})
        shapes.update({"attention.W_q": (H, A), "attention.W_k": (H, A), "attention.v": (A,),
                       "head.weight": (2 * H, config["tgt_vocab_size"]), "head.bias": (config["tgt_vocab_size"],)})
        return shapes
    raise CheckpointError(f"model_type {kind!r} is unknown; expected one of {sorted(CONFIG_FIELDS)}")


def check_config(kind: str, config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple] | None = None, *,
                 where: str = "model_config") -> dict[str, tuple[int, ...]]:
    """CheckpointError naming the field unless ``config`` is a sane ``kind`` config (types, bounds,
    n_embd divisible by n_head, a total under MAX_PARAMETERS) whose params have exactly
    ``tensor_shapes`` (when given); returns the expected shapes.  Allocates nothing."""
    if kind not in CONFIG_FIELDS:
        raise CheckpointError(f"model_type {kind!r} is unknown; expected one of {sorted(CONFIG_FIELDS)}")
    check_config_bounds(CONFIG_FIELDS[kind], config, where=where)
    if kind in ("gpt", "llama") and config["n_embd"] % config["n_head"]:
        raise CheckpointError(f"{where}: n_embd ({config['n_embd']}) must be divisible by n_head "
                              f"({config['n_head']})")
    if kind == "llama" and (config["n_embd"] // config["n_head"]) % 2:
        raise CheckpointError(f"{where}: the head size n_embd / n_head = {config['n_embd'] // config['n_head']} "
                              "must be even (RoPE rotates pairs)")
    if kind == "llama" and config["n_head"] % config["n_kv_head"]:
        raise CheckpointError(f"{where}: n_kv_head ({config['n_kv_head']}) must divide n_head ({config['n_head']})")
    shapes = param_shapes(kind, config)
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > MAX_PARAMETERS:
        raise CheckpointError(f"{where}: these sizes make a model of {total:,} parameters, more than the "
                              f"{MAX_PARAMETERS:,} npllm loads")
    if tensor_shapes is not None:
        check_tensor_shapes(shapes, tensor_shapes, where=f"{where} does not match the stored tensors")
    return shapes
