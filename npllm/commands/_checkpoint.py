"""What ``npllm generate`` and ``npllm eval`` share: load --checkpoint, then configure the process for it."""
from __future__ import annotations

from npllm.commands._args import configure_process


def open_checkpoint(args):
    """Load --checkpoint (an npllm file or --out-dir), then select --backend and BLAS threads for it
    → (checkpoint, model, tokenizer)."""
    from npllm.process import inference_blas_threads
    from npllm.training.lm import load_language_model
    checkpoint, model, tokenizer = load_language_model(args.checkpoint)
    configure_process(args.backend, blas_threads=inference_blas_threads(model))
    return checkpoint, model, tokenizer
