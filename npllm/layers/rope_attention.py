"""RoPE then attention, as one op: ``rope_attention_forward(q, k, v, positions, ...)`` rotates q and k by
their positions (``rope``) and attends (``scaled_dot_product_attention``, grouped-query heads allowed):

    out = softmax(R(p) q · (R(p) k)ᵀ / √d) v,         R(p) the rotation of npllm.layers.rope

It is written here as the composition of the two reference ops, with the backward chained through
both (dq = R(p)ᵀ dq_rotated, and so for k).  It exists as an op of its own so that a backend can fuse
the rotation into its attention loops: the numba kernel rotates each q and k tile as it copies it into
the flash loops' scratch and rotates the gradients back as it writes them, so no rotated copy of q or k
(two activation-sized arrays a layer, and two more for their gradients) is ever made.

Contract: q (B, H, T, d), k (B, Hkv, T, d) with H % Hkv == 0, v (B, Hkv, T, dv), d even; positions int
(T,) or (B, T), shared by q and k (self-attention: the queries are the keys' positions); theta,
interleaved as ``rope_forward``; causal (default True: this is a decoder's op) and mask as
``scaled_dot_product_attention_forward``.  Decoding with a key/value cache (queries after cached keys
that are already rotated) is not this op's case: there, rope the new q and k and call the attention.
"""
from __future__ import annotations

from typing import NamedTuple

from npllm.layers._validate import check_cache
from npllm.layers.attention import (check_attention_inputs, scaled_dot_product_attention_backward,
                                    scaled_dot_product_attention_forward)
from npllm.layers.rope import check_rope_inputs, rope_backward, rope_forward


class RopeAttentionCache(NamedTuple):
    q_rope: object      # RopeCache of q
    k_rope: object      # RopeCache of k
    attention: object   # AttentionCache of the attention over the rotated q and k


def check_rope_attention_inputs(q, k, v, positions, theta, interleaved, causal, mask) -> None:
    """Every check of the composition, in its order (q's rotation, k's, then the attention's), before any
    work; kernels replacing this op call it so that their errors are the reference's."""
    check_rope_inputs(q, positions, theta, interleaved, "q")
    check_rope_inputs(k, positions, theta, interleaved, "k")
    check_attention_inputs(q, k, v, mask, causal, grouped=True)


def rope_attention_forward(q, k, v, positions, theta=10000.0, interleaved=False, causal=True, mask=None):
    """attention(rope(q), rope(k), v).  q (B, H, T, d), k (B, Hkv, T, d), v (B, Hkv, T, dv), positions int
    (T,) or (B, T) → out (B, H, T, dv), cache."""
    check_rope_attention_inputs(q, k, v, positions, theta, interleaved, causal, mask)
    q_rotated, q_rope = rope_forward(q, positions, theta, interleaved)          # (B, H, T, d)
    k_rotated, k_rope = rope_forward(k, positions, theta, interleaved)          # (B, Hkv, T, d)
    out, attention = scaled_dot_product_attention_forward(q_rotated, k_rotated, v, mask=mask, causal=causal)
    return out, RopeAttentionCache(q_rope, k_rope, attention)


def rope_attention_backward(dout, cache):
    """dout (B, H, T, dv) → dq (B, H, T, d), dk (B, Hkv, T, d), dv (B, Hkv, T, dv)."""
    check_cache("cache", cache, RopeAttentionCache)
    dq_rotated, dk_rotated, dv = scaled_dot_product_attention_backward(dout, cache.attention)
    return rope_backward(dq_rotated, cache.q_rope), rope_backward(dk_rotated, cache.k_rope), dv
