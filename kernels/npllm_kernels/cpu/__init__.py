"""Numba CPU kernels (``@njit``, ``cache=True``): the "numba" backend of :mod:`npllm.backend`.

Every public name here has exactly the name, signature and contract of the reference op in
:mod:`npllm.layers` it replaces; ``npllm.backend`` looks ops up by name in this module, and sends a
backward to this module when its cache class was defined here.  File stems mirror ``npllm/layers``.
Importing this package changes no process-wide state: :func:`configure_threads` selects Numba's
threading layer (see ``_threads``); call it once before the first parallel kernel. npllm's commands do
it through ``npllm.process.configure``.
"""
from npllm_kernels.cpu._threads import configure as configure_threads  # noqa: F401  (public: see above)
from npllm_kernels.cpu.matmul import matmul
from npllm_kernels.cpu.activations import gelu_backward, gelu_forward
from npllm_kernels.cpu.cross_entropy import cross_entropy_backward, cross_entropy_forward
from npllm_kernels.cpu.embedding import embedding_backward, embedding_forward
from npllm_kernels.cpu.layer_norm import layer_norm_backward, layer_norm_forward
from npllm_kernels.cpu.lstm import lstm_backward, lstm_forward
from npllm_kernels.cpu.mlp import mlp_backward, mlp_forward
from npllm_kernels.cpu.attention import (multi_head_attention_backward,
                                         multi_head_attention_forward, scaled_dot_product_attention_backward,
                                         scaled_dot_product_attention_forward)
from npllm_kernels.cpu.optim import adamw_update
from npllm_kernels.cpu.rms_norm import rms_norm_backward, rms_norm_forward
from npllm_kernels.cpu.rope_attention import rope_attention_backward, rope_attention_forward
from npllm_kernels.cpu.swiglu import (silu_backward, silu_forward, swiglu_backward, swiglu_forward,
                                      swiglu_mlp_backward, swiglu_mlp_forward)
