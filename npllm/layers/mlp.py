"""GPT-2's position-wise feed-forward block as one op:  y = GELU(x W_fc + b_fc) W_proj + b_proj.

It is exactly ``linear`` → ``gelu`` → ``linear`` (this reference calls those three ops), with the
weights laid out (in, out) as everywhere else: W_fc (C, 4C), W_proj (4C, C) in GPT-2. A backend may
fuse it: numba's keeps the (·, 4C) hidden activations in reused buffers instead of fresh arrays.
"""
from __future__ import annotations

from typing import NamedTuple

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape
from npllm.layers.activations import gelu_backward, gelu_forward
from npllm.layers.linear import check_linear_inputs, linear_backward, linear_forward


class MLPCache(NamedTuple):
    fc: object      # LinearCache of x W_fc + b_fc
    gelu: object    # GeluCache
    proj: object    # LinearCache of h W_proj + b_proj


def check_mlp_inputs(x, W_fc, b_fc, W_proj, b_proj, approximate) -> None:
    """Every argument's check, before any arithmetic (what the two linears and the GELU would check)."""
    check_linear_inputs(x, W_fc, b_fc)
    check_float("W_proj", W_proj, 2, "(M, C_out)")
    check_shape("W_proj", W_proj, (W_fc.shape[1], None))
    if b_proj is not None:
        check_float("b_proj", b_proj)
        check_shape("b_proj", b_proj, (W_proj.shape[1],))
    check_same_dtype(x=x, W_proj=W_proj, b_proj=b_proj)
    if approximate not in ("tanh", "none"):
        raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")


def mlp_forward(x, W_fc, b_fc, W_proj, b_proj, approximate="tanh"):
    """GELU(x W_fc + b_fc) W_proj + b_proj.  x (..., C), W_fc (C, M), b_fc (M,), W_proj (M, C_out),
    b_proj (C_out,) (biases may be None) → y (..., C_out), cache."""
    check_mlp_inputs(x, W_fc, b_fc, W_proj, b_proj, approximate)
    u, fc = linear_forward(x, W_fc, b_fc)
    h, gelu = gelu_forward(u, approximate)
    y, proj = linear_forward(h, W_proj, b_proj)
    return y, MLPCache(fc, gelu, proj)


def mlp_backward(dy, cache):
    """dy (..., C_out) → dx (..., C), dW_fc, db_fc, dW_proj, db_proj (a db is None without its bias)."""
    check_cache("cache", cache, MLPCache)
    dh, dW_proj, db_proj = linear_backward(dy, cache.proj)
    du = gelu_backward(dh, cache.gelu)
    dx, dW_fc, db_fc = linear_backward(du, cache.fc)
    return dx, dW_fc, db_fc, dW_proj, db_proj
