"""``npllm train --init-from PATH``: the checks before fine-tuning and the Hugging Face export after it.

Fine-tuning keeps the loaded model's architecture and tokenizer (train_setup.init_from loads them), so a
flag that asks for a different one is a mistake, reported before any work starts: ``--n-layer 6`` on a
12-layer GPT-2 is a UsageError naming the flag and the loaded value, not a silent choice of one of them.
Only flags the user gave count (:mod:`npllm.flags`).  After training, a GPT is also written as a
Hugging Face GPT-2 directory, ``<out-dir>/hf/`` (config.json, model.safetensors with the metadata
``{"format": "pt"}``, and the BPE tokenizer's vocab.json + merges.txt), which ``transformers`` loads with
``GPT2LMHeadModel.from_pretrained`` and npllm with ``GPT.from_pretrained``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from npllm.errors import CheckpointError, UsageError
from npllm.flags import given

HF_DIR = "hf"
# The architecture flags of each model kind: flag dest → the config field it sets.
_ARCHITECTURE = {"gpt": {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd"},
                 "rnn": {"n_layer": "n_layer", "hidden_size": "hidden_size"}}


def loaded_architecture(path) -> tuple[str, dict, str]:
    """(model kind, config dict, tokenizer type) of a GPT-2 directory or an npllm checkpoint at path."""
    from dataclasses import asdict

    from npllm.checkpoint import load_checkpoint
    from npllm.models.gpt2_io import CONFIG_NAME, read_config
    path = Path(path)
    if (path / CONFIG_NAME).is_file():             # the test train_setup.init_from uses too
        return "gpt", asdict(read_config(path)), "bpe"
    meta = load_checkpoint(path).meta
    return str(meta.get("model_type")), dict(meta.get("model_config") or {}), str((meta.get("tokenizer") or {}).get("type"))


def check_flags(args) -> None:
    """UsageError for each given flag that contradicts the --init-from model (before anything loads)."""
    try:
        kind, config, tokenizer = loaded_architecture(args.init_from)
    except (CheckpointError, OSError) as exc:
        raise UsageError("--init-from", str(exc)) from None
    what = f"--init-from {args.init_from} holds a {kind} model"
    if given(args, "model") and args.model != kind:
        raise UsageError("--model", f"{what}; fine-tuning keeps it, got --model {args.model}")
    for dest, field in _ARCHITECTURE["gpt" if kind == "gpt" else "rnn"].items():
        if given(args, dest) and getattr(args, dest) != config.get(field):
            flag = "--" + dest.replace("_", "-")
            raise UsageError(flag, f"{what} with {field} = {config.get(field)}; fine-tuning keeps the loaded "
                                   f"architecture, got {flag} {getattr(args, dest)} (drop the flag)")
    if given(args, "tokenizer") and args.tokenizer != tokenizer:
        raise UsageError("--tokenizer", f"{what} with a {tokenizer} tokenizer; fine-tuning keeps it, got "
                                        f"--tokenizer {args.tokenizer}")
    if given(args, "vocab_size") and args.vocab_size != config.get("vocab_size"):
        raise UsageError("--vocab-size", f"{what} whose vocabulary has {config.get('vocab_size')} tokens; "
                                         f"fine-tuning keeps it, got --vocab-size {args.vocab_size}")


def export_hf(model, tokenizer, out_dir) -> Path | None:
    """Write a fine-tuned GPT to <out_dir>/hf in Hugging Face's layout; None for other model kinds."""
    from npllm.models.gpt2_io import save_pretrained
    from npllm.tokenizers import BPETokenizer
    if model.kind != "gpt":
        return None
    if not isinstance(tokenizer, BPETokenizer):
        print(f"note: {HF_DIR}/ holds the weights only: a {type(tokenizer).__name__} has no GPT-2 "
              "vocab.json/merges.txt form", file=sys.stderr)
        tokenizer = None
    return save_pretrained(model, Path(out_dir) / HF_DIR, tokenizer)
