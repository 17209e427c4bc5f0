"""SwiGLU, the gated feed-forward block of Llama, Mistral and Qwen (Shazeer 2020, "GLU Variants Improve
Transformer", eq. 6 without biases):

    swiglu(gate, up) = SiLU(gate) ⊙ up                       SiLU(z) = z σ(z)
    swiglu_mlp(x)    = (SiLU(x W_gate) ⊙ (x W_up)) W_down

as Hugging Face's ``LlamaMLP``: ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with no biases.  The
weights are laid out (in, out) as everywhere in npllm: W_gate, W_up (C, I), W_down (I, C), I the
``intermediate_size``.  Backward of the product: dgate = dy ⊙ up ⊙ SiLU'(gate), dup = dy ⊙ SiLU(gate).
``swiglu_mlp`` is one op like ``mlp`` (linear → gate → linear), so a backend may fuse it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npllm.layers._validate import check_cache, check_float, check_same_dtype, check_shape, upstream
from npllm.layers.activations import silu_backward, silu_forward
from npllm.layers.linear import linear_backward, linear_forward


class SwiGLUCache(NamedTuple):
    up: np.ndarray          # (..., I)
    silu: object            # SiluCache of the gate
    activated: np.ndarray   # (..., I) SiLU(gate)


class SwiGLUMLPCache(NamedTuple):
    gate: object        # LinearCache of x W_gate
    up: object          # LinearCache of x W_up
    swiglu: object      # SwiGLUCache
    down: object        # LinearCache of h W_down


def swiglu_forward(gate, up):
    """SiLU(gate) ⊙ up.  gate (..., I), up (..., I) → y (..., I), cache."""
    check_float("gate", gate)
    check_float("up", up)
    check_shape("up", up, gate.shape)
    check_same_dtype(gate=gate, up=up)
    activated, silu = silu_forward(gate)
    return activated * up, SwiGLUCache(up, silu, activated)


def swiglu_backward(dy, cache):
    """dy (..., I) → dgate (..., I), dup (..., I)."""
    check_cache("cache", cache, SwiGLUCache)
    dy = upstream("dy", dy, cache.up)
    dgate = silu_backward(dy * cache.up, cache.silu)
    return dgate, dy * cache.activated


def check_swiglu_mlp_inputs(x, W_gate, W_up, W_down) -> None:
    """Every argument's check, before any arithmetic."""
    check_float("x", x)
    check_float("W_gate", W_gate, 2, "(C, I)")
    if x.ndim < 1 or x.shape[-1] != W_gate.shape[0]:
        raise ValueError(f"x's last dimension must equal W_gate's first (C = {W_gate.shape[0]}), "
                         f"got x {x.shape} and W_gate {W_gate.shape}")
    check_float("W_up", W_up, 2, "(C, I)")
    check_shape("W_up", W_up, W_gate.shape)
    check_float("W_down", W_down, 2, "(I, C_out)")
    check_shape("W_down", W_down, (W_gate.shape[1], None))
    check_same_dtype(x=x, W_gate=W_gate, W_up=W_up, W_down=W_down)


def swiglu_mlp_forward(x, W_gate, W_up, W_down):
    """(SiLU(x W_gate) ⊙ x W_up) W_down.  x (..., C), W_gate (C, I), W_up (C, I), W_down (I, C_out)
    → y (..., C_out), cache."""
    check_swiglu_mlp_inputs(x, W_gate, W_up, W_down)
    gate, gate_cache = linear_forward(x, W_gate, None)               # (..., I)
    up, up_cache = linear_forward(x, W_up, None)                     # (..., I)
    h, swiglu_cache = swiglu_forward(gate, up)                       # (..., I)
    y, down_cache = linear_forward(h, W_down, None)                  # (..., C_out)
    return y, SwiGLUMLPCache(gate_cache, up_cache, swiglu_cache, down_cache)


def swiglu_mlp_backward(dy, cache):
    """dy (..., C_out) → dx (..., C), dW_gate (C, I), dW_up (C, I), dW_down (I, C_out)."""
    check_cache("cache", cache, SwiGLUMLPCache)
    dh, dW_down, _ = linear_backward(dy, cache.down)
    dgate, dup = swiglu_backward(dh, cache.swiglu)
    dx_up, dW_up, _ = linear_backward(dup, cache.up)
    dx_gate, dW_gate, _ = linear_backward(dgate, cache.gate)
    return dx_gate + dx_up, dW_gate, dW_up, dW_down
