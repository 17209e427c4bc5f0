"""npllm: language models from scratch in NumPy, every forward and backward written by hand.

The NumPy reference lives in :mod:`npllm.layers`; models in :mod:`npllm.models`; gradient checking in
:mod:`npllm.gradcheck`.  ``import npllm`` never imports numba: the Numba kernels load lazily when a
backend asks for them (:func:`set_backend`).
"""
from npllm.backend import get_backend, set_backend, use_backend

__version__ = "0.1.0"
__all__ = ["get_backend", "set_backend", "use_backend", "__version__"]
