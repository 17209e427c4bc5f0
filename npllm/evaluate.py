"""Loss and perplexity of a language model on held-out text; ``npllm eval``.

Loss is the mean cross-entropy in nats per token; perplexity = exp(loss), the effective number of
equally likely choices the model hesitates between (a uniform guess over V tokens has perplexity V).
A model that ignores context entirely can at best reach the unigram entropy of the corpus
(:func:`unigram_entropy`), the baseline a trained model must beat.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np

from npllm.backend import ops
from npllm.data import get_batch, sequential_batches


def batch_loss(model, x, y) -> float:
    """Mean cross-entropy of model on inputs x int (B, T) with next-token targets y int (B, T)."""
    logits, _ = model.forward(x)
    loss, _ = ops.cross_entropy_forward(logits, y)
    return float(loss)


def estimate_loss(model, data, batch_size: int, block_size: int, n_batches: int, seed: int) -> float:
    """Mean loss over n_batches random windows of data (N,) drawn from their own generator(seed)."""
    # A fresh generator each call: every evaluation sees the same windows (losses compare across steps)
    # and the training batches' generator is never touched.
    rng = np.random.default_rng(seed)
    losses = [batch_loss(model, *get_batch(data, batch_size, block_size, rng)) for _ in range(n_batches)]
    return float(np.mean(losses))


def corpus_loss(model, data, batch_size: int, block_size: int, max_batches: int | None = None):
    """(mean loss per token, tokens scored) over data (N,) in consecutive non-overlapping windows."""
    total, count = 0.0, 0
    for i, (x, y) in enumerate(sequential_batches(data, batch_size, block_size)):
        if max_batches is not None and i >= max_batches:
            break
        total += batch_loss(model, x, y) * y.size
        count += y.size
    return total / count, count


def unigram_entropy(ids, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies in ids (N,): the loss of the best context-free model."""
    counts = np.bincount(np.asarray(ids), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def perplexity(loss: float) -> float:
    """exp(loss), inf when that overflows."""
    return math.exp(loss) if loss < 700 else math.inf


def run_from_args(args) -> int:
    """``npllm eval``: print the loss and perplexity of --checkpoint on --data (default: its val split)."""
    from npllm.errors import UsageError
    from npllm.train import blas_threads, corpus_ids, open_checkpoint

    checkpoint, model, tokenizer = open_checkpoint(args)
    if args.data is not None:
        ids = corpus_ids(args.data, tokenizer, "--data")
        what = args.data
    else:
        source = checkpoint.meta.get("extra", {}).get("data", {}).get("source")
        if source is None:
            raise UsageError("--data", "the checkpoint does not record its training data; pass --data FILE")
        _, ids = corpus_ids(None if source == "builtin" else source, tokenizer, "--data", split=True)
        what = "validation split of " + ("the built-in corpus" if source == "builtin" else source)
    block_size = model.config.block_size
    if len(ids) < block_size + 1:
        raise UsageError("--data", f"{what} has {len(ids)} tokens, fewer than one block of "
                         f"{block_size + 1} (the model's block_size + 1)")
    with blas_threads(model):
        loss, n_tokens = corpus_loss(model, ids, args.batch_size, block_size, args.max_batches)
    print(f"{what}: {n_tokens} tokens, loss {loss:.4f} nats/token, perplexity {perplexity(loss):.2f}",
          file=sys.stderr)
    print(json.dumps({"loss": loss, "perplexity": perplexity(loss), "tokens": n_tokens}))
    return 0
