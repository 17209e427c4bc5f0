"""Shape checks shared by the recurrent layers (RNN, LSTM, GRU)."""
from __future__ import annotations

from npllm.layers._validate import check_float, check_same_dtype, check_shape


def check_step(x, h_prev, Wx, Wh, biases: dict, n_gates: int, c_prev=None):
    """Validate one time step: x (B, D), h_prev (B, H), Wx (D, G·H), Wh (H, G·H), each bias (G·H,)."""
    check_float("x", x, 2, "(B, D)")
    check_float("h_prev", h_prev, 2, "(B, H)")
    check_float("Wx", Wx, 2, f"(D, {n_gates}H)" if n_gates > 1 else "(D, H)")
    check_float("Wh", Wh, 2, f"(H, {n_gates}H)" if n_gates > 1 else "(H, H)")
    B, D = x.shape
    H = h_prev.shape[1]
    check_shape("h_prev", h_prev, (B, None))
    check_shape("Wx", Wx, (D, n_gates * H))
    check_shape("Wh", Wh, (H, n_gates * H))
    if c_prev is not None:
        check_float("c_prev", c_prev, 2, "(B, H)")
        check_shape("c_prev", c_prev, (B, H))
    for name, b in biases.items():
        check_float(name, b)
        check_shape(name, b, (n_gates * H,))
    check_same_dtype(x=x, h_prev=h_prev, c_prev=c_prev, Wx=Wx, Wh=Wh, **biases)


def check_sequence(x, h0, Wx, Wh, biases: dict, n_gates: int, c0=None):
    """Validate a whole sequence: x (B, T, D) with T ≥ 1, h0 (B, H) and the step's weights."""
    check_float("x", x, 3, "(B, T, D)")
    if x.shape[1] < 1:
        raise ValueError(f"x must hold at least one time step, got shape {x.shape}")
    check_float("h0", h0, 2, "(B, H)")
    check_shape("h0", h0, (x.shape[0], None))
    if c0 is not None:
        check_float("c0", c0, 2, "(B, H)")
        check_shape("c0", c0, h0.shape)
    check_step(x[:, 0], h0, Wx, Wh, biases, n_gates, c0)
