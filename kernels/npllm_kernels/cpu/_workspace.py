"""Buffers a kernel reuses from one call to the next, for arrays that never leave the call.

Why: a fresh activation-sized array (a few MiB) is often newly mapped memory, and the kernel that first
writes it pays a page fault per 4 KiB (glibc returns freed memory at the top of its heap to the system,
and a training step frees most of what it allocated). For the GPT step's attention gradient and GELU
buffers those faults cost more time than their arithmetic (docs/performance.md, "Threads and BLAS
pools"). A buffer that lives only inside one op call (a hidden activation that is recomputed
in the backward, a gradient consumed by the next matmul) can instead be kept and reused.

One set per thread (``threading.local``) and per name, so two ops' buffers never alias; a buffer is
replaced when a call needs another shape or dtype.
"""
from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def reused_buffer(name: str, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised array of ``shape``/``dtype`` that the same ``name`` gets back on later calls."""
    buffers = _local.__dict__.setdefault("buffers", {})
    dtype = np.dtype(dtype)
    buffer = buffers.get(name)
    if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
        buffer = buffers[name] = np.empty(shape, dtype=dtype)
    return buffer
