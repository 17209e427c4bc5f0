"""Which implementation runs the hot ops: "numpy" (the reference), "numba" or "cuda".

Models never call a kernel module directly. They write ``ops.layer_norm_forward(x, g, b)`` where
``ops`` is this module's :data:`ops` object:

* a ``*_forward`` (or any other op such as ``matmul``) resolves to the selected backend's function of
  that name, falling back to the NumPy reference (``npllm.layers``) when the backend lacks it;
* a ``*_backward`` dispatches on the *type of its cache* (the last argument): a cache made by the numba
  backend goes to the numba backward, one made by the reference to the reference backward, so switching
  backends between a forward and its backward can never hand a cache to the wrong code.

Backends are imported lazily on first use, so ``import npllm`` never imports numba.  Select one with
``set_backend(name)``, ``with use_backend(name): ...``, the ``NPLLM_BACKEND`` environment variable or the
CLI's ``--backend``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

from npllm.errors import EnvironmentVariableError

BACKENDS = ("numpy", "numba", "cuda")
ENV_VAR = "NPLLM_BACKEND"   # read by get_backend when set_backend has not been called
# Module that holds each backend's ops (the reference lives in npllm.layers).
_MODULES = {"numpy": "npllm.layers", "numba": "npllm_kernels.cpu", "cuda": "npllm_kernels.cuda"}
_current: str | None = None
_loaded: dict[str, ModuleType] = {}


def _check_name(name) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


def _load(name: str) -> ModuleType:
    """Import a backend's module once, with a clear error when it cannot run here."""
    if name in _loaded:
        return _loaded[name]
    if name == "cuda":
        _require_cuda()
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        raise RuntimeError(f"backend {name!r} is not available: cannot import {_MODULES[name]} ({exc})") from exc
    _loaded[name] = module
    return module


def _require_cuda() -> None:
    """Raise unless a CUDA GPU (or Numba's CUDA simulator) is present."""
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
    try:
        from numba import cuda
    except ImportError as exc:
        raise RuntimeError(f"backend 'cuda' needs numba-cuda: pip install -e .[cuda] ({exc})") from exc
    if not simulator and not cuda.is_available():
        raise RuntimeError("backend 'cuda' needs an NVIDIA GPU with a working driver; none was found "
                           "(set NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's CUDA simulator)")


def get_backend() -> str:
    """Name of the selected backend ("numpy" unless set_backend or NPLLM_BACKEND says otherwise).

    An unknown or unavailable NPLLM_BACKEND is an :class:`~npllm.errors.EnvironmentVariableError` (a
    ValueError) naming the variable; an empty one counts as unset."""
    global _current
    if _current is None:
        env = os.environ.get(ENV_VAR, "").strip() or "numpy"
        if env not in BACKENDS:
            raise EnvironmentVariableError(ENV_VAR, f"{env!r} is not a backend; set it to one of "
                                                    f"{', '.join(BACKENDS)}, or unset it for numpy")
        try:
            _load(env)
        except RuntimeError as exc:
            raise EnvironmentVariableError(ENV_VAR, f"{exc}; unset it for numpy") from None
        _current = env
    return _current


def set_backend(name: str) -> None:
    """Select the backend for all hot ops: "numpy", "numba" or "cuda" (checked and imported now)."""
    global _current
    _load(_check_name(name))
    _current = name


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the block with backend ``name``, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _reference() -> ModuleType:
    return importlib.import_module("npllm.layers")


def _backend_of_cache(cache) -> ModuleType:
    """The module whose forward made ``cache``: found from the cache class's defining package."""
    module_name = type(cache).__module__
    for name, package in _MODULES.items():
        if name != "numpy" and (module_name == package or module_name.startswith(package + ".")):
            return _load(name)
    return _reference()


def resolve(op_name: str):
    """The function that runs ``op_name`` under the selected backend (reference fallback)."""
    module = _load(get_backend())
    fn = getattr(module, op_name, None)
    if fn is None:
        fn = getattr(_reference(), op_name, None)
    if fn is None:
        raise AttributeError(f"no op named {op_name!r} in any backend")
    return fn


def provides(op_name: str) -> bool:
    """Whether the selected backend itself has ``op_name`` (the reference counts for "numpy").

    A model asks before choosing a fused op over the ops it is made of, so that a backend with fast
    kernels for the parts (cuda's attention) is not sent to the reference's fused op instead."""
    return hasattr(_load(get_backend()), op_name)


class _Ops:
    """Attribute access to the hot ops: ``ops.name_forward(...)``, ``ops.name_backward(..., cache)``."""

    def __getattr__(self, op_name: str):
        if op_name.startswith("__"):
            raise AttributeError(op_name)
        if op_name.endswith("_backward"):
            def backward(*args):
                owner = _backend_of_cache(args[-1])
                fn = getattr(owner, op_name, None) or getattr(_reference(), op_name)
                return fn(*args)
            backward.__name__ = op_name
            return backward
        return resolve(op_name)


ops = _Ops()
