"""How the CPU kernels share the cores with BLAS: idle thread pools spin, so pools are set up on purpose.

A training step alternates NumPy's BLAS (the linear layers) with Numba kernels (attention, layer norm,
GELU, cross-entropy).  Both keep a pool of worker threads, and a pool that busy-waits after its call
steals a core from whatever runs next.  The choices made here (the measurements behind each:
docs/performance.md, "Threads and BLAS pools"):

* **Numba's threading layer is "workqueue"**, selected by :func:`configure` (exported as
  ``npllm_kernels.cpu.configure_threads``; the commands call it through ``npllm.process.configure``,
  never an import), unless ``NUMBA_THREADING_LAYER`` is set or numba has already started its pool.
  Its workers sleep on a condition variable between parallel regions, so a finished kernel leaves the
  cores to BLAS and to other processes; GNU OpenMP (numba's default when TBB is missing) spins after
  every region and made a training step several times slower.
* **Numba uses every core** (``numba.get_num_threads()``); we never change it globally.
* **BLAS runs on one thread inside a kernel that calls ``np.dot``** (attention's tiles, the LSTM's
  per-chunk products): the kernel's ``prange`` already keeps every core busy, and a multi-threaded BLAS
  inside each of its tasks would oversubscribe the cores.  :func:`single_threaded_blas` is the context
  manager the Python wrappers put around such a kernel; it reuses one threadpoolctl controller, because
  building a fresh ``threadpool_limits`` on every call costs more than a small kernel.
* **With one Numba thread, or on little work, the small kernels run a serial twin**
  (:func:`serial_twin`, chosen by :func:`for_thread_count`; PARALLEL_MIN_WORK says how little):
  workqueue hands every parallel region to a worker thread while the caller waits, so with one thread
  a region buys nothing and costs two context switches.
* **Inside a training step the two pools still meet**: after each multi-threaded NumPy product
  OpenBLAS's second thread spins for a while, so a parallel Numba kernel right after it gets about one
  core.  Kernels that run whole on Numba's pool with single-threaded BLAS (the LSTM: projection,
  recurrence and weight products in one region) avoid it.
* **BLAS outside the kernels keeps its own thread count.**  When other processes hold a core,
  OpenBLAS's threads wait on each other; on an idle machine they are faster.  That trade-off belongs
  to whoever runs the job (``OPENBLAS_NUM_THREADS=1``, ``npllm train --blas-threads``), not to import.
"""
from __future__ import annotations

import contextlib
import os
import types

import numba

THREADING_LAYER = "workqueue"
_controller = None


def configure() -> str:
    """Select Numba's threading layer (workqueue unless NUMBA_THREADING_LAYER says otherwise); return its
    name.  Call once before the first parallel kernel; npllm's commands do it through
    ``npllm.process.configure``.  A no-op once numba's pool has started."""
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


# Below this many elements of work a parallel region's hand-off costs more than it saves: layer norm at
# GPT-step sizes (98k elements) ran faster serial, GELU on 393k elements faster parallel
# (docs/performance.md, "Threads and BLAS pools").
PARALLEL_MIN_WORK = 1 << 18


def for_thread_count(parallel_kernel, serial_kernel, work=None, min_work=PARALLEL_MIN_WORK):
    """``serial_kernel`` when Numba runs one thread (a parallel region would only add a hand-off) or
    when ``work`` (elements touched) is below ``min_work``; else ``parallel_kernel``."""
    if numba.get_num_threads() == 1 or (work is not None and work < min_work):
        return serial_kernel
    return parallel_kernel
