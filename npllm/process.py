"""Process-wide settings, made in one explicit call: the commands call :func:`configure` at their start.

Nothing in npllm changes these as a side effect of an import; a script that wants the commands' setup
calls ``npllm.process.configure(backend="numba")`` itself.

* **backend**: which implementation runs the hot ops (:mod:`npllm.backend`).
* **Numba's threading layer** (numba backend only): "workqueue", whose workers sleep between parallel
  regions instead of spinning like OpenMP's and stealing the core BLAS runs on next (docs/performance.md,
  "Threads").
* **BLAS threads**: a limit on NumPy's BLAS pool for the whole process (None: BLAS's own choice, every core).
* **malloc**: glibc keeps freed memory for reuse instead of returning it to the OS, so the few-MiB
  activation arrays every step allocates are not page-faulted in again each step (docs/performance.md,
  "Memory").
"""
from __future__ import annotations

_blas_limit = None     # the threadpoolctl limiter in force (kept alive: dropping it does not undo it)
SMALL_MODEL_WIDTH = 256   # up to this width, one token's products are too small for a BLAS thread team


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse rather than hand it back to the OS (no-op elsewhere)."""
    import ctypes
    import ctypes.util
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return                                  # not glibc (macOS, Windows, musl): nothing to tune
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)     # blocks below 32 MiB come from the heap...
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024)   # ...which is not shrunk until 1 GiB lies free


def limit_blas_threads(threads: int | None) -> None:
    """Limit NumPy's BLAS to ``threads`` for the rest of the process (None: lift a previous limit)."""
    global _blas_limit
    from threadpoolctl import threadpool_limits
    if _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None
    if threads is not None:
        _blas_limit = threadpool_limits(limits=threads, user_api="blas")


def inference_blas_threads(model) -> int | None:
    """BLAS threads for generating from or evaluating ``model``: one for small models, else BLAS's choice.

    Generating one token multiplies single rows, where a thread team's hand-offs and spinning idle
    workers cost more than they save (docs/performance.md, "Threads")."""
    width = getattr(model.config, "n_embd", None) or getattr(model.config, "hidden_size", 0)
    return 1 if width <= SMALL_MODEL_WIDTH else None


def configure(backend: str | None = None, blas_threads: int | None = None, tune_malloc: bool = True) -> str:
    """Set up the process: backend (None: $NPLLM_BACKEND or numpy), Numba's threading layer, BLAS threads,
    malloc → the backend selected.  ValueError/RuntimeError when the backend cannot run here."""
    from npllm.backend import get_backend, set_backend
    if backend is not None:
        set_backend(backend)
    selected = get_backend()
    if selected == "numba":
        from npllm_kernels.cpu._threads import configure as configure_numba_threads
        configure_numba_threads()
    limit_blas_threads(blas_threads)
    if tune_malloc:
        keep_freed_memory()
    return selected
