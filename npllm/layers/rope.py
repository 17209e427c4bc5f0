"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", eq. 34), as Llama applies it to q and k.

Each head vector of size HS is split into HS/2 pairs, and pair i at position p is rotated by the angle
p · θ_i with θ_i = 1 / theta^(2i / HS) (theta = 10000 in the paper and Llama):

    (a, b) ↦ (a cos − b sin,  a sin + b cos)

Then q_m · k_n depends on m and n only through m − n, since rotations compose: R(m)ᵀ R(n) = R(n − m).
Which coordinates form a pair differs between implementations, and checkpoints follow one of them:

* ``interleaved=False`` (default) pairs (i, i + HS/2): Hugging Face's "rotate half",
  ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(−x2, x1)``,
  ``inv_freq = 1 / theta ** (arange(0, HS, 2) / HS)`` and cos/sin of ``positions ⊗ inv_freq``
  concatenated twice (``LlamaRotaryEmbedding`` / ``apply_rotary_pos_emb``);
* ``interleaved=True`` pairs (2i, 2i + 1): Meta's original Llama code and Stanford CS336, which read
  each pair as a complex number and multiply by e^{i p θ_i}.

Positions are integers, (T,) or one row per batch element (B, T), and may start anywhere (a KV cache's
offset) and skip (packed or padded sequences).  Angles are computed in x's dtype, so float64 inputs get
float64 angles.  A rotation is orthogonal, so the backward is the rotation by −angle (its transpose).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, upstream_shaped


class RopeCache(NamedTuple):
    cos: np.ndarray     # (T, HS/2) or (B, 1, T, HS/2): cos(p θ_i), broadcast over heads
    sin: np.ndarray     # same shape: sin(p θ_i)
    interleaved: bool
    shape: tuple        # (B, NH, T, HS) of x


def check_rope_inputs(x, positions, theta, interleaved, name="x") -> None:
    """Validate x (B, NH, T, HS) with HS even, integer positions (T,) or (B, T), theta > 0, a bool
    (``name``: what errors call x; rope_attention checks q and k with this)."""
    check_float(name, x, 4, "(B, NH, T, HS)")
    B, NH, T, HS = x.shape
    if HS % 2:
        raise ValueError(f"{name}'s last dimension (HS) must be even to form rotation pairs, got {HS} in shape {x.shape}")
    if not isinstance(positions, np.ndarray):
        raise TypeError(f"positions must be a numpy.ndarray of integers, got {type(positions).__name__}")
    if not np.issubdtype(positions.dtype, np.integer):
        raise TypeError(f"positions must have an integer dtype, got {positions.dtype}")
    if positions.shape not in ((T,), (B, T)):
        raise ValueError(f"positions must have shape (T,) = ({T},) or (B, T) = ({B}, {T}), got {positions.shape}")
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or not (np.isfinite(theta) and theta > 0):
        raise ValueError(f"theta must be a finite number > 0, got {theta!r}")
    if not isinstance(interleaved, (bool, np.bool_)):
        raise TypeError(f"interleaved must be a bool, got {type(interleaved).__name__}")


def rope_angles(positions, HS, theta, dtype):
    """positions ⊗ inv_freq in ``dtype``: positions (T,) or (B, T) → angles (T, HS/2) or (B, 1, T, HS/2)."""
    real = np.dtype(dtype).type
    inv_freq = real(1) / real(theta) ** (np.arange(0, HS, 2).astype(dtype) / real(HS))   # (HS/2,)
    angles = positions.astype(dtype)[..., None] * inv_freq           # (T, HS/2) or (B, T, HS/2)
    return angles if positions.ndim == 1 else angles[:, None]        # (B, 1, T, HS/2): same for every head


def _rotate(x, cos, sin, interleaved):
    """Rotate each pair (a, b) of x's last axis to (a cos − b sin, a sin + b cos)."""
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]                            # (B, NH, T, HS/2) each
        return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)
    # Rotate half: x * cat(cos, cos) + cat(−x2, x1) * cat(sin, sin), written one half at a time.
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def rope_forward(x, positions, theta=10000.0, interleaved=False):
    """Rotate q or k by their positions.  x (B, NH, T, HS), positions int (T,) or (B, T) → y (B, NH, T, HS),
    cache."""
    check_rope_inputs(x, positions, theta, interleaved)
    angles = rope_angles(positions, x.shape[-1], theta, x.dtype)
    cos, sin = np.cos(angles), np.sin(angles)
    return _rotate(x, cos, sin, bool(interleaved)), RopeCache(cos, sin, bool(interleaved), x.shape)


def rope_backward(dy, cache):
    """dy (B, NH, T, HS) → dx (B, NH, T, HS): the transposed rotation, i.e. by −angle."""
    check_cache("cache", cache, RopeCache)
    dy = upstream_shaped("dy", dy, cache.shape, cache.cos.dtype)
    return _rotate(dy, cache.cos, -cache.sin, cache.interleaved)
