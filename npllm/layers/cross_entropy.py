"""Cross-entropy of logits against integer targets: loss = mean over kept targets of −log softmax(logits)[t].

Conventions (those of PyTorch's ``F.cross_entropy``): logits are unnormalised, targets equal to
``ignore_index`` are skipped and the mean is over the targets that remain.  If every target is ignored
the loss is 0 with zero gradient (PyTorch gives NaN; a training step that happens to be all padding
should not poison the run).  The log-sum-exp is computed after subtracting the row max, so logits of
±1e4 give a finite loss.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_ids
from npllm.layers.softmax import log_softmax


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray     # (N, V) softmax of the logits, rows flattened
    targets: np.ndarray   # (N,) int
    keep: np.ndarray      # (N,) bool, False where target == ignore_index
    n_kept: int
    logits_shape: tuple


def check_cross_entropy_inputs(logits, targets, ignore_index):
    """Validate logits (..., V), integer targets (...) and ignore_index; kernels share these checks."""
    check_float("logits", logits)
    if logits.ndim < 1:
        raise ValueError("logits must have shape (..., V), got a 0-d array")
    if not isinstance(targets, np.ndarray):
        raise TypeError(f"targets must be a numpy.ndarray of integers, got {type(targets).__name__}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {logits.shape[:-1]} (logits' shape without V), got {targets.shape}")
    if not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    check_ids("targets", targets, logits.shape[-1], allow=int(ignore_index))


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean cross-entropy.  logits (..., V), targets int (...) → scalar loss (logits' dtype), cache."""
    check_cross_entropy_inputs(logits, targets, ignore_index)
    V = logits.shape[-1]
    flat_logits = logits.reshape(-1, V)         # (N, V)
    flat_targets = targets.reshape(-1)          # (N,)
    keep = flat_targets != ignore_index
    n_kept = int(keep.sum())
    logp = log_softmax(flat_logits, axis=-1)    # (N, V)
    safe_targets = np.where(keep, flat_targets, 0)
    picked = logp[np.arange(flat_targets.size), safe_targets]
    loss = -picked[keep].sum() / max(n_kept, 1)
    cache = CrossEntropyCache(np.exp(logp), flat_targets, keep, n_kept, logits.shape)
    return logits.dtype.type(loss), cache


def cross_entropy_backward(dloss, cache):
    """dloss scalar → dlogits (..., V) = dloss · (softmax − onehot(target)) / n_kept on kept rows."""
    check_cache("cache", cache, CrossEntropyCache)
    probs, targets, keep, n_kept, shape = cache
    dloss = 1.0 if dloss is None else dloss
    dloss = np.asarray(dloss, dtype=probs.dtype)
    if dloss.size != 1:
        raise ValueError(f"dloss must be a scalar (the loss is a scalar), got shape {dloss.shape}")
    dlogits = probs.copy()
    rows = np.nonzero(keep)[0]
    dlogits[rows, targets[rows]] -= 1.0
    dlogits *= (keep[:, None] * (dloss.reshape(()) / max(n_kept, 1))).astype(probs.dtype)
    return dlogits.reshape(shape)
