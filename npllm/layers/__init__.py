"""The NumPy reference ops: pure ``*_forward`` / ``*_backward`` pairs with NamedTuple caches.

Contract (docs/architecture.md, "The op contract"): ``out, cache = name_forward(*inputs, **options)`` and
``grads = name_backward(dout, cache)`` returning one gradient per floating-point array input, in order.
Nothing is modified in place; ops compute in the input's dtype; batch first; weights are (D_in, D_out).
"""
from npllm.layers._validate import check_matmul_operands as _check_matmul_operands
from npllm.layers.additive_attention import (additive_attention_backward, additive_attention_forward,
                                             additive_attention_projected_backward,
                                             additive_attention_projected_forward)
from npllm.layers.activations import (gelu_backward, gelu_forward, relu_backward, relu_forward, sigmoid,
                                      sigmoid_backward, sigmoid_forward, silu_backward, silu_forward,
                                      tanh_backward, tanh_forward)
from npllm.layers.attention import (merge_heads, multi_head_attention_backward, multi_head_attention_forward,
                                    scaled_dot_product_attention_backward, scaled_dot_product_attention_forward,
                                    split_heads)
from npllm.layers.cross_entropy import cross_entropy_backward, cross_entropy_forward
from npllm.layers.dropout import dropout_backward, dropout_forward
from npllm.layers.embedding import embedding_backward, embedding_forward
from npllm.layers.gru import gru_backward, gru_forward, gru_step_backward, gru_step_forward, init_gru
from npllm.layers.layer_norm import layer_norm_backward, layer_norm_forward
from npllm.layers.linear import linear_backward, linear_forward
from npllm.layers.mlp import mlp_backward, mlp_forward
from npllm.layers.lstm import init_lstm, lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from npllm.layers.positional import sinusoidal_positions
from npllm.layers.rms_norm import rms_norm_backward, rms_norm_forward
from npllm.layers.rnn import init_rnn, rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward
from npllm.layers.rope import rope_backward, rope_forward
from npllm.layers.rope_attention import rope_attention_backward, rope_attention_forward
from npllm.layers.softmax import (log_softmax, log_softmax_backward, log_softmax_forward, softmax,
                                  softmax_backward, softmax_forward)
from npllm.layers.swiglu import swiglu_backward, swiglu_forward, swiglu_mlp_backward, swiglu_mlp_forward


def matmul(a, b):
    """a @ b with NumPy's semantics.  a (..., M, K) or (K,), b (..., K, N) or (K,) → (..., M, N) (a vector's
    axis dropped); float32/float64, batch axes broadcast, mixed dtypes promote.  The contract every
    backend's matmul keeps: ``npllm.layers._validate.check_matmul_operands``."""
    _check_matmul_operands(a, b)
    return a @ b


OPS = ("linear", "embedding", "tanh", "sigmoid", "relu", "gelu", "softmax", "log_softmax", "cross_entropy",
       "layer_norm", "dropout", "rnn_step", "rnn", "lstm_step", "lstm", "gru_step", "gru",
       "scaled_dot_product_attention", "multi_head_attention", "additive_attention", "mlp",
       "rms_norm", "silu", "swiglu", "swiglu_mlp", "rope", "rope_attention")
