"""RoPE fused into flash attention (Numba CPU); reference: ``npllm.layers.rope_attention``.

    out = softmax(R(p) q · (R(p) k)ᵀ / √d) v          (Su et al. 2021; the attention of attention.py)

The reference rotates q and k into two new arrays, attends, and rotates dq and dk back with two more.
Here the flash loops of ``_flash.py`` do the rotation as they copy each q and k tile into their scratch
(they copy every tile anyway, for BLAS), from cos/sin tables of (1 or B, T, d/2) entries computed once
per call with the reference's ``rope_angles``, so the angles are the reference's to the last bit; the
backward recomputes the rotated tiles the same way and rotates dQ and dK back (R(p)ᵀ, the rotation by
−angle) as it finishes their rows. No rotated copy of q or k exists, and grouped-query heads work as in
``attention.py``.

Non-finite q, k or v (or dout) go to the reference, for its NaN positions (``attention.py`` says why).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers import rope_attention as reference
from npllm.layers._validate import check_cache, upstream
from npllm.layers.rope import rope_angles
from npllm_kernels.cpu._finite import all_finite
from npllm_kernels.cpu.attention import (ReferenceAttentionCache, RopeTables, _heads, attend_heads,
                                         attend_heads_backward, flash_inputs)


class FlashRopeAttentionCache(NamedTuple):
    attention: object        # FlashAttentionCache over the unrotated q and k, with its RopeTables
    positions: np.ndarray    # (T,) or (B, T), kept to recompute the reference if dout is not finite
    theta: float


def _tables(positions, d, theta, interleaved, dtype):
    """RopeTables with cos and sin (1 or B, T, d/2) of the reference's angles."""
    angles = rope_angles(positions, d, theta, dtype)                  # (T, d/2) or (B, 1, T, d/2)
    angles = angles.reshape((-1,) + angles.shape[-2:])                # (1 or B, T, d/2)
    return RopeTables(np.ascontiguousarray(np.cos(angles)), np.ascontiguousarray(np.sin(angles)), bool(interleaved))


def rope_attention_forward(q, k, v, positions, theta=10000.0, interleaved=False, causal=True, mask=None):
    """attention(rope(q), rope(k), v).  q (B, H, T, d), k (B, Hkv, T, d), v (B, Hkv, T, dv), positions int
    (T,) or (B, T) → out (B, H, T, dv), cache."""
    reference.check_rope_attention_inputs(q, k, v, positions, theta, interleaved, causal, mask)
    if not all_finite(q, k, v):
        out, cache = reference.rope_attention_forward(q, k, v, positions, theta, interleaved, causal, mask)
        return out, ReferenceAttentionCache(cache)
    rope = _tables(positions, q.shape[-1], theta, interleaved, q.dtype)
    out, attention = attend_heads(q, k, v, mask, causal, rope)
    return out, FlashRopeAttentionCache(attention, positions.copy(), float(theta))


def rope_attention_backward(dout, cache):
    """dout (B, H, T, dv) → dq (B, H, T, d), dk (B, Hkv, T, d), dv (B, Hkv, T, dv)."""
    if isinstance(cache, ReferenceAttentionCache):            # the forward's inputs were not finite
        return reference.rope_attention_backward(dout, cache.reference)
    check_cache("cache", cache, FlashRopeAttentionCache)
    attention = cache.attention
    dout = upstream("dout", dout, _heads(attention.out, attention.n_head, attention.shape[1]))
    if not all_finite(dout):
        q, k, v, mask = flash_inputs(attention)
        _, reference_cache = reference.rope_attention_forward(q, k, v, cache.positions, cache.theta,
                                                              attention.rope.interleaved, attention.causal, mask)
        return reference.rope_attention_backward(dout, reference_cache)
    return attend_heads_backward(dout, attention)
