"""Host-side helpers shared by the CUDA kernels: moving arrays, checking them, sizing launch grids.

Every public op in this package comes in two flavours:

* a *host* function (``matmul(a, b)``) with exactly the reference's contract: NumPy in, NumPy out. It
  copies the inputs to the device once, launches the kernels and copies the result back once;
* a *device* function (``matmul_device(a, b)``) that takes Numba device arrays, or any object with
  ``__cuda_array_interface__`` (CuPy, PyTorch tensors), and returns Numba device arrays, so a benchmark
  can time the kernels alone and a model can keep its activations on the GPU.

Nothing here is copied between host and device implicitly: a NumPy array handed to a ``*_device``
function is copied once on entry (:func:`as_device`), never inside a loop.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
from numba import cuda

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# True under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where kernels run as Python threads.
SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)


def _make_simulator_shared_arrays_thread_safe() -> None:
    """Close a race in the simulator's ``cuda.shared.array`` (numba-cuda 0.30): without it, kernels fail at random.

    The simulator runs a block's threads as Python threads and gives every thread that calls
    ``cuda.shared.array`` on the same source line one NumPy array, kept in a per-launch dict keyed by
    (file, line). The lookup is check-then-insert without a lock: when two threads both find no entry
    (every thread reaches a kernel's first shared array at the same moment, and a short
    ``sys.setswitchinterval`` makes a switch there likely), both allocate and the later insert wins.
    The earlier thread then stages its part of the tile into an orphan array nobody reads, and the
    others read uninitialised memory at those places: large, intermittent errors (or a math range
    error) in whichever kernel lost the race, although every kernel here is correctly synchronised.
    This replacement does the same lookup under a lock. It computes the caller itself, because a
    wrapper around the original would make the wrapper's line the key of every shared array.
    """
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if getattr(shared, "_npllm_thread_safe", False):
        return
    original = shared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:   # errors and dynamic shared memory: no per-line dict
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)   # a Numba type such as float32
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)   # what the original's traceback gives
        with lock:
            res = self._allocations.get(key)
            if res is None:
                res = self._allocations[key] = np.empty(shape, dtype)
        return res

    shared.array = array
    shared._npllm_thread_safe = True


if SIMULATOR:
    _make_simulator_shared_arrays_thread_safe()


def ceil_div(n: int, size: int) -> int:
    """Number of blocks of ``size`` needed to cover ``n`` items (at least 1, so a launch is legal)."""
    return max(1, -(-int(n) // int(size)))


def as_device(x, name: str):
    """``x`` as a Numba device array: device arrays pass through (no copy), NumPy arrays are copied once."""
    # Tested by attribute rather than with cuda.is_cuda_array(), which the simulator does not provide.
    if getattr(x, "__cuda_ndarray__", False):   # a Numba device array (or the simulator's)
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x)  # a zero-copy view of another library's GPU buffer (CuPy, PyTorch)
    if isinstance(x, np.ndarray):
        return cuda.to_device(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a NumPy array or a CUDA device array, got {type(x).__name__}")


def check_float(x, name: str) -> np.dtype:
    """The floating dtype of ``x`` (float32 or float64), else a TypeError naming ``name``."""
    dtype = np.dtype(x.dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


def check_ndim(x, name: str, ndim: int, layout: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` has ``ndim`` axes (``layout`` describes them)."""
    if len(x.shape) != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")


def check_contiguous(x, name: str) -> None:
    """Kernels index flat row-major memory: a strided device view must be made contiguous by the caller."""
    if not x.is_c_contiguous():
        raise ValueError(f"{name} must be C-contiguous on the device; copy it first "
                         "(e.g. cupy.ascontiguousarray)")


def device_float(x, name: str):
    """``x`` on the device, checked to be a C-contiguous float32/float64 array."""
    x = as_device(x, name)
    check_float(x, name)
    check_contiguous(x, name)
    return x
