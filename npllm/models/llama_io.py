"""Hugging Face Llama-family directories ↔ :class:`~npllm.models.Llama`, from local disk only.

A directory holds ``config.json`` and the weights, either ``model.safetensors`` or shards listed by
``model.safetensors.index.json`` (its ``weight_map``: tensor name → shard file); pickle files are never
read.  Three architectures compute exactly what :class:`Llama` computes:

* ``LlamaForCausalLM`` (no biases: ``attention_bias`` and ``mlp_bias`` must be false, since Llama's
  ``attention_bias`` also adds an o_proj bias npllm does not have);
* ``Qwen2ForCausalLM``: biases on q, k and v (→ ``attention_bias=True``), the head tied per
  ``tie_word_embeddings``; ``use_sliding_window`` must be false;
* ``MistralForCausalLM`` without a sliding window (``sliding_window`` null or ≥ max_position_embeddings).

Both config styles are read: transformers 5's ``rope_parameters`` ({"rope_type": "default",
"rope_theta": ...}) and 4.x's top-level ``rope_theta`` / ``rope_scaling``; a scaled RoPE (linear,
dynamic, yarn, llama3, ...), another ``hidden_act`` than silu, a ``head_dim`` other than
hidden_size / num_attention_heads, or another architecture is one :class:`CheckpointError` naming the
field.  Everything is checked from config.json and the safetensors *headers* (npllm.models.layout)
before a weight is read.

Weights are read from the files' raw bytes, so every dtype the Hub uses loads: F32, F16, F64 and BF16.
NumPy has no bfloat16; a bfloat16 is the top 16 bits of a float32, so widening it is exact:
``(raw.astype(np.uint32) << 16).view(np.float32)``.  The model gets float32 (float64 when every tensor
is F64), matrices transposed from nn.Linear's (out, in) to npllm's (in, out).

:func:`save_pretrained` writes config.json in transformers 4.x's style (``torch_dtype``, top-level
``rope_theta``; ``Qwen2ForCausalLM`` when the model has q/k/v biases, else ``LlamaForCausalLM``) and
model.safetensors in nn.Linear's layout with the metadata ``{"format": "pt"}``, deterministically and
through :func:`npllm.checkpoint.write_atomic`, so save → load → save gives byte-identical files.

This module works on config dicts and arrays and never imports llama.py (which imports it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from npllm.checkpoint import Field, check_config_bounds, check_tensor_shapes, read_safetensors_header, write_atomic
from npllm.errors import CheckpointError, CheckpointWriteError
from npllm.models.gpt2_io import CONFIG_NAME, MAX_CONFIG_BYTES, WEIGHTS_NAME, read_json
from npllm.models.layout import CONFIG_FIELDS, check_config

INDEX_NAME = "model.safetensors.index.json"
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}
BUFFER_SUFFIXES = (".rotary_emb.inv_freq",)        # RoPE's frequency table in older checkpoints: no parameter
# Raw little-endian dtypes of the safetensors dtypes npllm reads; BF16 is widened by hand (see the docstring).
RAW_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
DEFAULT_ROPE_THETA = 10000.0          # LlamaConfig's, Qwen2Config's and MistralConfig's default
DEFAULT_RMS_NORM_EPS = 1e-6           # likewise
# config.json's name of each LlamaConfig size.
_HF_NAMES = {"vocab_size": "vocab_size", "block_size": "max_position_embeddings", "n_layer": "num_hidden_layers",
             "n_head": "num_attention_heads", "n_embd": "hidden_size", "intermediate_size": "intermediate_size"}


def is_llama_config(hf: dict) -> bool:
    """Whether a config.json dict names a Llama-family architecture (its architectures or model_type)."""
    architectures = hf.get("architectures")
    if isinstance(architectures, list) and set(map(str, architectures)) & set(ARCHITECTURES):
        return True
    return hf.get("model_type") in ARCHITECTURES.values()


def _rope_theta(hf: dict, where: str) -> float:
    """RoPE's base from rope_parameters (transformers 5) or rope_theta + rope_scaling (4.x); scaled
    RoPE variants are refused naming the field."""
    theta = hf.get("rope_theta", DEFAULT_ROPE_THETA)
    for key in ("rope_parameters", "rope_scaling"):
        value = hf.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: {key} must be a JSON object or null, got {type(value).__name__}")
        kind = value.get("rope_type", value.get("type", "default"))
        if kind != "default":
            raise CheckpointError(f"{where}: unsupported {key}.rope_type {kind!r}: npllm implements the default "
                                  "(unscaled) RoPE only")
        theta = value.get("rope_theta", theta)
    check_config_bounds({"rope_theta": CONFIG_FIELDS["llama"]["rope_theta"]}, {"rope_theta": theta}, where=where)
    return float(theta)


def config_from_hf(hf: dict, where: str = CONFIG_NAME) -> dict:
    """LlamaConfig's fields (a dict) from a Llama/Qwen2/Mistral config.json dict; one CheckpointError naming
    the field for a value of the wrong type, out of bounds, or a variant npllm does not implement."""
    architectures = hf.get("architectures")
    if architectures is not None:
        if not isinstance(architectures, list) or not set(map(str, architectures)) & set(ARCHITECTURES):
            raise CheckpointError(f"{where}: unsupported architectures {architectures!r}; npllm's Llama loads "
                                  f"{', '.join(ARCHITECTURES)}")
        family = next(ARCHITECTURES[name] for name in architectures if name in ARCHITECTURES)
    elif hf.get("model_type") in ARCHITECTURES.values():
        family = hf["model_type"]
    else:
        raise CheckpointError(f"{where}: unsupported model_type {hf.get('model_type')!r}; npllm's Llama loads "
                              f"model_type {', '.join(ARCHITECTURES.values())}")
    if hf.get("model_type", family) != family:
        raise CheckpointError(f"{where}: model_type {hf['model_type']!r} contradicts architectures {architectures}")
    missing = [key for key in _HF_NAMES.values() if key not in hf]
    if missing:
        raise CheckpointError(f"{where}: missing {missing}: not a {family} config")
    sizes = {name: hf[hf_name] for name, hf_name in _HF_NAMES.items()}
    kv_heads = hf.get("num_key_value_heads")             # None (or absent) means one per query head
    sizes["n_kv_head"] = hf["num_attention_heads"] if kv_heads is None else kv_heads
    fields = {hf_name: CONFIG_FIELDS["llama"][name] for name, hf_name in _HF_NAMES.items()}
    fields["num_key_value_heads"] = CONFIG_FIELDS["llama"]["n_kv_head"]
    check_config_bounds(fields, {**hf, "num_key_value_heads": sizes["n_kv_head"]}, where=where)
    options = {"hidden_act": hf.get("hidden_act", "silu"), "rms_norm_eps": hf.get("rms_norm_eps", DEFAULT_RMS_NORM_EPS),
               "tie_word_embeddings": hf.get("tie_word_embeddings", False),
               "attention_bias": hf.get("attention_bias", False), "mlp_bias": hf.get("mlp_bias", False)}
    flags = {name: Field(bool, 0, 1) for name in ("tie_word_embeddings", "attention_bias", "mlp_bias")}
    check_config_bounds({"rms_norm_eps": CONFIG_FIELDS["llama"]["rms_norm_eps"], **flags}, options, where=where)
    if options["hidden_act"] != "silu":
        raise CheckpointError(f"{where}: unsupported hidden_act {options['hidden_act']!r}: the SwiGLU MLP uses silu")
    if options["mlp_bias"]:
        raise CheckpointError(f"{where}: unsupported mlp_bias true: npllm's SwiGLU MLP has no biases")
    if family != "qwen2" and options["attention_bias"]:
        raise CheckpointError(f"{where}: unsupported attention_bias true for {family}: it adds an o_proj bias "
                              "npllm does not have (Qwen2's q/k/v-only biases are supported)")
    head_size, remainder = divmod(sizes["n_embd"], sizes["n_head"])
    head_dim = hf.get("head_dim")
    if head_dim is not None and (remainder or head_dim != head_size):
        raise CheckpointError(f"{where}: unsupported head_dim {head_dim!r}: npllm's Llama needs head_dim = "
                              f"hidden_size / num_attention_heads = {sizes['n_embd'] / sizes['n_head']:g}")
    window = hf.get("sliding_window")
    if family == "qwen2" and hf.get("use_sliding_window", False) is not False:
        raise CheckpointError(f"{where}: unsupported use_sliding_window {hf['use_sliding_window']!r}: npllm's "
                              "attention sees every earlier position")
    if family == "mistral" and window is not None and not (isinstance(window, int) and window >= sizes["block_size"]):
        raise CheckpointError(f"{where}: unsupported sliding_window {window!r} (< max_position_embeddings "
                              f"{sizes['block_size']}): npllm's attention sees every earlier position")
    config = {**sizes, "rope_theta": _rope_theta(hf, where), "rms_norm_eps": float(options["rms_norm_eps"]),
              "tie_word_embeddings": options["tie_word_embeddings"], "attention_bias": family == "qwen2"}
    check_config("llama", config, where=where)      # divisibility, even head size, total size
    return config


def config_to_hf(config: dict, dtype, tokenizer=None) -> dict:
    """transformers 4.x config.json keys for LlamaConfig fields (Qwen2 when the model has q/k/v biases)."""
    qwen2 = config["attention_bias"]
    special = getattr(tokenizer, "special_tokens", {}) or {}
    bos = next((special[t] for t in ("<|begin_of_text|>", "<s>", "<|endoftext|>") if t in special), None)
    eos = next((special[t] for t in ("<|end_of_text|>", "</s>", "<|endoftext|>") if t in special), None)
    hf = {"architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
          "attention_bias": config["attention_bias"], "attention_dropout": 0.0, "bos_token_id": bos,
          "eos_token_id": eos, "head_dim": config["n_embd"] // config["n_head"], "hidden_act": "silu",
          "hidden_size": config["n_embd"], "initializer_range": 0.02,
          "intermediate_size": config["intermediate_size"], "max_position_embeddings": config["block_size"],
          "mlp_bias": False, "model_type": "qwen2" if qwen2 else "llama", "num_attention_heads": config["n_head"],
          "num_hidden_layers": config["n_layer"], "num_key_value_heads": config["n_kv_head"],
          "rms_norm_eps": float(config["rms_norm_eps"]), "rope_scaling": None,
          "rope_theta": float(config["rope_theta"]),
          "tie_word_embeddings": config["tie_word_embeddings"], "torch_dtype": np.dtype(dtype).name,
          "use_cache": True, "vocab_size": config["vocab_size"]}
    if qwen2:
        hf.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": config["n_layer"]})
    return hf


def read_config(path) -> dict:
    """LlamaConfig's fields of the directory ``path`` (its config.json, checked)."""
    config_path = Path(path) / CONFIG_NAME
    return config_from_hf(read_json(config_path), str(config_path))


def _shard_files(path: Path) -> dict[Path, list[str] | None]:
    """shard file → the tensor names the index gives it (None: the single model.safetensors, all of it)."""
    if (path / WEIGHTS_NAME).is_file():
        return {path / WEIGHTS_NAME: None}
    index_path = path / INDEX_NAME
    if not index_path.is_file():
        pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth") for p in path.glob(pattern))
        hint = (f"; it holds {', '.join(pickled)}: npllm never loads pickle files, convert them to safetensors"
                if pickled else "")
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME} and no {INDEX_NAME}{hint}")
    weight_map = read_json(index_path, "shard index", 64 * MAX_CONFIG_BYTES).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: weight_map must be a non-empty JSON object of tensor name → file")
    shards: dict[Path, list[str]] = {}
    for name, file_name in weight_map.items():
        # A shard is a plain file name in this directory: never a path that leaves it.
        if not isinstance(file_name, str) or Path(file_name).name != file_name or file_name in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: weight_map[{name!r}] must be a file name in {path}, got "
                                  f"{str(file_name)[:60]!r}")
        shards.setdefault(path / file_name, []).append(name)
    for shard in shards:
        if not shard.is_file():
            raise CheckpointError(f"{index_path}: shard {shard.name} is missing from {path}")
    return shards


def _tensor_table(path: Path) -> dict[str, tuple[Path, object, int]]:
    """file tensor name → (shard, TensorInfo, data start) for every parameter, from the headers only."""
    table = {}
    for shard, listed in _shard_files(path).items():
        header = read_safetensors_header(shard)
        if listed is not None:
            absent = sorted(set(listed) - set(header.tensors))
            extra = sorted(set(header.tensors) - set(listed))
            if absent or extra:
                raise CheckpointError(f"{shard}: does not hold what {INDEX_NAME} lists (missing {absent[:3]}, "
                                      f"unlisted {extra[:3]})")
        for name, info in header.tensors.items():
            if name.endswith(BUFFER_SUFFIXES):
                continue
            if info.dtype not in RAW_DTYPES:
                raise CheckpointError(f"{shard}: tensor {name} has dtype {info.dtype}; weights must be floating "
                                      "point (F32, F16, BF16 or F64)")
            if name in table:
                raise CheckpointError(f"{shard}: tensor {name} also appears in {table[name][0].name}")
            table[name] = (shard, info, header.data_start)
    return table


def is_linear(name: str, shape: tuple) -> bool:
    """Whether a param is an nn.Linear matrix: (out, in) in the file, (in, out) in npllm (the embedding is
    (V, C) in both)."""
    return len(shape) == 2 and name != "model.embed_tokens.weight"


def file_shape(name: str, shape: tuple) -> tuple:
    """The shape a param of npllm shape ``shape`` has in the file."""
    return tuple(reversed(shape)) if is_linear(name, shape) else tuple(shape)


def _read_tensor(shard: Path, info, data_start: int) -> np.ndarray:
    """One tensor's raw bytes → an ndarray in the file's shape (bfloat16 widened exactly to float32)."""
    with open(shard, "rb") as handle:
        handle.seek(data_start + info.begin)
        data = handle.read(info.end - info.begin)
    if len(data) != info.end - info.begin:
        raise CheckpointError(f"{shard}: the file changed while it was read")
    raw = np.frombuffer(data, dtype=RAW_DTYPES[info.dtype]).reshape(info.shape)
    if info.dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)   # bfloat16 = float32's top half
    return raw


def read_pretrained(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a Llama/Qwen2/Mistral directory → (LlamaConfig fields, params by name in (in, out) layout).
    config.json and the weights' headers are checked against each other before a weight is read; float64
    files stay float64, every other dtype (F32, F16, BF16) gives float32."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (a Llama checkpoint is a directory holding "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME} or {INDEX_NAME})")
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME}")
    config = read_config(path)
    table = _tensor_table(path)
    expected = check_config("llama", config)
    head = table.pop("lm_head.weight", None) if config["tie_word_embeddings"] else None
    where = f"{path}: the weights do not match {CONFIG_NAME}"
    check_tensor_shapes({name: file_shape(name, shape) for name, shape in expected.items()},
                        {name: info.shape for name, (_, info, _) in table.items()}, where=where)
    if head is not None:
        check_tensor_shapes({"lm_head.weight": (config["vocab_size"], config["n_embd"])},
                            {"lm_head.weight": head[1].shape}, where=where)
    dtype = np.float64 if all(info.dtype == "F64" for _, info, _ in table.values()) else np.float32
    params = {}
    for name, shape in expected.items():
        array = _read_tensor(*table[name])
        # np.array copies: the file's bytes are read-only, the optimizer updates params in place.
        params[name] = np.array(array.T if is_linear(name, shape) else array, dtype=dtype, order="C")
    if head is not None and not np.array_equal(_read_tensor(*head), params["model.embed_tokens.weight"]):
        raise CheckpointError(f"{path}: lm_head.weight differs from model.embed_tokens.weight, but config.json "
                              "says tie_word_embeddings true")
    return config, params


def save_pretrained(model, path, tokenizer=None) -> Path:
    """Write ``model`` (a Llama: its ``config`` and ``params``) as a Hugging Face directory (config.json +
    model.safetensors; with a BPE ``tokenizer`` its files too).  Returns the directory; a failed write is a
    CheckpointWriteError naming the file."""
    from dataclasses import asdict

    from safetensors.numpy import save

    from npllm.tokenizers import BPETokenizer
    if getattr(model, "kind", None) != "llama" or not isinstance(getattr(model, "params", None), dict):
        raise TypeError(f"model must be a Llama, got {type(model).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, BPETokenizer):
        raise TypeError(f"tokenizer must be a BPETokenizer, got {type(tokenizer).__name__}")
    path = Path(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(path, f"cannot create the directory: {exc.strerror or exc}", exc.errno) from exc
    dtype = model.params["model.embed_tokens.weight"].dtype
    config = config_to_hf(asdict(model.config), dtype, tokenizer)
    write_atomic(path / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    tensors = {name: np.ascontiguousarray(value.T if is_linear(name, value.shape) else value)
               for name, value in model.params.items()}      # nn.Linear's (out, in)
    write_atomic(path / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
