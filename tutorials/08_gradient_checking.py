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
# # 8. Gradient checking as an experiment
#
# Every backward pass in npllm is written by hand, and every one is tested the same way: compare it with
# a **numerical gradient** from finite differences. This tutorial treats the check itself as the object
# of study. How small should the step $\varepsilon$ be? Why does npllm check in float64? What does a
# wrong backward look like in the report — and what does a *right* one that fails look like?
#
# For a scalar loss $L(x)$ and an input entry $x_i$, the central difference is
#
# $$ \frac{\partial L}{\partial x_i} \approx \frac{L(x + \varepsilon e_i) - L(x - \varepsilon e_i)}{2\varepsilon}, $$
#
# compared with the analytic gradient $a$ through the **relative error**
# $\lVert a - n \rVert / (\lVert a \rVert + \lVert n \rVert)$, which does not care about the gradient's scale.

# %%
import os
import sys

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.gradcheck import DEFAULT_EPS, DEFAULT_TOL, check_op, numerical_gradient, relative_error
from npllm.layers import (layer_norm_backward, layer_norm_forward, linear_backward, linear_forward,
                          relu_backward, relu_forward)
from npllm.plots import plot_gradcheck_errors, save_figure

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: fewer step sizes
np.set_printoptions(precision=3)


def show_png(path):
    """Report a PNG written by npllm.plots; in a notebook, also show it inline."""
    print(f"saved {path}")
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display
        display(Image(filename=str(path)))


# %% [markdown]
# ## Two errors that pull in opposite directions
#
# Taylor-expanding $L(x \pm \varepsilon e_i)$, the even terms cancel and the central difference is off by
# the **truncation error** $\tfrac{\varepsilon^2}{6} L'''$: smaller steps are better. But $L$ is computed in
# floating point with relative precision $u$ ($1.1\times10^{-16}$ in float64, $6\times10^{-8}$ in float32),
# so each evaluation carries an error of about $u\,|L|$, and dividing by $2\varepsilon$ turns that into a
# **round-off error** of about $u\,|L| / \varepsilon$: smaller steps are worse. The total
#
# $$ \text{error}(\varepsilon) \approx \frac{\varepsilon^2}{6}\,|L'''| + \frac{u\,|L|}{\varepsilon} $$
#
# is smallest near $\varepsilon^* \sim u^{1/3}$, about $10^{-5}$ in float64 (npllm uses $10^{-6}$) and
# $4\times10^{-3}$ in float32. The one-sided difference $(L(x+\varepsilon e_i) - L(x))/\varepsilon$ has a
# truncation error of order $\varepsilon$, so its best step is $\sim u^{1/2}$ and its best error is much worse.
#
# The experiment: a layer norm with a random upstream gradient $\bar y$, loss $L = \sum y \odot \bar y$,
# analytic gradient from `layer_norm_backward` in float64 (the ground truth), and numerical gradients for
# a sweep of $\varepsilon$ in float64 and float32.

# %%
rng = np.random.default_rng(0)
x64 = rng.standard_normal((4, 8))
gamma64, beta64 = rng.standard_normal(8), rng.standard_normal(8)
dy64 = rng.standard_normal((4, 8))
y64, cache64 = layer_norm_forward(x64, gamma64, beta64)
analytic = layer_norm_backward(dy64, cache64)[0]             # dL/dx, float64


def loss_of(x, gamma, beta, dy):
    """A function of no arguments returning L = Σ layer_norm(x) ⊙ dy in x's dtype (reads x each call)."""
    return lambda: np.sum(layer_norm_forward(x, gamma, beta)[0] * dy)


def forward_difference(f, x, eps):
    """One-sided (L(x + ε e_i) − L(x)) / ε for every entry — a student version for comparison."""
    grad, base, flat = np.empty(x.size), float(f()), x.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        grad[i] = (float(f()) - base) / eps
        flat[i] = original
    return grad.reshape(x.shape)


x32 = x64.astype(np.float32)
f64 = loss_of(x64, gamma64, beta64, dy64)
f32 = loss_of(x32, gamma64.astype(np.float32), beta64.astype(np.float32), dy64.astype(np.float32))
epsilons = np.logspace(-12, -1, 12 if FAST else 34)
sweep = {"central, float64": [], "one-sided, float64": [], "central, float32": []}
for eps in epsilons:
    sweep["central, float64"].append(relative_error(analytic, numerical_gradient(f64, x64, eps)))
    sweep["one-sided, float64"].append(relative_error(analytic, forward_difference(f64, x64, eps)))
    sweep["central, float32"].append(relative_error(analytic, numerical_gradient(f32, x32, eps)))
for name, errors in sweep.items():
    best = int(np.argmin(errors))
    print(f"{name:<20} best relative error {errors[best]:.1e} at eps = {epsilons[best]:.0e}")

# %%
fig, axes = plt.subplots(figsize=(7.5, 4.8))
for name, errors in sweep.items():
    axes.loglog(epsilons, errors, "o-", markersize=3, label=name)
guide = epsilons[(epsilons > 1e-4) & (epsilons < 1e-1)]
axes.loglog(guide, 0.3 * guide ** 2, "k:", linewidth=1, label=r"slope 2: truncation $\propto \varepsilon^2$")
tiny = epsilons[epsilons < 1e-7]
axes.loglog(tiny, 1e-16 / tiny, "k--", linewidth=1, label=r"slope −1: round-off $\propto u/\varepsilon$")
axes.axvline(DEFAULT_EPS, color="gray", linewidth=1)
axes.axhline(DEFAULT_TOL, color="tab:red", linewidth=1, linestyle="-.", label="npllm's tolerance 1e-7")
axes.text(DEFAULT_EPS * 1.3, 2e-1, "npllm's ε", color="gray", fontsize=8)
axes.set_xlabel(r"step $\varepsilon$")
axes.set_ylabel("relative error vs analytic gradient")
axes.set_title("finite differences on layer_norm: truncation vs round-off")
axes.set_ylim(1e-12, 2)
axes.legend(fontsize=8, loc="lower left")
save_figure(fig, "08_gradcheck_epsilon.png")

# %% [markdown]
# Read the plot from right to left: the error first falls with slope 2 (central) or 1 (one-sided)
# while truncation dominates, reaches a floor, then rises with slope $-1$ as round-off takes over. The
# float32 curve reaches its floor only at a large step and stays five or more orders of magnitude above
# float64's — too coarse for a tolerance that must tell a subtle bug from rounding, and at such large
# steps any curvature (or kink) of the function shows up as error. Below $\varepsilon \approx 10^{-8}$,
# float32 cannot even tell $x + \varepsilon$ from $x$: the numerical gradient is 0 and the relative error 1.
# That is why `check_op` copies float inputs to **float64** before differentiating, and why the ops are
# written to run in their input's dtype.

# %% [markdown]
# ## What a wrong backward looks like
#
# Below are student versions of `layer_norm_backward` that each drop or change one term of the correct
#
# $$ \bar x = \frac{1}{\sigma}\Big(g - \mathrm{mean}(g) - \hat x\, \mathrm{mean}(g \odot \hat x)\Big), \qquad g = \bar y \odot \gamma, $$
#
# a linear backward that multiplies by $W$ instead of $W^\top$ (a shape-compatible mistake when $W$ is
# square), and the library's *correct* ReLU checked at inputs sitting on its kink.

# %%
def drop_mean_term(dy, cache):
    """layer_norm backward without − mean(g): as if the mean did not depend on x."""
    g = dy * cache.gamma
    dx = (g - cache.xhat * (g * cache.xhat).mean(axis=-1, keepdims=True)) * cache.rstd
    return dx, (dy * cache.xhat).sum(axis=0), dy.sum(axis=0)


def drop_variance_term(dy, cache):
    """layer_norm backward without − x̂ mean(g x̂): as if the variance did not depend on x."""
    g = dy * cache.gamma
    dx = (g - g.mean(axis=-1, keepdims=True)) * cache.rstd
    return dx, (dy * cache.xhat).sum(axis=0), dy.sum(axis=0)


def untransposed_weight(dy, cache):
    """linear backward with dx = dy @ W instead of dy @ Wᵀ."""
    dx, dW, db = linear_backward(dy, cache)
    return dy @ cache.W, dW, db


ln_inputs = [x64, gamma64, beta64]
square = [rng.standard_normal((5, 6)), rng.standard_normal((6, 6)), rng.standard_normal(6)]
on_the_kink = rng.choice([-1.0, 1.0], (4, 8)) * 10.0 ** rng.uniform(-9, -7, (4, 8))   # |x| < eps
cases = {
    "layer_norm (correct)": (layer_norm_forward, layer_norm_backward, ln_inputs),
    "no mean term": (layer_norm_forward, drop_mean_term, ln_inputs),
    "no variance term": (layer_norm_forward, drop_variance_term, ln_inputs),
    "linear (correct)": (linear_forward, linear_backward, square),
    "dy @ W, not Wᵀ": (linear_forward, untransposed_weight, square),
    "relu near its kink": (relu_forward, relu_backward, [on_the_kink]),
}
reports = {name: check_op(forward, backward, inputs, op=name) for name, (forward, backward, inputs) in cases.items()}
for name, report in reports.items():
    worst = max(report.results, key=lambda r: r.relative_error)
    print(f"{name:<22} {'PASS' if report.passed else 'FAIL'}  worst input {worst.name:<6} "
          f"relative error {worst.relative_error:.1e}")
print()
print(reports["no variance term"])

# %%
show_png(plot_gradcheck_errors(([name for name in reports], [r.max_error for r in reports.values()]),
                               "08_gradcheck_bugs.png", tol=DEFAULT_TOL,
                               title="relative error of correct and buggy backward passes"))

# %% [markdown]
# How to read a report:
#
# - **$\sim 10^{-10}$ and below**: correct (float64 round-off).
# - **$10^{-7}$ to $10^{-4}$**: suspicious — look for a kink, a discontinuity, a too-large $\varepsilon$,
#   or tiny gradients whose absolute error is round-off.
# - **$10^{-2}$ to 1**: a real bug. Note *which* input fails: the missing-variance bug breaks `x` only,
#   because `gamma` and `beta` have their own (correct) lines; a relative error of exactly 1 means one
#   side is zero — a gradient that was never propagated.
#
# The ReLU case is a false alarm: within $\varepsilon$ of 0, the central difference straddles the kink and
# measures a slope of about $1/2$, while the subgradient the backward returns is 0 or 1. Gradient checks
# should use inputs away from non-differentiable points (npllm's test-suite does), and a failure there is
# not evidence of a bug.

# %% [markdown]
# ## Check: the reference passes, the bugs are caught

# %%
print(reports["layer_norm (correct)"])
assert reports["layer_norm (correct)"].passed and reports["linear (correct)"].passed
assert not any(reports[name].passed for name in ("no mean term", "no variance term", "dy @ W, not Wᵀ"))
assert min(sweep["central, float64"]) < 1e-9 < min(sweep["central, float32"])

# %% [markdown]
# ## Summary
#
# - The central difference has truncation error $O(\varepsilon^2)$ and round-off error $O(u/\varepsilon)$;
#   the best $\varepsilon$ is near $u^{1/3}$. One-sided differences are markedly worse.
# - In float32 the best achievable relative error is orders of magnitude worse, and only at a large step,
#   so gradient checks run in float64.
# - A missing term gives relative errors of $10^{-2}$–$1$ on the inputs it affects; kinks (ReLU at 0) give
#   false alarms; tiny gradients need noisier, larger inputs (tutorial 6 adds noise to GPT-2's init).
#
# ## Exercises
#
# 1. Repeat the sweep for `gelu_forward` with `approximate="none"` and `"tanh"`. Where is each curve's
#    minimum, and does the optimal $\varepsilon$ depend on $|L'''|$ as the formula says?
# 2. Richardson extrapolation combines steps $\varepsilon$ and $2\varepsilon$ to cancel the $\varepsilon^2$ term:
#    $(4 D(\varepsilon) - D(2\varepsilon))/3$. Implement it and add it to the plot.
# 3. Complex-step differentiation, $\mathrm{Im}\,L(x + i\varepsilon)/\varepsilon$, has no subtraction and
#    hence no round-off error. Why can it not be used on layer norm as written (hint: `np.abs`, `max`)?
# 4. Write a GRU step backward that swaps the roles of $z$ and $1 - z$, and look at its `check_op` report
#    with `time_axis` on `gru_forward`.
