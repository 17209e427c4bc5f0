"""``npllm info``: versions, which backends can run here, where compiled kernels are cached, BLAS setup.

Everything is probed, never assumed: a missing optional package prints "not installed" instead of
failing, so the command is useful exactly when something is wrong.
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path


def _version(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:   # noqa: BLE001 - any import failure is worth reporting, not raising
        return f"not installed ({type(exc).__name__})" if isinstance(exc, ImportError) else f"broken: {exc}"
    return getattr(module, "__version__", "installed")


def backend_status() -> dict[str, str]:
    """For each backend, "available" or why not (imports numba/npllm_kernels, never compiles)."""
    status = {"numpy": "available (reference)"}
    try:
        importlib.import_module("npllm_kernels.cpu")
        status["numba"] = "available"
    except Exception as exc:  # noqa: BLE001
        status["numba"] = f"unavailable: {exc}"
    try:
        from numba import cuda
    except Exception as exc:  # noqa: BLE001
        status["cuda"] = f"unavailable: numba.cuda cannot be imported ({exc})"
        return status
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        status["cuda"] = "simulator (NUMBA_ENABLE_CUDASIM=1): correct but slow"
    elif cuda.is_available():
        names = [gpu.name.decode() if isinstance(gpu.name, bytes) else str(gpu.name) for gpu in cuda.gpus]
        status["cuda"] = f"available: {', '.join(names)}"
    else:
        status["cuda"] = "unavailable: no CUDA GPU/driver found (NUMBA_ENABLE_CUDASIM=1 runs the simulator)"
    return status


def kernel_cache_dirs() -> list[str]:
    """Where Numba writes cache=True kernels: $NUMBA_CACHE_DIR, else __pycache__ beside npllm_kernels."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [f"{os.environ['NUMBA_CACHE_DIR']} (NUMBA_CACHE_DIR)"]
    try:
        import npllm_kernels
    except ImportError:
        return ["npllm_kernels is not importable"]
    root = Path(npllm_kernels.__file__).parent
    dirs = sorted(str(p) for p in root.rglob("__pycache__"))
    writable = os.access(root, os.W_OK)
    note = "" if writable else " (not writable: set NUMBA_CACHE_DIR, else kernels recompile every run)"
    return [str(d) for d in dirs] or [f"{root}/**/__pycache__ (created on first compile){note}"]


def blas_info() -> list[str]:
    """The BLAS libraries NumPy uses and their thread counts (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed"]
    import numpy  # noqa: F401 - loads NumPy's BLAS so threadpoolctl can see it
    rows = [f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('user_api')}), "
            f"{pool.get('num_threads')} threads, {pool.get('architecture', '?')}: {pool.get('filepath')}"
            for pool in threadpool_info()]
    return rows or ["no BLAS/OpenMP thread pool found"]


def add_parser(sub) -> None:
    sub.add_parser("info", help="versions, available backends, kernel cache location")


def run(args) -> int:
    """Print the report (plain text, one fact per line)."""
    import npllm
    from npllm.backend import get_backend
    print(f"npllm {npllm.__version__} ({Path(npllm.__file__).parent})")
    print(f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}, "
          f"{os.cpu_count()} CPUs")
    for name in ("numpy", "numba", "llvmlite", "scipy", "matplotlib", "safetensors", "tqdm", "threadpoolctl"):
        print(f"{name:>13}: {_version(name)}")
    try:
        selected = get_backend()
    except Exception as exc:  # noqa: BLE001 - e.g. a bad NPLLM_BACKEND
        selected = f"error: {exc}"
    print(f"backend selected: {selected} (NPLLM_BACKEND={os.environ.get('NPLLM_BACKEND', 'unset')})")
    for name, status in backend_status().items():
        print(f"  {name:>5}: {status}")
    print("kernel cache:")
    for line in kernel_cache_dirs():
        print(f"  {line}")
    print("BLAS:")
    for line in blas_info():
        print(f"  {line}")
    return 0
