# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. The LSTM: gates and a cell that carries gradients
#
# Tutorial 3 ended with gradients that vanish geometrically through a tanh RNN. The **long short-term
# memory** (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) adds a second
# state, the **cell** $c_t$, updated *additively* and controlled by gates. One step computes
# $a = x_t W_x + h_{t-1} W_h + b \in \mathbb{R}^{B \times 4H}$, split into four blocks in PyTorch's order
# $i, f, g, o$:
#
# $$
# \begin{aligned}
# i &= \sigma(a_i) &&\text{input gate: how much of the candidate to write}\\
# f &= \sigma(a_f) &&\text{forget gate: how much of the old cell to keep}\\
# g &= \tanh(a_g) &&\text{candidate values}\\
# o &= \sigma(a_o) &&\text{output gate: how much of the cell to show}\\
# c_t &= f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t).
# \end{aligned}
# $$

# %%
import os
import sys

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.gradcheck import check_op
from npllm.layers import (init_lstm, init_rnn, lstm_backward, lstm_forward, lstm_step_backward,
                          lstm_step_forward, rnn_backward, rnn_forward)
from npllm.plots import save_figure

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: shorter sequences
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## One step
#
# The weights pack the four gates side by side: $W_x$ is $(D, 4H)$, $W_h$ is $(H, 4H)$, $b$ is $(4H,)$.
# `init_lstm` draws them uniformly in $\pm 1/\sqrt{H}$ and sets the forget-gate bias to 1 (we will see
# why). The step's cache keeps the gate activations, which the backward needs — and which we can read.

# %%
rng = np.random.default_rng(0)
B, D, H = 2, 3, 4
params = init_lstm(D, H, rng, dtype=np.float64)
print("bias blocks i | f | g | o:", params["b"].reshape(4, H))
x = rng.standard_normal((B, D))
h_prev, c_prev = rng.standard_normal((B, H)), rng.standard_normal((B, H))
h, c, step_cache = lstm_step_forward(x, h_prev, c_prev, params["Wx"], params["Wh"], params["b"])
print("input gate i :", step_cache.i[0])
print("forget gate f:", step_cache.f[0], "(the bias of 1 shifts them up: σ(1) ≈ 0.73)")
print("candidate g  :", step_cache.g[0])
print("output gate o:", step_cache.o[0])
assert np.allclose(c, step_cache.f * c_prev + step_cache.i * step_cache.g)
assert np.allclose(h, step_cache.o * np.tanh(c))

# %% [markdown]
# ## The backward of one step
#
# Go through the equations in reverse. With upstream gradients $\bar h$ and $\bar c$ (the cell gets
# gradient from the next step *and* through $h = o \tanh c$):
#
# $$
# \begin{aligned}
# \bar o &= \bar h \odot \tanh c_t, &
# \bar c_t &\mathrel{+}= \bar h \odot o \odot (1 - \tanh^2 c_t),\\
# \bar i &= \bar c_t \odot g, \quad \bar f = \bar c_t \odot c_{t-1}, \quad \bar g = \bar c_t \odot i, &
# \bar c_{t-1} &= \bar c_t \odot f,
# \end{aligned}
# $$
#
# then through the nonlinearities ($\sigma' = \sigma(1-\sigma)$, $\tanh' = 1 - \tanh^2$) to
# $\bar a$, and $\bar x = \bar a W_x^\top$, $\bar h_{t-1} = \bar a W_h^\top$,
# $\bar W_x = x^\top \bar a$, $\bar W_h = h_{t-1}^\top \bar a$, $\bar b = \sum_{\text{batch}} \bar a$.
#
# The key line is $\bar c_{t-1} = \bar c_t \odot f$: along the cell, the gradient is multiplied by the
# forget gate only — no weight matrix, no squashing derivative. With $f \approx 1$ it passes back many
# steps almost intact (the "constant error carousel").

# %%
dh, dc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
dx, dh_prev, dc_prev, dWx, dWh, db = lstm_step_backward(dh, dc, step_cache)
dc_total = dc + dh * step_cache.o * (1 - np.tanh(c) ** 2)
assert np.allclose(dc_prev, dc_total * step_cache.f)
print("dc_prev == (dc + dh * o * (1 - tanh(c)^2)) * f  ✓")

# %% [markdown]
# ## Gradient flow: LSTM against RNN
#
# Same experiment as in tutorial 3: a loss on the last hidden state only, and the norm of the gradient
# reaching each input $x_t$. Both networks use their standard initialisation (`init_rnn`, `init_lstm`).
# For the LSTM we also try forget-gate biases of 0 and 3 to see what the bias buys.

# %%
B, T, D, H = 8, 40 if FAST else 60, 16, 64
x_seq = rng.standard_normal((B, T, D))
zeros = np.zeros((B, H))
dhs = np.zeros((B, T, H))
dhs[:, -1] = rng.standard_normal((B, H))             # the loss reads only the last hidden state

rnn_params = init_rnn(D, H, rng, dtype=np.float64)
_, rnn_cache = rnn_forward(x_seq, zeros, rnn_params["Wx"], rnn_params["Wh"], rnn_params["b"])
norms = {"RNN": np.linalg.norm(rnn_backward(dhs, rnn_cache)[0], axis=(0, 2))}

lstm_params = init_lstm(D, H, rng, dtype=np.float64)
forget_gates = {}
for forget_bias in (0.0, 1.0, 3.0):
    b = lstm_params["b"].copy()
    b[H:2 * H] = forget_bias
    _, _, lstm_cache = lstm_forward(x_seq, zeros, zeros, lstm_params["Wx"], lstm_params["Wh"], b)
    dx_seq = lstm_backward(dhs, None, lstm_cache)[0]   # None: no gradient on the cell states from above
    name = f"LSTM, forget bias {forget_bias:g}"
    norms[name] = np.linalg.norm(dx_seq, axis=(0, 2))
    forget_gates[name] = np.concatenate([step.f.ravel() for step in lstm_cache.steps])

for name, per_step in norms.items():
    print(f"{name:<24} |dL/dx_0| / |dL/dx_(T-1)| = {per_step[0] / per_step[-1]:.1e}")

# %%
colours = dict(zip(norms, ["black", "tab:blue", "tab:orange", "tab:green"]))   # the same in both panels
fig, (flow, gates) = plt.subplots(1, 2, figsize=(12, 4.2))
for name, per_step in norms.items():
    flow.semilogy(per_step, label=name, color=colours[name], linestyle="--" if name == "RNN" else "-")
flow.set_xlabel("time step t")
flow.set_ylabel(r"$\|\partial L / \partial x_t\|$ (loss on the last step)")
flow.set_title("gradient reaching each step, at initialisation")
flow.legend()
for name, values in forget_gates.items():
    gates.hist(values, bins=40, range=(0, 1), alpha=0.6, label=name, color=colours[name])
gates.set_xlabel("forget gate value f")
gates.set_ylabel("count (all units, steps, batch)")
gates.set_title("forget gates at initialisation")
gates.legend()
save_figure(fig, "04_lstm_gradient_flow.png")

# %% [markdown]
# With a forget bias of 0, the forget gates sit around $\sigma(0) = 1/2$ and the cell halves the gradient
# at every step — no better than the RNN. A bias of 1 moves them to about $0.73$, and 3 to about
# $0.95$: the gradient now reaches the first steps. That is why `init_lstm` sets the forget bias to 1
# (Gers et al. 2000; Jozefowicz et al. 2015). Training can then learn *when* to forget.

# %% [markdown]
# ## Check: the LSTM's backward passes agree with numerical gradients
#
# `lstm_forward` returns both the hidden states and the cell states, so `check_op` puts a random
# upstream gradient on each; `time_axis=1` repeats the check one output step at a time.

# %%
small = init_lstm(3, 4, rng, dtype=np.float64)
inputs = [rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4)),
          small["Wx"], small["Wh"], small["b"]]
step_report = check_op(lstm_step_forward, lstm_step_backward, [inputs[0][:, 0], *inputs[1:]])
sequence_report = check_op(lstm_forward, lstm_backward, inputs, time_axis=1)
print(step_report)
print(sequence_report)
assert step_report.passed and sequence_report.passed

# %% [markdown]
# ## Summary
#
# - The LSTM keeps a cell $c_t = f \odot c_{t-1} + i \odot g$ next to the hidden state, and three
#   sigmoid gates decide what to forget, what to write and what to show.
# - Along the cell, the backward multiplies the gradient by $f$ only, so with $f$ near 1 it survives
#   many steps — the RNN multiplies by $\mathrm{diag}(1-h^2)W_h^\top$ instead.
# - The forget-gate bias of 1 starts training in the remembering regime.
#
# ## Exercises
#
# 1. Derive $\bar a_f$ and $\bar a_i$ by hand and compare with `lstm_step_backward`'s source
#    (`inspect.getsource`).
# 2. Put a gradient on the *cell* states too (`dcs` instead of `None`): how do the curves change?
# 3. The GRU (`npllm.layers.gru_forward`) has no separate cell. Repeat the experiment with
#    `init_gru` and `gru_backward`; where does its update gate $z$ play the role of $f$?
# 4. Peephole connections let the gates see $c_{t-1}$. Add them to a copy of the step functions and
#    check your backward with `npllm.gradcheck.check_op`.
