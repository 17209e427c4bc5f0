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
Everything else must match exactly: a missing, unexpected or mis-shaped tensor, or a config this
architecture does not implement (another activation, an inner MLP width other than 4C, a LayerNorm
epsilon other than 1e-5, scaled or cross attention variants), is a :class:`CheckpointError` saying so.

:func:`save_pretrained` writes what ``transformers`` reads: config.json with ``model_type`` "gpt2" and
``architectures`` ["GPT2LMHeadModel"], and model.safetensors with the ``transformer.`` prefix, the tied
head left out (as transformers itself saves it) and the metadata ``{"format": "pt"}``.  Writing is
deterministic, so save → load → save gives byte-identical files.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from npllm.errors import CheckpointError

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
PREFIX = "transformer."
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
LAYER_NORM_EPS = 1e-5              # what npllm's layer_norm_forward uses
GELU_TANH_NAMES = ("gelu_new", "gelu_pytorch_tanh")   # both are GELU's tanh approximation
# Options that change the computation, and the only value this implementation supports.
_FIXED_OPTIONS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                  "add_cross_attention": False, "tie_word_embeddings": True}


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the config: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def config_from_hf(hf: dict, where: str = CONFIG_NAME):
    """A :class:`GPTConfig` from GPT2Config's keys; CheckpointError for an architecture npllm lacks."""
    from npllm.models.gpt import GPTConfig

    def unsupported(what: str):
        return CheckpointError(f"{where}: unsupported GPT-2 variant: {what} (npllm implements GPT-2 as "
                               "released: GELU(tanh), MLP width 4C, LayerNorm eps 1e-5, tied head)")

    if hf.get("model_type", "gpt2") != "gpt2":
        raise unsupported(f"model_type {hf['model_type']!r}, expected 'gpt2'")
    architectures = hf.get("architectures") or ["GPT2LMHeadModel"]
    if not set(architectures) & {"GPT2LMHeadModel", "GPT2Model"}:
        raise unsupported(f"architectures {architectures}, expected GPT2LMHeadModel")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in GELU_TANH_NAMES:
        raise unsupported(f"activation_function {activation!r}")
    missing = [key for key in ("vocab_size", "n_embd", "n_layer", "n_head") if key not in hf]
    if missing or not ("n_positions" in hf or "n_ctx" in hf):
        raise CheckpointError(f"{where}: missing {missing or ['n_positions']}: not a GPT-2 config")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        raise unsupported(f"n_inner {n_inner} (the MLP width must be 4 * n_embd = {4 * hf['n_embd']})")
    if abs(float(hf.get("layer_norm_epsilon", LAYER_NORM_EPS)) - LAYER_NORM_EPS) > 1e-12:
        raise unsupported(f"layer_norm_epsilon {hf['layer_norm_epsilon']}")
    for key, value in _FIXED_OPTIONS.items():
        if hf.get(key, value) != value:
            raise unsupported(f"{key} = {hf[key]!r}")
    try:
        return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx")),
                         n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                         dropout=float(hf.get("resid_pdrop", 0.0)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None


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


def read_config(path):
    """The :class:`GPTConfig` of the GPT-2 directory ``path`` (its config.json, checked)."""
    return config_from_hf(_read_json(Path(path) / CONFIG_NAME), str(Path(path) / CONFIG_NAME))


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open
    tensors = {}
    try:
        with safe_open(path, framework="numpy") as handle:
            for name in handle.keys():
                if name.endswith(BUFFER_SUFFIXES):
                    continue                     # the causal-mask buffers: not parameters
                tensors[name.removeprefix(PREFIX)] = handle.get_tensor(name)
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({exc}); bfloat16 files need converting "
                              "to float32 first, since NumPy has no bfloat16") from None
    return tensors


def _check_directory(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (a GPT-2 checkpoint is a directory holding "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    if not (path / WEIGHTS_NAME).is_file():
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f"; it holds {', '.join(pickled)}: npllm never loads pickle files, convert them to "
                "safetensors" if pickled else "")
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME}{hint}")
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME}")


def load_pretrained(path):
    """Read a GPT-2 directory (config.json + model.safetensors) → :class:`GPT` with its weights."""
    from npllm.models.gpt import GPT
    path = Path(path)
    _check_directory(path)
    config = read_config(path)
    tensors = _read_tensors(path / WEIGHTS_NAME)
    head = tensors.pop("lm_head.weight", None)
    if head is not None and not ("wte.weight" in tensors and np.array_equal(head, tensors["wte.weight"])):
        raise CheckpointError(f"{path}: lm_head.weight differs from wte.weight; npllm's GPT ties them")
    # float64 stays float64 (gradient checks, exact round trips); anything else trains in float32.
    dtype = np.float64 if tensors and all(t.dtype == np.float64 for t in tensors.values()) else np.float32
    model = GPT(config, dtype=dtype)
    _check_names_and_shapes(tensors, model.params, path)
    model.params = {name: np.ascontiguousarray(tensors[name], dtype=dtype) for name in model.params}
    return model


def _check_names_and_shapes(tensors: dict, params: dict, path: Path) -> None:
    missing = [name for name in params if name not in tensors]
    unexpected = sorted(set(tensors) - set(params))
    wrong = [f"{name} {tensors[name].shape} (expected {params[name].shape})" for name in params
             if name in tensors and tensors[name].shape != params[name].shape]
    problems = [f"{label}: {', '.join(items[:4])}{' …' if len(items) > 4 else ''}"
                for label, items in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                     ("wrong shapes", wrong)) if items]
    if problems:
        raise CheckpointError(f"{path / WEIGHTS_NAME} does not match config.json: " + "; ".join(problems))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model, path, tokenizer=None) -> Path:
    """Write ``model`` (a GPT) as a Hugging Face GPT-2 directory; with a BPE ``tokenizer``, also its
    vocab.json + merges.txt.  Returns the directory."""
    from safetensors.numpy import save

    from npllm.models.gpt import GPT
    from npllm.tokenizers import BPETokenizer
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, BPETokenizer):
        raise TypeError(f"tokenizer must be a BPETokenizer (GPT-2's vocab.json + merges.txt), got "
                        f"{type(tokenizer).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype = model.params["wte.weight"].dtype
    config = config_to_hf(model.config, dtype, tokenizer)
    _write_atomic(path / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    tensors = {PREFIX + name: np.ascontiguousarray(value) for name, value in model.params.items()}
    _write_atomic(path / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
