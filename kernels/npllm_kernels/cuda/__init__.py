"""The "cuda" backend: Numba CUDA kernels with exactly the reference ops' names, signatures and contracts.

Host functions (NumPy in, NumPy out; what ``npllm.backend`` calls):
``matmul``, ``softmax_forward``/``softmax_backward``, ``cross_entropy_forward``/``cross_entropy_backward``,
``scaled_dot_product_attention_forward``/``scaled_dot_product_attention_backward`` (grouped-query heads
included), ``rms_norm_forward``/``rms_norm_backward``, ``rope_forward``/``rope_backward``. Each copies its
inputs to the GPU once and its result back once; caches hold *device* arrays, so a backward does not
copy the forward's tensors again.

Device functions (``*_device``): take Numba device arrays or any ``__cuda_array_interface__`` object
(CuPy, PyTorch) and return Numba device arrays, for benchmarks and code that keeps data on the GPU.

Each kernel family is versioned as in llm.c's dev/cuda (``matmul.VERSIONS``, ``softmax.VERSIONS``, ...)
with a default binding; ``npllm_kernels.cuda.bench`` validates each version against the NumPy reference
before it times anything, and ``npllm_kernels.cuda.ptx`` compiles every kernel to PTX.

Importing this package needs numba-cuda (``pip install -e .[cuda]``) but no GPU: kernels compile on
first launch. Without a GPU set NUMBA_ENABLE_CUDASIM=1 (before numba.cuda is first imported) to run
them in Numba's CUDA simulator; ``npllm.backend`` refuses "cuda" with a clear error otherwise.
"""
import importlib as _importlib

from npllm_kernels.cuda.attention import (AttentionCache, scaled_dot_product_attention_forward,
                                          scaled_dot_product_attention_forward_device)
from npllm_kernels.cuda.attention_backward import (scaled_dot_product_attention_backward,
                                                   scaled_dot_product_attention_backward_device)
from npllm_kernels.cuda.cross_entropy import (CrossEntropyCache, cross_entropy_backward,
                                              cross_entropy_backward_device, cross_entropy_forward,
                                              cross_entropy_forward_device)
from npllm_kernels.cuda.matmul import matmul, matmul_device
from npllm_kernels.cuda.rms_norm import (RMSNormCache, rms_norm_backward, rms_norm_backward_device, rms_norm_forward,
                                         rms_norm_forward_device)
from npllm_kernels.cuda.rope import RopeCache, rope_backward, rope_backward_device, rope_forward, rope_forward_device
from npllm_kernels.cuda.softmax import (SoftmaxCache, softmax_backward, softmax_backward_device, softmax_forward,
                                        softmax_device)

# The kernel modules by name. ``npllm_kernels.cuda.matmul`` is the *function* (the backend looks ops up
# by name here), which shadows the module of the same name; this dict reaches the modules themselves.
MODULES = {name: _importlib.import_module(f"npllm_kernels.cuda.{name}")
           for name in ("matmul", "softmax", "cross_entropy", "attention", "attention_backward", "rms_norm", "rope")}

__all__ = [
    "matmul", "matmul_device",
    "softmax_forward", "softmax_backward", "softmax_device", "softmax_backward_device", "SoftmaxCache",
    "cross_entropy_forward", "cross_entropy_backward", "cross_entropy_forward_device",
    "cross_entropy_backward_device", "CrossEntropyCache",
    "scaled_dot_product_attention_forward", "scaled_dot_product_attention_backward",
    "scaled_dot_product_attention_forward_device", "scaled_dot_product_attention_backward_device",
    "AttentionCache", "MODULES",
    "rms_norm_forward", "rms_norm_backward", "rms_norm_forward_device", "rms_norm_backward_device", "RMSNormCache",
    "rope_forward", "rope_backward", "rope_forward_device", "rope_backward_device", "RopeCache",
]
