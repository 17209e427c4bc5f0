"""GPT-2's feed-forward block with its gradient temporaries in reused buffers (Numba CPU backend);
reference: ``npllm.layers.mlp``.

    u = x W_fc + b_fc,   h = GELU(u),   y = h W_proj + b_proj            (W_fc (C, M), M = 4C in GPT-2)

The products are BLAS's, as in the reference, and GELU is the fused kernel of ``activations``; what
changes is memory. The backward's two (N, M) temporaries, dh = dy W_projᵀ and du = dh · GELU'(u),
the biggest arrays of a GPT step's backward, live only inside this call: they go into reused
buffers (``_workspace``) instead of fresh arrays.

    forward:  u = x W_fc, then u += b_fc and h = GELU(u) in one pass,  y = h W_proj + b_proj
    backward: dW_proj = hᵀ dy,  dh = dy W_projᵀ → buffer,  du = dh · GELU'(u) → buffer with
              db_fc = Σ du in the same pass,  dx = du W_fcᵀ,  dW_fc = xᵀ du

Why buffers: a fresh (N, M) output page-faults its memory in on every call, which inside a GPT step
cost more than the GELU's arithmetic. h is kept, not recomputed in the backward: recomputing saves
1.5 MiB a layer but costs more time than the faults it avoids once ``npllm train`` keeps freed memory
(both measured in docs/performance.md, "Small kernels").
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from npllm.layers._validate import check_cache, upstream_shaped
from npllm.layers.mlp import check_mlp_inputs
from npllm_kernels.cpu._math import KERNEL_FASTMATH
from npllm_kernels.cpu._threads import for_thread_count, serial_twin
from npllm_kernels.cpu._workspace import reused_buffer
from npllm_kernels.cpu.activations import gelu_into, gelu_tanh, gelu_tanh_grad

_N_CHUNKS = 16                   # row chunks for db_fc's partial sums (fixed: thread-count independent)


class FusedMLPCache(NamedTuple):
    x: np.ndarray        # (N, C) the input's rows (a view of the caller's array when contiguous)
    u: np.ndarray        # (N, M) the pre-activation x W_fc + b_fc
    h: np.ndarray        # (N, M) GELU(u), the input of the second product
    W_fc: np.ndarray     # (C, M)
    W_proj: np.ndarray   # (M, C_out)
    has_bias: tuple      # (b_fc given, b_proj given)
    approximate: str
    x_shape: tuple       # the input's shape (..., C)


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _bias_gelu_kernel(u, b, h):
    """u (N, M) += b in place and h = GELU(u) (tanh form), in one pass over the rows."""
    for row in prange(u.shape[0]):
        u_row, h_row = u[row], h[row]
        for j in range(u_row.shape[0]):
            v = u_row[j] + b[j]
            u_row[j] = v
            h_row[j] = gelu_tanh(v)


@njit(cache=True, parallel=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _gelu_grad_colsum_kernel(u, dh, du, db_parts):
    """du = dh · GELU'(u) (tanh form) and db_parts[c] = Σ of du over row chunk c, in one pass."""
    N = u.shape[0]
    n_chunks = db_parts.shape[0]
    for chunk in prange(n_chunks):
        total = db_parts[chunk]
        total[:] = 0
        for row in range(chunk * N // n_chunks, (chunk + 1) * N // n_chunks):
            u_row, dh_row, du_row = u[row], dh[row], du[row]
            for j in range(u_row.shape[0]):
                g = dh_row[j] * gelu_tanh_grad(u_row[j])
                du_row[j] = g
                total[j] += g


_SERIAL = dict(fastmath=KERNEL_FASTMATH, error_model="numpy")
_bias_gelu_serial = serial_twin(_bias_gelu_kernel, **_SERIAL)
_gelu_grad_colsum_serial = serial_twin(_gelu_grad_colsum_kernel, **_SERIAL)


def _affine(a, W, b):
    """a @ W + b (b may be None), one BLAS product, the bias added in place."""
    out = a @ W
    if b is not None:
        out += b
    return out


def mlp_forward(x, W_fc, b_fc, W_proj, b_proj, approximate="tanh"):
    """GELU(x W_fc + b_fc) W_proj + b_proj.  x (..., C), W_fc (C, M), b_fc (M,), W_proj (M, C_out),
    b_proj (C_out,) (biases may be None) → y (..., C_out), cache."""
    check_mlp_inputs(x, W_fc, b_fc, W_proj, b_proj, approximate)
    C, M = W_fc.shape
    x2 = np.ascontiguousarray(x).reshape(-1, C)                         # (N, C)
    if approximate == "tanh" and b_fc is not None:
        # GPT-2's case: + b_fc and the GELU in one pass over the (N, M) product (one fewer pass).
        u = x2 @ W_fc
        h = np.empty_like(u)
        for_thread_count(_bias_gelu_kernel, _bias_gelu_serial, u.size)(u, np.ascontiguousarray(b_fc), h)
    else:
        u = _affine(x2, W_fc, b_fc)                                      # (N, M), kept
        h = gelu_into(u, None, approximate, np.empty_like(u))            # (N, M), kept
    y = _affine(h, W_proj, b_proj)                                       # (N, C_out)
    cache = FusedMLPCache(x2, u, h, W_fc, W_proj, (b_fc is not None, b_proj is not None), approximate, x.shape)
    return y.reshape(x.shape[:-1] + (W_proj.shape[1],)), cache


def mlp_backward(dy, cache):
    """dy (..., C_out) → dx (..., C), dW_fc, db_fc, dW_proj, db_proj (a db is None without its bias)."""
    check_cache("cache", cache, FusedMLPCache)
    x2, u, h, W_fc, W_proj, (has_fc_bias, has_proj_bias), approximate, x_shape = cache
    dy = upstream_shaped("dy", dy, x_shape[:-1] + (W_proj.shape[1],), u.dtype)
    dy2 = np.ascontiguousarray(dy).reshape(-1, W_proj.shape[1])          # (N, C_out)
    dW_proj = h.T @ dy2
    db_proj = dy2.sum(axis=0) if has_proj_bias else None
    dh = np.dot(dy2, W_proj.T, out=reused_buffer("mlp.dhidden", u.shape, u.dtype))
    # Its own buffer, not dh's: with the output overlapping an input the GELU loop would not vectorize.
    du = reused_buffer("mlp.du", u.shape, u.dtype)
    if approximate == "tanh" and has_fc_bias:
        # du and its column sums (db_fc) in one pass.
        db_parts = np.empty((max(1, min(_N_CHUNKS, u.shape[0])), u.shape[1]), dtype=u.dtype)
        for_thread_count(_gelu_grad_colsum_kernel, _gelu_grad_colsum_serial, u.size)(u, dh, du, db_parts)
        db_fc = db_parts.sum(axis=0)
    else:
        gelu_into(u, dh, approximate, du)
        db_fc = du.sum(axis=0) if has_fc_bias else None
    dx = (du @ W_fc.T).reshape(x_shape)
    dW_fc = x2.T @ du
    return dx, dW_fc, db_fc, dW_proj, db_proj
