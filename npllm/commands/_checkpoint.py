"""What ``npllm generate`` and ``npllm eval`` share: load --checkpoint, then configure the process for it."""
from __future__ import annotations

from npllm.errors import UsageError


def open_checkpoint(args):
    """Load --checkpoint (an npllm file or --out-dir), then select --backend and BLAS threads for it
    → (checkpoint, model, tokenizer)."""
    from npllm.process import configure, inference_blas_threads
    from npllm.training.lm import load_language_model
    checkpoint, model, tokenizer = load_language_model(args.checkpoint)
    try:
        configure(args.backend, inference_blas_threads(model))
    except (ValueError, RuntimeError) as exc:
        raise UsageError("--backend", str(exc)) from None
    return checkpoint, model, tokenizer
