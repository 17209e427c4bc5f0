"""Checks shared by the language models: token-id batches (B, T) with a clear error for each mistake."""
from __future__ import annotations

import numpy as np


def check_token_ids(idx, vocab_size: int, max_len: int | None) -> tuple[int, int]:
    """Require int ids of shape (B, T), 1 <= T <= max_len (None: any), values in [0, vocab_size); → (B, T)."""
    if not isinstance(idx, np.ndarray):
        raise TypeError(f"idx must be a numpy.ndarray of token ids, got {type(idx).__name__}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"idx must have an integer dtype (token ids), got {idx.dtype}")
    if idx.ndim != 2:
        raise ValueError(f"idx must have shape (B, T), got {idx.shape}")
    B, T = idx.shape
    if B < 1 or T < 1:
        raise ValueError(f"idx must hold at least one token per row, got shape {idx.shape}")
    if max_len is not None and T > max_len:
        raise ValueError(f"idx has T = {T} positions, more than block_size = {max_len} (crop the context)")
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"idx must lie in [0, {vocab_size}) (the vocabulary), got a value of "
                         f"{low if low < 0 else high}")
    return B, T
