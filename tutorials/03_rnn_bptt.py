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
# # 3. The vanilla RNN and backpropagation through time
#
# A recurrent network reads a sequence one step at a time and carries a **hidden state** $h_t$ that
# summarises everything it has read so far (Elman 1990):
#
# $$ h_t = \tanh(x_t W_x + h_{t-1} W_h + b), \qquad x_t \in \mathbb{R}^{B\times D},\; h_t \in \mathbb{R}^{B\times H}. $$
#
# The same weights are used at every step, so their gradient is a sum over steps, and the gradient
# reaching an early step has passed through every later one. This tutorial runs the RNN, walks through
# **backpropagation through time** (BPTT), shows how the repeated multiplication makes gradients
# vanish or explode, and uses npllm's per-time-step gradient check to locate a BPTT bug.

# %%
import inspect
import os
import sys

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.gradcheck import check_op
from npllm.layers import init_rnn, rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward
from npllm.plots import save_figure

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: shorter sequences
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## One step, then a sequence
#
# `rnn_step_forward(x, h_prev, Wx, Wh, b)` computes one $h_t$ and returns a cache for the backward;
# `rnn_forward` is literally a loop over it that stacks the states into `hs` of shape $(B, T, H)$.
# `init_rnn` draws the weights uniformly in $\pm 1/\sqrt{H}$, as PyTorch does.

# %%
rng = np.random.default_rng(0)
B, T, D, H = 2, 5, 3, 4
params = init_rnn(D, H, rng, dtype=np.float64)
x = rng.standard_normal((B, T, D))
h0 = np.zeros((B, H))

h1, _ = rnn_step_forward(x[:, 0], h0, params["Wx"], params["Wh"], params["b"])
hs, cache = rnn_forward(x, h0, params["Wx"], params["Wh"], params["b"])
print("h_1 from one step:", h1[0])
print("hs[:, 0] (same)  :", hs[0, 0])
print("hs shape         :", hs.shape, "(B, T, H)")
assert np.allclose(h1, hs[:, 0])

# %% [markdown]
# ## Backpropagation through time
#
# Let the loss depend on every state, with upstream gradients $\bar h_t = \partial L / \partial h_t$
# *from the layers above* (`dhs[:, t]`). The state $h_t$ also feeds $h_{t+1}$, so its total gradient is
#
# $$ \delta_t = \bar h_t + \frac{\partial L}{\partial h_t}\Big|_{\text{via } h_{t+1}}, \qquad
#    a_t = x_t W_x + h_{t-1} W_h + b, \qquad
#    \frac{\partial L}{\partial a_t} = \delta_t \odot (1 - h_t^2). $$
#
# From $\partial L / \partial a_t$, one step's backward gives
# $\partial L/\partial x_t = \frac{\partial L}{\partial a_t} W_x^\top$, the gradient passed to
# $h_{t-1}$, $\frac{\partial L}{\partial a_t} W_h^\top$, and the weight gradients
# $x_t^\top \frac{\partial L}{\partial a_t}$, $h_{t-1}^\top \frac{\partial L}{\partial a_t}$,
# $\sum_b \frac{\partial L}{\partial a_t}$ — summed over all $t$ because the weights are shared.
# So BPTT walks time **backwards**, adding the gradient arriving from step $t+1$ before differentiating
# step $t$. Here is the library's loop — read it against the equations:

# %%
print(inspect.getsource(rnn_backward))

# %% [markdown]
# ## Vanishing and exploding gradients
#
# Unrolling the recursion, the gradient that a loss at the last step $T$ sends back to step $t$ is a
# product of $T - t$ Jacobians,
#
# $$ \frac{\partial h_T}{\partial h_t} = \prod_{k=t+1}^{T} \frac{\partial h_k}{\partial h_{k-1}}
#    = \prod_{k=t+1}^{T} \mathrm{diag}(1 - h_k^2)\, W_h^\top . $$
#
# If the factors shrink vectors (largest singular value of $W_h$ times the tanh slope below 1), the
# product decays geometrically and step $t$ receives almost nothing: the network cannot learn long-range
# dependencies. If they stretch vectors, the product grows geometrically and one update can wreck the
# weights (the cure is gradient clipping, `npllm.optim.clip_grad_norm`). Bengio, Simard & Frasconi
# (1994) and Pascanu, Mikolov & Bengio (2013) analyse both.
#
# We make the effect visible with $W_h = s\,Q$ for a random orthogonal $Q$ (all singular values equal
# $s$), put a random loss on the last state only, and measure $\lVert \partial L / \partial x_t \rVert$
# at every step $t$ with `rnn_backward`.

# %%
B, T, D, H = 8, 40 if FAST else 60, 16, 64
x_long = rng.standard_normal((B, T, D))
Q, _ = np.linalg.qr(rng.standard_normal((H, H)))     # a random orthogonal matrix
Wx = rng.standard_normal((D, H)) / np.sqrt(D) * 0.5
b = np.zeros(H)
dlast = np.zeros((B, T, H))
dlast[:, -1] = rng.standard_normal((B, H))           # the loss reads only the last state

gradient_norms = {}
for scale in (0.5, 1.0, 1.5, 3.0):
    hs_long, long_cache = rnn_forward(x_long, np.zeros((B, H)), Wx, scale * Q, b)
    dx, *_ = rnn_backward(dlast, long_cache)
    gradient_norms[scale] = np.linalg.norm(dx, axis=(0, 2))      # one norm per time step
    print(f"s = {scale}:  |dL/dx_t| at t = 0: {gradient_norms[scale][0]:.2e},  at t = T-1: "
          f"{gradient_norms[scale][-1]:.2e},  mean |h| {np.abs(hs_long).mean():.2f}")

# %% [markdown]
# With $s = 0.5$ the first step receives a vanishing fraction of the last step's gradient (the
# printout above: many orders of magnitude); with $s = 3$ it receives far *more*. Note the tanh: large
# weights push $h$ towards $\pm 1$ where $1 - h^2$ is small, which damps the growth — that is why
# $s = 1.5$, not $s = 1$, is near the balance here.

# %% [markdown]
# ## A BPTT bug, located step by step
#
# The most common BPTT mistake is to forget the gradient arriving from the future: differentiating each
# step with `dhs[:, t]` alone. Here is that student version (built from the library's correct *step*
# backward, so the only error is the missing carry):

# %%
def buggy_rnn_backward(dhs, cache):
    """BPTT that forgets the gradient flowing into h_t from step t+1 (do not copy this)."""
    dx = np.empty(dhs.shape[:2] + (cache.steps[0].x.shape[1],))
    dWx = dWh = db = 0.0
    for t in reversed(range(dhs.shape[1])):
        dx[:, t], dh_prev, dWx_t, dWh_t, db_t = rnn_step_backward(dhs[:, t], cache.steps[t])   # bug
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, dh_prev, dWx, dWh, db


weights = init_rnn(3, 4, rng, dtype=np.float64)
bias = rng.standard_normal(4) * 0.1                  # non-zero (init_rnn starts at 0): exercise every term
small = [rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 4)), weights["Wx"], weights["Wh"], bias]
buggy_report = check_op(rnn_forward, buggy_rnn_backward, small, time_axis=1, op="buggy rnn")
print(buggy_report)

# %% [markdown]
# `check_op(..., time_axis=1)` also repeats the check with the loss taken from **one output step at a
# time**. With the loss on $h_0$ only there is nothing to carry, so the buggy backward is right; from
# $t = 1$ on, the gradient must travel back through the recurrence, and the check reports the first step
# where it disagrees. In a long sequence model, that pinpoints a missing term immediately.

# %%
correct_report = check_op(rnn_forward, rnn_backward, small, time_axis=1)
fig, (norms_axes, steps_axes) = plt.subplots(1, 2, figsize=(12, 4.2))
for scale, norms in gradient_norms.items():
    norms_axes.semilogy(norms, label=f"$W_h = {scale}\\,Q$")
norms_axes.set_xlabel("time step t")
norms_axes.set_ylabel(r"$\|\partial L / \partial x_t\|$ (loss on the last step)")
norms_axes.set_title("vanishing and exploding gradients in a tanh RNN")
norms_axes.legend()
steps = np.arange(len(correct_report.per_step))
steps_axes.semilogy(steps, np.maximum(correct_report.per_step, 1e-16), "o-", label="rnn_backward")
steps_axes.semilogy(steps, np.maximum(buggy_report.per_step, 1e-16), "s-", label="missing carry (bug)")
steps_axes.axhline(correct_report.tol, color="black", linestyle="--", linewidth=1, label="tolerance")
steps_axes.set_xlabel("output step t carrying the loss")
steps_axes.set_ylabel("relative error (analytic vs numerical)")
steps_axes.set_title("per-time-step gradient check")
steps_axes.legend()
save_figure(fig, "03_rnn_bptt.png")

# %% [markdown]
# ## Check: the RNN's backward passes agree with numerical gradients

# %%
step_report = check_op(rnn_step_forward, rnn_step_backward,
                       [small[0][:, 0], small[1], small[2], small[3], small[4]])
print(step_report)
print(correct_report)
assert step_report.passed and correct_report.passed
assert not buggy_report.passed and buggy_report.first_bad_step == 1

# %% [markdown]
# ## Summary
#
# - An RNN applies one step function with shared weights at every time step; `rnn_forward` is a loop
#   over `rnn_step_forward`.
# - BPTT walks time backwards: at each step, add the gradient flowing back from step $t+1$ to the
#   upstream gradient, differentiate the step, and sum the weight gradients over time.
# - The gradient reaching an early step is a product of per-step Jacobians $\mathrm{diag}(1-h^2) W_h^\top$:
#   it vanishes or explodes geometrically with the distance. Clipping tames explosions; vanishing needs
#   a different architecture — the LSTM of tutorial 4.
# - `check_op(..., time_axis=1)` checks each output step separately and names the first bad step.
#
# ## Exercises
#
# 1. Replace $Q$ by a Gaussian matrix $W_h \sim \mathcal{N}(0, \sigma^2/H)$. Which $\sigma$ gives a flat
#    gradient-norm curve, and how does it relate to the largest singular value (`np.linalg.svd`)?
# 2. Truncated BPTT: change the loop so the carried gradient is reset to zero every $k$ steps. Which
#    per-step errors does `check_op(..., time_axis=1)` now report, and why is it still used in practice?
# 3. Use `npllm.optim.clip_grad_norm` on the gradients of the $s = 3$ run. Does clipping change the
#    *direction* of the gradient?
# 4. Write `buggy_rnn_backward` variants that (a) use $1 - h_{t-1}^2$ instead of $1 - h_t^2$ and (b) forget
#    to sum `db` over the batch. What do the per-step errors look like for each?
