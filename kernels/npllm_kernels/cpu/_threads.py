"""How the CPU kernels share the cores with BLAS (PERF-NOTES.md, lesson 4: idle thread pools spin).

A training step alternates NumPy's BLAS (the linear layers) with Numba kernels (attention, layer norm,
GELU, cross-entropy).  Both keep a pool of worker threads, and a pool that busy-waits after its call
steals a core from whatever runs next.  The choices made here:

* **Numba's threading layer is "workqueue"** (unless ``NUMBA_THREADING_LAYER`` is set, or numba has
  already started its pool).  Its workers sleep on a condition variable between parallel regions, so a
  finished kernel leaves both cores to BLAS and to other processes.  GNU OpenMP (numba's default when
  TBB is missing, as here) spins after every region.  Measured on this project's 2-core machine while
  other processes were running (best of 12 interleaved steps of the bench's GPT, n_layer=4,
  n_embd=128): a training step took 93-172 ms with workqueue, 1300-1410 ms with OpenMP and 690-860 ms
  with OpenMP and ``OMP_WAIT_POLICY=passive``; an empty parallel region costs 12 µs (24 µs after 2 ms
  idle) with workqueue against 1.5 µs back to back but a median 5.9 ms after 2 ms idle with OpenMP.
* **Numba uses every core** (``numba.get_num_threads()``, 2 here); we never change it globally.
* **BLAS runs on one thread inside a kernel that calls ``np.dot``** (attention's tiles, the LSTM's
  per-chunk products): the kernel's
  ``prange`` already keeps every core busy, and a multi-threaded BLAS inside each of its tasks would
  oversubscribe the cores (PERF-NOTES lesson 1: 100 ms vs 510 ms).  :func:`single_threaded_blas` is the
  context manager the Python wrappers put around such a kernel; it reuses one threadpoolctl controller,
  so entering it costs about 10 µs instead of the 0.3 ms of a fresh ``threadpool_limits``.
* **With one Numba thread, or on little work, the small kernels run a serial twin**
  (:func:`serial_twin`, chosen by :func:`for_thread_count`; PARALLEL_MIN_WORK says how little): workqueue hands every parallel region to a worker thread while the caller
  waits, so with one thread a region buys nothing and costs two context switches (9-17 µs on an idle
  machine, far more when other processes hold the cores).  Measured on the bench's GPT step, 1 Numba +
  1 BLAS thread, interleaved best of 25 s: 96.9 ms with parallel GELU/layer norm/cross-entropy kernels,
  93.5 ms with serial twins.
* **Inside a training step the two pools still meet**: after each multi-threaded NumPy product
  OpenBLAS's second thread spins for a while, so on 2 cores a parallel Numba kernel right after it
  gets about one core (the GPT step's flash backward: 0.6 ms parallel, 1.0 ms serial alone, about
  1.3 ms median inside a step either way). Kernels that run whole on Numba's pool with single-threaded
  BLAS (the LSTM: projection, recurrence and weight products in one region) avoid it: 55 → 45 ms.
* **BLAS outside the kernels keeps its own thread count.**  When other processes hold a core,
  OpenBLAS's two threads wait on each other (the reference attention at T = 1024 took 1.1 s with two
  BLAS threads and 0.31 s with one on the busy machine); on an idle machine two threads are up to 2x
  faster.  That trade-off belongs to whoever runs the job (``OPENBLAS_NUM_THREADS=1``), not to import.
"""
from __future__ import annotations

import contextlib
import os
import types

import numba

THREADING_LAYER = "workqueue"
_controller = None


def configure() -> str:
    """Select the threading layer (once, before numba's first parallel region); return its name."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        try:
            numba.threading_layer()          # raises ValueError until a parallel region has run
        except ValueError:
            numba.config.THREADING_LAYER = THREADING_LAYER
    return numba.config.THREADING_LAYER


def _blas_controller():
    """One threadpoolctl controller for the BLAS libraries NumPy and Numba's ``np.dot`` (SciPy) load."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls SciPy's BLAS: load it first)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with every BLAS library limited to one thread (then restore the previous limits)."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def serial_twin(kernel, **options):
    """The same Python kernel compiled without ``parallel`` (``prange`` runs as ``range``), cached apart.

    The twin gets its own ``__qualname__`` so Numba's on-disk cache keeps the two versions in separate
    files (the cache index is keyed by signature, not by compile flags).
    """
    source = kernel.py_func
    twin = types.FunctionType(source.__code__, source.__globals__, source.__name__ + "_serial",
                              source.__defaults__, source.__closure__)
    twin.__qualname__ = source.__qualname__ + "_serial"
    twin.__doc__ = source.__doc__
    return numba.njit(cache=True, **options)(twin)


# Below this many elements of work a parallel region costs more than it saves. Measured on the 2-core
# Xeon at GPT-step sizes, kernel alone, best of 300: layer norm on (768, 128) (98k elements) forward
# 125 µs parallel vs 47 µs serial, backward 161 vs 80; GELU on 393k elements 152 µs parallel vs 255.
PARALLEL_MIN_WORK = 1 << 18


def for_thread_count(parallel_kernel, serial_kernel, work=None):
    """``serial_kernel`` when Numba runs one thread (a parallel region would only add a hand-off) or
    when ``work`` (elements touched) is below PARALLEL_MIN_WORK; else ``parallel_kernel``."""
    if numba.get_num_threads() == 1 or (work is not None and work < PARALLEL_MIN_WORK):
        return serial_kernel
    return parallel_kernel
