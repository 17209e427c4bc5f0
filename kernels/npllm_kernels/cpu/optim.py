"""Fused AdamW update (Numba CPU); reference: ``npllm.optim.adamw_update``.

The reference runs about ten NumPy ufuncs per parameter array, each a full pass over memory (and a few
with a scratch array).  Here one loop reads param, grad, m and v once and writes param, m and v once.
Serial on purpose: the bench GPT's largest array has 64k elements, a few microseconds of work, less
than a parallel region's hand-off costs (``_threads``).  The scalars are cast to the arrays' dtype in
Python, as NumPy's weak scalars are, so float32 arithmetic stays float32.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from npllm_kernels.cpu._math import KERNEL_FASTMATH


# error_model="numpy": with Python's (the default) each division checks for zero and raises, a branch
# that keeps the loop scalar; without it the loop vectorizes (docs/performance.md, "AdamW").
@njit(cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def _adamw_kernel(param, grad, m, v, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
                  sqrt_bias_correction2, eps, step_size):
    """In place on 1-D arrays of one length: p *= decay; m, v moments; p −= step_size · m / (√v / √bc2 + eps)."""
    for i in range(param.shape[0]):
        g = grad[i]
        mi = beta1 * m[i] + one_minus_beta1 * g
        vi = beta2 * v[i] + one_minus_beta2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] = param[i] * decay - step_size * (mi / (np.sqrt(vi) / sqrt_bias_correction2 + eps))


def _flat_view(name, array):
    """A 1-D view of a C-contiguous array (an update written into a copy would be lost)."""
    if not array.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (updated in place), got strides {array.strides}")
    return array.reshape(-1)


def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step) -> None:
    """One AdamW step on one array, in place: param, m, v (same shape) from grad; step counts from 1."""
    for name, array in (("grad", grad), ("m", m), ("v", v)):
        if array.shape != param.shape or array.dtype != param.dtype:
            raise ValueError(f"{name}: expected {param.dtype}{param.shape} like param, got {array.dtype}{array.shape}")
    dtype = param.dtype.type
    # The reference applies the decay only when weight_decay != 0; multiplying by exactly 1 is the same.
    decay = 1 - lr * weight_decay if weight_decay != 0 else 1.0
    _adamw_kernel(_flat_view("param", param), np.ascontiguousarray(grad).reshape(-1),
                  _flat_view("m", m), _flat_view("v", v), dtype(decay), dtype(beta1), dtype(1 - beta1),
                  dtype(beta2), dtype(1 - beta2), dtype(math.sqrt(1 - beta2 ** step)), dtype(eps),
                  dtype(lr / (1 - beta1 ** step)))
