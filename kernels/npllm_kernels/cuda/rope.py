"""Rotary position embedding on the GPU; reference: ``npllm.layers.rope``.

Each pair (a, b) of a head vector at position p is rotated by p θ_i, θ_i = 1 / theta^(2i / HS):

    (a, b) ↦ (a cos − b sin,  a sin + b cos)        backward: the same with −sin (the transpose)

pairs (i, i + HS/2) by default (Hugging Face's rotate half), (2i, 2i + 1) with ``interleaved``.

v1 (one version): one thread per pair, over x seen as (B·NH, T, HS); cos and sin come from tables of
(1 or B, T, HS/2) made on the host with the reference's ``rope_angles`` in x's dtype, so both
backends rotate by the same angles to the last bit, and each output is the reference's expression
in its order (a NaN or inf spreads to its pair exactly as there).  The cache keeps the tables on the
device, so the backward copies only dy.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import cuda

from npllm.layers._validate import check_cache, upstream_shaped
from npllm.layers.rope import check_rope_inputs, rope_angles
from npllm_kernels.cuda._device import ceil_div, device_float

THREADS = 128


class RopeCache(NamedTuple):
    cos: object          # (1 or B, T, HS/2) device array: cos(p θ_i)
    sin: object          # same shape: sin(p θ_i)
    interleaved: bool
    shape: tuple         # (B, NH, T, HS) of x


@cuda.jit
def rope_kernel(x, cos, sin, sign, interleaved, n_head, out):
    """out = R(±angle) x pair by pair.  x, out (B·NH, T, HS); cos, sin (1 or B, T, HS/2); sign +1 or −1."""
    idx = cuda.grid(1)
    rows, T, HS = x.shape
    half = HS // 2
    if idx >= rows * T * half:
        return
    i = idx % half
    t = (idx // half) % T
    row = idx // (half * T)
    pb = row // n_head if cos.shape[0] > 1 else 0
    c = cos[pb, t, i]
    s = sign * sin[pb, t, i]
    if interleaved:
        a, b = x[row, t, 2 * i], x[row, t, 2 * i + 1]
        out[row, t, 2 * i] = a * c - b * s
        out[row, t, 2 * i + 1] = a * s + b * c
    else:
        a, b = x[row, t, i], x[row, t, half + i]
        out[row, t, i] = a * c - b * s
        out[row, t, half + i] = b * c + a * s


def _launch(x3, cache, sign):
    out = cuda.device_array(x3.shape, dtype=x3.dtype)
    n = x3.shape[0] * x3.shape[1] * (x3.shape[2] // 2)
    if n:
        rope_kernel[ceil_div(n, THREADS), THREADS](x3, cache.cos, cache.sin, x3.dtype.type(sign),
                                                   cache.interleaved, cache.shape[1], out)
    return out


def rope_forward_device(x, positions, theta=10000.0, interleaved=False):
    """Device RoPE: x (B, NH, T, HS) device array, positions int (T,) or (B, T) (host) → y device array, cache."""
    x = device_float(x, "x")
    B, NH, T, HS = x.shape
    angles = rope_angles(positions, HS, theta, np.dtype(x.dtype))        # (T, HS/2) or (B, 1, T, HS/2)
    angles = angles.reshape((-1,) + angles.shape[-2:])                     # (1 or B, T, HS/2)
    cache = RopeCache(cuda.to_device(np.cos(angles)), cuda.to_device(np.sin(angles)), bool(interleaved), (B, NH, T, HS))
    return _launch(x.reshape(B * NH, T, HS), cache, 1).reshape(B, NH, T, HS), cache


def rope_backward_device(dy, cache):
    """Device RoPE backward: dy (B, NH, T, HS) device array → dx device array (rotation by −angle)."""
    dy = device_float(dy, "dy")
    B, NH, T, HS = cache.shape
    return _launch(dy.reshape(B * NH, T, HS), cache, -1).reshape(B, NH, T, HS)


def rope_forward(x, positions, theta=10000.0, interleaved=False):
    """Rotate q or k by their positions.  x (B, NH, T, HS), positions int (T,) or (B, T) → y (B, NH, T, HS),
    cache."""
    check_rope_inputs(x, positions, theta, interleaved)
    y, cache = rope_forward_device(x, positions, theta, interleaved)
    return y.copy_to_host(), cache


def rope_backward(dy, cache):
    """dy (B, NH, T, HS) → dx (B, NH, T, HS): the transposed rotation, i.e. by −angle."""
    check_cache("cache", cache, RopeCache)
    dy = upstream_shaped("dy", dy, cache.shape, np.dtype(cache.cos.dtype))
    return rope_backward_device(dy, cache).copy_to_host()


VERSIONS = {"v1": rope_forward_device}   # forward; the backward has one version too
DEFAULT_VERSION = "v1"
