"""SiLU, SwiGLU and Llama's SwiGLU MLP, fused (Numba CPU); reference: ``npllm.layers.swiglu`` and
``npllm.layers.activations.silu_*``.

    SiLU(z) = z σ(z),   SiLU'(z) = σ(z) (1 + z (1 − σ(z)))
    swiglu(gate, up) = SiLU(gate) ⊙ up;   dgate = dy ⊙ up ⊙ SiLU'(gate),   dup = dy ⊙ SiLU(gate)
    swiglu_mlp(x) = swiglu(x W_gate, x W_up) W_down

The elementwise parts are one pass each with ``fast_sigmoid`` (the polynomial exp of ``_math``, so the
loops vectorize; ``np.exp`` in a loop is a scalar libm call), in the reference's order of operations, so
NaN and inf land where the reference puts them (SiLU(−inf) = −inf · 0 = NaN in both).  The reference
makes five passes and four temporaries for the SwiGLU backward; here it is one pass writing dgate and
dup.  Caches keep inputs by reference and recompute σ in the backward (one exp, cheaper than a pass
over a stored array).

``swiglu_mlp`` is mlp.py's plan with a gate: the three products are BLAS's, ``h = SiLU(gate) ⊙ up`` is
one fused pass over the two (N, I) products, and the backward's (N, I) temporaries (dh = dy W_downᵀ,
dgate, dup), which live only inside the call, go into reused buffers (``_workspace``: a fresh
activation-sized array page-faults in on every call).

    forward:  gate = x W_gate, up = x W_up, h = SiLU(gate) ⊙ up (one pass), y = h W_down
    backward: dW_down = hᵀ dy, dh = dy W_downᵀ → buffer, dgate and dup → buffers (one pass),
              dx = dgate W_gateᵀ + dup W_upᵀ, dW_gate = xᵀ dgate, dW_up = xᵀ dup
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream, upstream_shaped
from npllm.layers.swiglu import check_swiglu_mlp_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH, fast_sigmoid
from npllm_kernels.cpu._threads import for_thread_count, serial_twin
from npllm_kernels.cpu._workspace import reused_buffer

_BLOCK = 4096   # elements per prange task (as activations.py)


class FusedSiluCache(NamedTuple):
    x: np.ndarray        # the input (the caller's array, never written)


class FusedSwiGLUCache(NamedTuple):
    gate: np.ndarray     # (..., I)
    up: np.ndarray       # (..., I)


class FusedSwiGLUMLPCache(NamedTuple):
    x: np.ndarray        # (N, C) the input's rows (a view of the caller's array when contiguous)
    gate: np.ndarray     # (N, I) x W_gate
    up: np.ndarray       # (N, I) x W_up
    h: np.ndarray        # (N, I) SiLU(gate) ⊙ up, the input of the down product
    W_gate: np.ndarray   # (C, I)
    W_up: np.ndarray     # (C, I)
    W_down: np.ndarray   # (I, C_out)
    x_shape: tuple       # the input's shape (..., C)


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _swiglu_forward_kernel(gate, up, out, gated):
    """out = SiLU(gate) ⊙ up, or SiLU(gate) when not ``gated``; 1-D arrays of one length."""
    for block in prange((gate.size + _BLOCK - 1) // _BLOCK):
        # Slices indexed from 0: LLVM can then drop numba's negative-index check and vectorize.
        lo, hi = block * _BLOCK, (block + 1) * _BLOCK
        g, u, o = gate[lo:hi], up[lo:hi], out[lo:hi]
        if gated:
            for i in range(g.size):
                o[i] = (g[i] * fast_sigmoid(g[i])) * u[i]
        else:
            for i in range(g.size):
                o[i] = g[i] * fast_sigmoid(g[i])


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _swiglu_backward_kernel(dy, gate, up, dgate, dup, gated):
    """dgate = dy ⊙ up ⊙ SiLU'(gate) and dup = dy ⊙ SiLU(gate) in one pass (not ``gated``: dgate =
    dy ⊙ SiLU'(gate), up and dup unused); 1-D arrays of one length."""
    one = gate.dtype.type(1.0)
    for block in prange((gate.size + _BLOCK - 1) // _BLOCK):
        lo, hi = block * _BLOCK, (block + 1) * _BLOCK
        dyb, g, dg = dy[lo:hi], gate[lo:hi], dgate[lo:hi]
        if gated:
            u, du = up[lo:hi], dup[lo:hi]
            for i in range(g.size):
                s = fast_sigmoid(g[i])
                dg[i] = (dyb[i] * u[i]) * (s * (one + g[i] * (one - s)))
                du[i] = dyb[i] * (g[i] * s)
        else:
            for i in range(g.size):
                s = fast_sigmoid(g[i])
                dg[i] = dyb[i] * (s * (one + g[i] * (one - s)))


_SERIAL_OPTIONS = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")
_swiglu_forward_serial = serial_twin(_swiglu_forward_kernel, **_SERIAL_OPTIONS)
_swiglu_backward_serial = serial_twin(_swiglu_backward_kernel, **_SERIAL_OPTIONS)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def swiglu_into(gate, up, out):
    """out = SiLU(gate) ⊙ up (up None: SiLU(gate)); out a contiguous array of gate's size."""
    flat_gate = _flat(gate)
    kernel = for_thread_count(_swiglu_forward_kernel, _swiglu_forward_serial, flat_gate.size)
    kernel(flat_gate, flat_gate if up is None else _flat(up), out.reshape(-1), up is not None)
    return out


def swiglu_grad_into(dy, gate, up, dgate, dup):
    """dgate = dy ⊙ up ⊙ SiLU'(gate), dup = dy ⊙ SiLU(gate) (up None: dgate = dy ⊙ SiLU'(gate));
    dgate and dup contiguous arrays of gate's size, distinct from the inputs (aliasing stops LLVM from
    vectorizing the loop)."""
    flat_gate = _flat(gate)
    kernel = for_thread_count(_swiglu_backward_kernel, _swiglu_backward_serial, flat_gate.size)
    gated = up is not None
    kernel(_flat(dy), flat_gate, _flat(up) if gated else flat_gate, dgate.reshape(-1),
           dup.reshape(-1) if gated else dgate.reshape(-1), gated)


def silu_forward(x):
    """y = x σ(x) (SiLU, swish), any shape → y, cache."""
    check_float("x", x)
    return swiglu_into(x, None, np.empty(x.shape, dtype=x.dtype)), FusedSiluCache(x)


def silu_backward(dy, cache):
    """dx = dy σ(x) (1 + x (1 − σ(x)))."""
    check_cache("cache", cache, FusedSiluCache)
    dy = upstream("dy", dy, cache.x)
    dx = np.empty(cache.x.shape, dtype=cache.x.dtype)
    swiglu_grad_into(dy, cache.x, None, dx, None)
    return dx


def swiglu_forward(gate, up):
    """SiLU(gate) ⊙ up.  gate (..., I), up (..., I) → y (..., I), cache."""
    check_float("gate", gate)
    check_float("up", up)
    check_shape("up", up, gate.shape)
    check_same_dtype(gate=gate, up=up)
    return swiglu_into(gate, up, np.empty(gate.shape, dtype=gate.dtype)), FusedSwiGLUCache(gate, up)


def swiglu_backward(dy, cache):
    """dy (..., I) → dgate (..., I), dup (..., I)."""
    check_cache("cache", cache, FusedSwiGLUCache)
    dy = upstream("dy", dy, cache.up)
    dgate, dup = np.empty_like(cache.gate, order="C"), np.empty_like(cache.up, order="C")
    swiglu_grad_into(dy, cache.gate, cache.up, dgate, dup)
    return dgate, dup


def swiglu_mlp_forward(x, W_gate, W_up, W_down):
    """(SiLU(x W_gate) ⊙ x W_up) W_down.  x (..., C), W_gate (C, I), W_up (C, I), W_down (I, C_out)
    → y (..., C_out), cache."""
    check_swiglu_mlp_inputs(x, W_gate, W_up, W_down)
    C = W_gate.shape[0]
    x2 = np.ascontiguousarray(x).reshape(-1, C)                         # (N, C)
    gate, up = x2 @ W_gate, x2 @ W_up                                   # (N, I) each, kept
    h = swiglu_into(gate, up, np.empty_like(gate))                       # (N, I), kept
    y = h @ W_down                                                       # (N, C_out)
    cache = FusedSwiGLUMLPCache(x2, gate, up, h, W_gate, W_up, W_down, x.shape)
    return y.reshape(x.shape[:-1] + (W_down.shape[1],)), cache


def swiglu_mlp_backward(dy, cache):
    """dy (..., C_out) → dx (..., C), dW_gate (C, I), dW_up (C, I), dW_down (I, C_out)."""
    check_cache("cache", cache, FusedSwiGLUMLPCache)
    x2, gate, up, h, W_gate, W_up, W_down, x_shape = cache
    dy = upstream_shaped("dy", dy, x_shape[:-1] + (W_down.shape[1],), gate.dtype)
    dy2 = np.ascontiguousarray(dy).reshape(-1, W_down.shape[1])         # (N, C_out)
    dW_down = h.T @ dy2
    dh = np.dot(dy2, W_down.T, out=reused_buffer("swiglu_mlp.dh", gate.shape, gate.dtype))
    dgate = reused_buffer("swiglu_mlp.dgate", gate.shape, gate.dtype)
    dup = reused_buffer("swiglu_mlp.dup", gate.shape, gate.dtype)
    swiglu_grad_into(dh, gate, up, dgate, dup)
    dx = dgate @ W_gate.T
    dx += dup @ W_up.T
    dW_gate, dW_up = x2.T @ dgate, x2.T @ dup
    return dx.reshape(x_shape), dW_gate, dW_up, dW_down
