"""Hugging Face GPT-2 checkpoint directories ↔ :class:`~npllm.models.GPT`, from local disk only.

A directory holds ``config.json`` (GPT2Config's keys) and ``model.safetensors`` (no pickle files, ever),
plus the tokenizer's ``vocab.json`` + ``merges.txt``.  The GPT's params already use GPT-2's names and
layouts — GPT-2's ``Conv1D`` stores weights as (in, out), exactly as ``x @ W`` here — so loading is
name for name, with these differences handled:

* names may carry the ``transformer.`` prefix (what ``GPT2LMHeadModel.save_pretrained`` writes) or not
  (OpenAI's released ``gpt2`` files, converted from ``GPT2Model``);
* ``h.{i}.attn.bias`` and ``h.{i}.attn.masked_bias`` are buffers (the causal mask), not parameters:
  ignored;
* ``lm_head.weight`` is tied to ``wte.weight``: accepted when equal to it or absent.
Everything else must match exactly: a missing, unexpected, mis-shaped or non-float tensor, a config
value of the wrong type or out of bounds, or a config this architecture does not implement (another
activation, an inner MLP width other than 4C, a LayerNorm epsilon other than 1e-5, scaled or cross
attention variants), is a :class:`CheckpointError` naming the file and the field.  All of it is checked
from config.json and the safetensors *header* (npllm.models.layout) before a weight is read.

This module works on config dicts and arrays and never imports the model: :meth:`GPT.from_pretrained`
calls :func:`read_pretrained` and builds the GPT; :func:`save_pretrained` takes any model whose ``kind``
is "gpt" (its ``config`` and ``params``).

:func:`save_pretrained` writes what ``transformers`` reads: config.json with ``model_type`` "gpt2" and
``architectures`` ["GPT2LMHeadModel"], and model.safetensors with the ``transformer.`` prefix, the tied
head left out (as transformers itself saves it) and the metadata ``{"format": "pt"}``, each file
through :func:`npllm.checkpoint.write_atomic`.  Writing is deterministic, so save → load → save gives
byte-identical files.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from npllm.checkpoint import Field, check_config_bounds, check_tensor_shapes, read_safetensors_header, write_atomic
from npllm.errors import CheckpointError, CheckpointWriteError
from npllm.models.layout import CONFIG_FIELDS, check_config, param_shapes

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
PREFIX = "transformer."
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
LAYER_NORM_EPS = 1e-5              # what npllm's layer_norm_forward uses
GELU_TANH_NAMES = ("gelu_new", "gelu_pytorch_tanh")   # both are GELU's tanh approximation
MAX_CONFIG_BYTES = 2**20           # a GPT-2 config.json is under 1 KiB
FLOAT_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
# Options that change the computation, and the only value this implementation supports.
_FIXED_OPTIONS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                  "add_cross_attention": False, "tie_word_embeddings": True}
# config.json's name of each GPTConfig size (block_size is n_positions, or n_ctx in old files).
_HF_NAMES = {"vocab_size": "vocab_size", "n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd"}


@dataclass
class GPT2Config:
    """The sizes config.json gives, under GPTConfig's field names: ``GPTConfig(**asdict(this))``."""
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0


def is_hf_directory(path) -> bool:
    """Whether ``path`` is meant as a Hugging Face directory: a directory holding config.json or
    model.safetensors (read_pretrained then says which of the two is missing)."""
    path = Path(path)
    return path.is_dir() and ((path / CONFIG_NAME).exists() or (path / WEIGHTS_NAME).exists())


def read_json(path: Path, what: str = "config", limit: int = MAX_CONFIG_BYTES) -> dict:
    """A small JSON object file (config.json, a shard index); CheckpointError naming it otherwise."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(f"{path}: {size:,} bytes, more than a {what} holds")
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a JSON {what}: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def config_from_hf(hf: dict, where: str = CONFIG_NAME) -> GPT2Config:
    """A :class:`GPT2Config` from GPT2Config's keys; CheckpointError naming the field for a value of the
    wrong type or out of bounds, or for an architecture npllm lacks."""

    def unsupported(what: str):
        return CheckpointError(f"{where}: unsupported GPT-2 variant: {what} (npllm implements GPT-2 as "
                               "released: GELU(tanh), MLP width 4C, LayerNorm eps 1e-5, tied head)")

    if hf.get("model_type", "gpt2") != "gpt2":
        raise unsupported(f"model_type {hf['model_type']!r}, expected 'gpt2'")
    architectures = hf.get("architectures") or ["GPT2LMHeadModel"]
    if not isinstance(architectures, list) or not set(map(str, architectures)) & {"GPT2LMHeadModel", "GPT2Model"}:
        raise unsupported(f"architectures {architectures}, expected GPT2LMHeadModel")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in GELU_TANH_NAMES:
        raise unsupported(f"activation_function {activation!r}")
    missing = [key for key in _HF_NAMES.values() if key not in hf]
    if missing or not ("n_positions" in hf or "n_ctx" in hf):
        raise CheckpointError(f"{where}: missing {missing or ['n_positions']}: not a GPT-2 config")
    positions = "n_positions" if "n_positions" in hf else "n_ctx"
    fields = {**{hf_name: CONFIG_FIELDS["gpt"][name] for name, hf_name in _HF_NAMES.items()},
              positions: CONFIG_FIELDS["gpt"]["block_size"]}
    check_config_bounds(fields, hf, where=where)
    dropout = hf.get("resid_pdrop", 0.0)
    check_config_bounds({"resid_pdrop": CONFIG_FIELDS["gpt"]["dropout"]}, {"resid_pdrop": dropout}, where=where)
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        raise unsupported(f"n_inner {n_inner!r} (the MLP width must be 4 * n_embd = {4 * hf['n_embd']})")
    epsilon = hf.get("layer_norm_epsilon", LAYER_NORM_EPS)
    check_config_bounds({"layer_norm_epsilon": Field(float, 0.0, 1.0)}, {"layer_norm_epsilon": epsilon}, where=where)
    if abs(epsilon - LAYER_NORM_EPS) > 1e-12:
        raise unsupported(f"layer_norm_epsilon {epsilon}")
    for key, value in _FIXED_OPTIONS.items():
        if hf.get(key, value) != value:
            raise unsupported(f"{key} = {hf[key]!r}")
    config = GPT2Config(vocab_size=hf["vocab_size"], block_size=hf[positions], n_layer=hf["n_layer"],
                        n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=float(dropout))
    check_config("gpt", asdict(config), where=where)     # n_embd divisible by n_head, total size
    return config


def config_to_hf(config, dtype, tokenizer=None) -> dict:
    """GPT2Config's keys for a GPTConfig (sorted when written, so the file is deterministic)."""
    end = getattr(tokenizer, "special_tokens", {}).get("<|endoftext|>")   # GPT-2's bos = eos token
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.0,
            "bos_token_id": end, "embd_pdrop": config.dropout, "eos_token_id": end, "initializer_range": 0.02,
            "layer_norm_epsilon": LAYER_NORM_EPS, "model_type": "gpt2", "n_ctx": config.block_size,
            "n_embd": config.n_embd, "n_head": config.n_head, "n_inner": None, "n_layer": config.n_layer,
            "n_positions": config.block_size, "reorder_and_upcast_attn": False,
            "resid_pdrop": config.dropout, "scale_attn_by_inverse_layer_idx": False,
            "scale_attn_weights": True, "tie_word_embeddings": True, "torch_dtype": np.dtype(dtype).name,
            "use_cache": True, "vocab_size": config.vocab_size}


def read_config(path) -> GPT2Config:
    """The sizes of the GPT-2 directory ``path`` (its config.json, checked), as a :class:`GPT2Config`."""
    config_path = Path(path) / CONFIG_NAME
    return config_from_hf(read_json(config_path), str(config_path))


def _check_directory(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (a GPT-2 checkpoint is a directory holding "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    if not (path / WEIGHTS_NAME).is_file():
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        if pickled:
            raise CheckpointError(f"{path}: no {WEIGHTS_NAME}; it holds {', '.join(pickled)}: npllm never "
                                  "loads pickle files, convert them to safetensors")
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME} (a GPT-2 directory holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    if not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME}")


def _weight_names(weights: Path) -> dict[str, tuple[str, tuple]]:
    """param name (prefix dropped, buffers left out) → (file name, shape), dtypes checked, from the header."""
    header = read_safetensors_header(weights)
    names = {}
    for file_name, info in header.tensors.items():
        if file_name.endswith(BUFFER_SUFFIXES):
            continue                     # the causal-mask buffers: not parameters
        name = file_name.removeprefix(PREFIX)
        if name in names:
            raise CheckpointError(f"{weights}: tensor {name} appears twice (with and without {PREFIX!r})")
        if info.dtype not in FLOAT_DTYPES:
            hint = (": NumPy has no bfloat16, convert the file to float32 first" if info.dtype == "BF16"
                    else "; weights must be floating point (F16, F32 or F64)")
            raise CheckpointError(f"{weights}: tensor {file_name} has dtype {info.dtype}{hint}")
        names[name] = (file_name, info.shape)
    return names


def read_pretrained(path) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    """Read a GPT-2 directory → (its sizes, params by npllm name).  config.json and the weights' header
    are checked against each other before a weight is read.  float64 files stay float64 (gradient
    checks, exact round trips); float16/32 give float32."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    _check_directory(path)
    config = read_config(path)
    weights = path / WEIGHTS_NAME
    names = _weight_names(weights)
    expected = param_shapes("gpt", asdict(config))
    head = names.pop("lm_head.weight", None)
    if head is not None:
        expected_head = expected["wte.weight"]
        check_tensor_shapes({"lm_head.weight": expected_head}, {"lm_head.weight": head[1]},
                            where=f"{weights} does not match {CONFIG_NAME}")
    check_tensor_shapes(expected, {name: shape for name, (_, shape) in names.items()},
                        where=f"{weights} does not match {CONFIG_NAME}")
    try:
        with safe_open(weights, framework="numpy") as handle:
            tensors = {name: handle.get_tensor(file_name) for name, (file_name, _) in names.items()}
            head_tensor = handle.get_tensor(head[0]) if head is not None else None
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read the weights ({exc})") from None
    if head_tensor is not None and not np.array_equal(head_tensor, tensors["wte.weight"]):
        raise CheckpointError(f"{path}: lm_head.weight differs from wte.weight; npllm's GPT ties them")
    dtype = np.float64 if all(t.dtype == np.float64 for t in tensors.values()) else np.float32
    return config, {name: np.ascontiguousarray(tensors[name], dtype=dtype) for name in expected}


def save_pretrained(model, path, tokenizer=None) -> Path:
    """Write ``model`` (a GPT: its ``config`` and ``params``) as a Hugging Face GPT-2 directory; with a
    BPE ``tokenizer``, also its vocab.json + merges.txt.  Returns the directory.  A failed write is a
    CheckpointWriteError naming the file."""
    from safetensors.numpy import save

    from npllm.tokenizers import BPETokenizer
    if getattr(model, "kind", None) != "gpt" or not isinstance(getattr(model, "params", None), dict):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, BPETokenizer):
        raise TypeError(f"tokenizer must be a BPETokenizer (GPT-2's vocab.json + merges.txt), got "
                        f"{type(tokenizer).__name__}")
    path = Path(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(path, f"cannot create the directory: {exc.strerror or exc}", exc.errno) from exc
    dtype = model.params["wte.weight"].dtype
    config = config_to_hf(model.config, dtype, tokenizer)
    write_atomic(path / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    tensors = {PREFIX + name: np.ascontiguousarray(value) for name, value in model.params.items()}
    write_atomic(path / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
