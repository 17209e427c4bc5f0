"""Loss and perplexity of a language model on held-out text; ``npllm eval``.

Loss is the mean cross-entropy in nats per token; perplexity = exp(loss), the effective number of
equally likely choices the model hesitates between (a uniform guess over V tokens has perplexity V).
A model that ignores context entirely can at best reach the unigram entropy of the corpus
(:func:`unigram_entropy`), the baseline a trained model must beat.
"""
from __future__ import annotations


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
