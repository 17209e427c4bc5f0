"""What ``npllm generate`` and ``npllm eval`` share: load --checkpoint, then configure the process for it."""
from __future__ import annotations

from npllm.commands._args import configure_process
from npllm.errors import UsageError


def open_checkpoint(args):
    """Load --checkpoint (an npllm file or --out-dir, or a Hugging Face GPT-2 or Llama-family directory),
    then select --backend and BLAS threads for it → (checkpoint, model, tokenizer).  A Hugging Face
    directory gives a checkpoint with empty metadata (it records no training data)."""
    from npllm.checkpoint import Checkpoint
    from npllm.models import load_pretrained
    from npllm.models.gpt2_io import is_hf_directory
    from npllm.process import inference_blas_threads
    from npllm.tokenizers import BPETokenizer
    from npllm.training.lm import load_language_model
    if is_hf_directory(args.checkpoint):
        try:
            model = load_pretrained(args.checkpoint)
            tokenizer = BPETokenizer.from_pretrained(args.checkpoint)
        except OSError as exc:                      # a missing tokenizer file (CheckpointErrors pass through)
            raise UsageError("--checkpoint", str(exc)) from None
        checkpoint = Checkpoint({}, {}, {})
    else:
        checkpoint, model, tokenizer = load_language_model(args.checkpoint)
    configure_process(args.backend, blas_threads=inference_blas_threads(model))
    return checkpoint, model, tokenizer
