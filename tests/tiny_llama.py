"""Tiny random Llama-family directories in Hugging Face's layout, written by hand (no download, no torch):
config.json in transformers 4.x or 5 style, model.safetensors (F32, F16 or BF16, written byte by byte so
bfloat16 needs no NumPy dtype) or shards with model.safetensors.index.json, and a byte-level BPE
tokenizer.json.  Used by test_llama_io.py and the command tests."""
import json
import struct
from pathlib import Path

import numpy as np

from npllm.tokenizers import bytes_to_unicode

SIZES = {"vocab_size": 264, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32}
MERGES = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["a", "n"], ["Ġ", "a"], ["Ġa", "n"]]
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>"]


def hf_config(family="llama", style="4", **overrides) -> dict:
    """A config.json dict: ``family`` llama | qwen2 | mistral; ``style`` "4" (top-level rope_theta) or
    "5" (transformers 5's rope_parameters)."""
    architecture = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
    config = {"architectures": [architecture[family]], "model_type": family, "hidden_act": "silu",
              "rms_norm_eps": 1e-6, "tie_word_embeddings": family == "qwen2", "torch_dtype": "bfloat16",
              "initializer_range": 0.02, "use_cache": True, "bos_token_id": 262, "eos_token_id": 263, **SIZES}
    if style == "5":
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    else:
        config.update({"rope_theta": 500000.0, "rope_scaling": None})
    if family == "llama":
        config.update({"attention_bias": False, "mlp_bias": False, "head_dim": 4})
    if family == "qwen2":
        config.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2})
    if family == "mistral":
        config["sliding_window"] = None
    config.update(overrides)
    return {key: value for key, value in config.items() if value is not ...}


def hf_tensors(config: dict, rng, bf16_exact=False) -> dict[str, np.ndarray]:
    """Random float32 weights under LlamaForCausalLM's names in nn.Linear's (out, in) layout."""
    C, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    HS = C // config["num_attention_heads"]
    KV = config.get("num_key_value_heads", config["num_attention_heads"]) * HS

    def normal(*shape, mean=0.0):
        value = (mean + 0.3 * rng.standard_normal(shape)).astype(np.float32)
        if bf16_exact:       # keep the top 16 bits only, so bfloat16 holds the value exactly
            value = (value.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        return value

    tensors = {"model.embed_tokens.weight": normal(V, C)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = normal(C, mean=1.0)
        for name, width in (("q_proj", C), ("k_proj", KV), ("v_proj", KV)):
            tensors[p + f"self_attn.{name}.weight"] = normal(width, C)
            if config["model_type"] == "qwen2":
                tensors[p + f"self_attn.{name}.bias"] = normal(width)
        tensors[p + "self_attn.o_proj.weight"] = normal(C, C)
        tensors[p + "post_attention_layernorm.weight"] = normal(C, mean=1.0)
        tensors.update({p + "mlp.gate_proj.weight": normal(I, C), p + "mlp.up_proj.weight": normal(I, C),
                        p + "mlp.down_proj.weight": normal(C, I)})
    tensors["model.norm.weight"] = normal(C, mean=1.0)
    if not config["tie_word_embeddings"]:
        tensors["lm_head.weight"] = normal(V, C)
    return tensors


def write_safetensors(path, tensors: dict, dtype="F32", metadata=None) -> None:
    """A safetensors file written byte by byte; float32 arrays stored as ``dtype`` (F32, F16 or BF16:
    bfloat16 is the top half of each float32's bits)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype.kind == "f" and dtype == "BF16":
            data, kind = (array.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes(), "BF16"
        elif array.dtype.kind == "f":
            kind = dtype if array.dtype == np.float32 else {8: "F64", 2: "F16"}[array.itemsize]
            data = array.astype({"F32": "<f4", "F16": "<f2", "F64": "<f8"}[kind]).tobytes()
        else:
            data, kind = array.astype("<i4").tobytes(), "I32"
        header[name] = {"dtype": kind, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def tokenizer_json(pattern=None, merges_as_strings=False) -> dict:
    """A byte-level BPE tokenizer.json: 256 byte tokens, six merges (256-261), two special tokens (262, 263)."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    for left, right in MERGES:
        vocab.setdefault(left + right, len(vocab))
    added = [{"id": len(vocab) + i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, text in enumerate(SPECIAL)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": pattern is None}
    pre_tokenizer = byte_level if pattern is None else {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {**byte_level, "use_regex": False}]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": pre_tokenizer, "post_processor": None,
            # The tokenizers library requires every ByteLevel field, even where they do not matter.
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab,
                      "merges": [" ".join(m) if merges_as_strings else list(m) for m in MERGES]}}


def write_tiny_llama(path, family="llama", *, style="4", dtype="F32", shards=1, seed=0, config=None,
                     tensors=None, tokenizer=True) -> tuple[dict, dict]:
    """Write the directory; returns (config.json dict, tensors written in HF layout as float32)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf = hf_config(family, style, **(config or {}))
    (path / "config.json").write_text(json.dumps(hf, indent=2))
    if tensors is None:       # shaped by the config's sizes (a test of a bad value passes its tensors)
        hf_sizes = hf_config(family, **{k: v for k, v in (config or {}).items() if k in SIZES or k == "tie_word_embeddings"})
        tensors = hf_tensors(hf_sizes, np.random.default_rng(seed), bf16_exact=dtype == "BF16")
    metadata = {"format": "pt"}
    if shards == 1:
        write_safetensors(path / "model.safetensors", tensors, dtype, metadata)
    else:
        names, weight_map = sorted(tensors), {}
        for k in range(shards):
            file_name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {name: tensors[name] for name in names[k::shards]}
            write_safetensors(path / file_name, part, dtype, metadata)
            weight_map.update({name: file_name for name in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0},
                                                                       "weight_map": weight_map}))
    if tokenizer:
        (path / "tokenizer.json").write_text(json.dumps(tokenizer_json(), ensure_ascii=False), encoding="utf-8")
    return hf, tensors
