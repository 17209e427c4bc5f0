"""Positional encodings.  Sinusoidal (Vaswani et al. 2017, section 3.5), interleaved:
PE[t, 2i] = sin(t / 10000^(2i/D)),  PE[t, 2i+1] = cos(t / 10000^(2i/D)).
Learned positions (GPT-2's ``wpe``) are an ordinary embedding: see embedding_forward.
"""
from __future__ import annotations

import numpy as np


def sinusoidal_positions(T, D, dtype=np.float32):
    """Fixed sinusoidal encodings for positions 0..T−1 → (T, D); no parameters, so no backward."""
    for name, value in (("T", T), ("D", D)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    positions = np.arange(T, dtype=np.float64)[:, None]               # (T, 1)
    two_i = np.arange(0, D, 2, dtype=np.float64)                      # (ceil(D/2),)
    angles = positions / np.power(10000.0, two_i / D)                 # (T, ceil(D/2))
    pe = np.empty((T, D), dtype=np.float64)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : D // 2])
    return pe.astype(dtype)
