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
# # 1. Softmax and cross-entropy
#
# Every language model in npllm ends the same way: a vector of **logits** $z \in \mathbb{R}^V$, one real
# number per token of the vocabulary, turned into a probability distribution by the **softmax**, and
# scored against the token that really came next by the **cross-entropy**. This tutorial builds both,
# shows why the library computes them the way it does, derives the gradient
# $\partial L / \partial z = \mathrm{softmax}(z) - \mathrm{onehot}(y)$ and checks it numerically.
#
# $$
# \mathrm{softmax}(z)_i = \frac{e^{z_i}}{\sum_{j=1}^{V} e^{z_j}}, \qquad
# L(z, y) = -\log \mathrm{softmax}(z)_y .
# $$
#
# Run it as a script (`python 01_softmax_cross_entropy.py`) or open it as a notebook
# (`jupytext --to ipynb 01_softmax_cross_entropy.py`). Figures are written next to it as PNG files.

# %%
import os
import sys

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.gradcheck import check_op
from npllm.layers import (cross_entropy_backward, cross_entropy_forward, log_softmax, softmax,
                          softmax_backward, softmax_forward)
from npllm.plots import save_figure

FAST = os.environ.get("NPLLM_FAST") == "1"   # set by the test-suite; this tutorial is fast anyway
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The worked example
#
# A three-word vocabulary, `["I", "love", "you"]`. After reading "I", the model predicts the next word
# with probabilities $q = (0.1, 0.7, 0.2)$. The word that really came next is "love" (index 1), so the
# target distribution is the one-hot vector $p = (0, 1, 0)$ and the cross-entropy
#
# $$ H(p, q) = -\sum_i p_i \log q_i = -\log q_{\text{love}} = -\log 0.7 \approx 0.357 \text{ nats.} $$
#
# Only the probability given to the right word matters. A model never outputs $q$ directly: it outputs
# logits, and any logits whose softmax is $q$ will do — for instance $z = \log q$ (softmax undoes the log,
# up to a constant that cancels in the ratio).

# %%
vocab = ["I", "love", "you"]
q = np.array([0.1, 0.7, 0.2])
logits = np.log(q)                       # one choice of logits with softmax(logits) = q
target = np.array(vocab.index("love"))   # a 0-d integer array: one prediction, one target

probs, _ = softmax_forward(logits)
loss, ce_cache = cross_entropy_forward(logits, target)
print("softmax(log q) =", probs)
print(f"cross-entropy   = {float(loss):.6f}")
print(f"-log 0.7        = {-np.log(0.7):.6f}")
assert np.allclose(probs, q)
assert np.isclose(loss, -np.log(0.7))

# %% [markdown]
# Shifting every logit by the same constant changes nothing, because $e^{z_i + c} / \sum_j e^{z_j + c}
# = e^{z_i} / \sum_j e^{z_j}$:

# %%
for shift in (0.0, 5.0, -100.0):
    print(f"shift {shift:+7.1f}: softmax = {softmax(logits + shift)}")

# %% [markdown]
# ## Numerical stability
#
# Written literally, the formula overflows: $e^{1000}$ is `inf` in floating point, and `inf / inf` is
# `nan`. Here is the naive version a student might write first — *not* how npllm does it:

# %%
def naive_softmax(z):
    """The textbook formula, computed literally (overflows for large logits)."""
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


big = np.array([1000.0, 1001.0, 1002.0])
with np.errstate(over="ignore", invalid="ignore"):
    print("naive softmax  :", naive_softmax(big))
print("npllm softmax  :", softmax(big))

# %% [markdown]
# The library subtracts the row maximum first (the shift above, with $c = -\max_j z_j$): the largest
# exponent becomes $e^0 = 1$, nothing overflows, and the sum is at least 1, so nothing divides by zero.
#
# The loss needs $\log \mathrm{softmax}$, and taking the log of a probability that underflowed to 0 gives
# $-\infty$. `log_softmax` never forms the probabilities; it uses
# $\log \mathrm{softmax}(z)_i = z_i - m - \log \sum_j e^{z_j - m}$ with $m = \max_j z_j$:

# %%
far = np.array([-1000.0, 0.0])
with np.errstate(divide="ignore"):
    print("log(softmax(z)):", np.log(softmax(far)))     # the -1000 entry underflows to exp(...) = 0
print("log_softmax(z) :", log_softmax(far))
loss_far, _ = cross_entropy_forward(far, np.array(0))
print(f"cross-entropy with target 0: {float(loss_far):.1f} (finite: the model is just very wrong)")

# %% [markdown]
# ## The gradient: softmax minus one-hot
#
# Write $s = \mathrm{softmax}(z)$. Since $\log s_y = z_y - \log \sum_j e^{z_j}$,
#
# $$ \frac{\partial L}{\partial z_i} = -\mathbb{1}[i = y] + \frac{e^{z_i}}{\sum_j e^{z_j}}
#    = s_i - \mathbb{1}[i = y], \qquad \nabla_z L = s - \mathrm{onehot}(y). $$
#
# The gradient pushes the target's logit up by $1 - s_y$ and every other logit down by its probability;
# the entries sum to zero (raising all logits together changes nothing). For a batch, the loss is the
# *mean* over $N$ positions, so each row's gradient is divided by $N$.

# %%
dlogits = cross_entropy_backward(1.0, ce_cache)
onehot = np.eye(len(vocab))[target]
print("dL/dz           =", dlogits)
print("softmax - onehot=", probs - onehot)
assert np.allclose(dlogits, probs - onehot)

rng = np.random.default_rng(0)
batch_logits = rng.standard_normal((4, 5))        # N = 4 positions, V = 5
batch_targets = np.array([0, 3, 3, 1])
_, batch_cache = cross_entropy_forward(batch_logits, batch_targets)
expected = (softmax(batch_logits) - np.eye(5)[batch_targets]) / len(batch_targets)
assert np.allclose(cross_entropy_backward(1.0, batch_cache), expected)
print("batch gradient = (softmax - onehot) / N  ✓")

# %% [markdown]
# ## A picture
#
# Left: the prediction $q$, the target and the gradient for the worked example. Right: the loss
# $-\log q_y$ as the probability of the right word varies — it is 0 for a certain, correct model and
# grows without bound as $q_y \to 0$, which is why a confident wrong prediction is expensive. A model
# that guesses uniformly over $V$ tokens pays $\log V$, the number to beat at the start of training.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
positions = np.arange(len(vocab))
left.bar(positions - 0.27, q, width=0.27, label="prediction $q$")
left.bar(positions, onehot, width=0.27, label="target (one-hot)")
left.bar(positions + 0.27, dlogits, width=0.27, label=r"gradient $q - p$")
left.axhline(0, color="black", linewidth=0.8)
left.set_xticks(positions, vocab)
left.set_title('next word after "I"')
left.legend(fontsize=8)
p_target = np.linspace(0.01, 1.0, 200)
right.plot(p_target, -np.log(p_target))
right.scatter([0.7], [-np.log(0.7)], color="tab:red", zorder=3, label=r"$q_{love} = 0.7$: 0.357")
right.axhline(np.log(3), color="gray", linestyle="--", linewidth=1, label=r"uniform guess: $\log 3$")
right.set_xlabel("probability given to the right word")
right.set_ylabel("loss (nats)")
right.set_title("cross-entropy = $-\\log q_y$")
right.legend(fontsize=8)
save_figure(fig, "01_softmax_cross_entropy.png")

# %% [markdown]
# ## Check: the backward passes agree with numerical gradients
#
# `npllm.gradcheck.check_op` perturbs every input entry by $\pm\varepsilon$, recomputes the forward in
# float64 and compares the central difference with the analytic backward (tutorial 8 looks inside).
# A relative error near $10^{-10}$ means the derivation above and the code agree.

# %%
x = rng.standard_normal((3, 6))
targets = np.array([2, 0, 5])
ce_report = check_op(cross_entropy_forward, cross_entropy_backward, [x, targets])
softmax_report = check_op(softmax_forward, softmax_backward, [x])
print(ce_report)
print(softmax_report)
assert ce_report.passed and softmax_report.passed

# %% [markdown]
# ## Summary
#
# - softmax turns logits into probabilities; it is invariant to adding a constant to every logit, which
#   is exactly what makes the max-subtraction trick free.
# - cross-entropy against a one-hot target is $-\log$ (probability of the right token); for the worked
#   example, $-\log 0.7 \approx 0.357$ nats. Uniform guessing costs $\log V$.
# - compute $\log \mathrm{softmax}$ directly (`log_softmax`), never $\log(\mathrm{softmax})$.
# - the gradient with respect to the logits is $\mathrm{softmax}(z) - \mathrm{onehot}(y)$, divided by the
#   number of positions when the loss is a mean.
#
# ## Exercises
#
# 1. Derive the Jacobian of the softmax, $\partial s_i / \partial z_j = s_i(\mathbb{1}[i=j] - s_j)$, and
#    show that `softmax_backward` applies it without building the $V \times V$ matrix.
# 2. Divide the logits by a temperature $T$ before the softmax. Plot the distribution of the worked
#    example for $T = 0.5, 1, 2$. What happens as $T \to 0$ and $T \to \infty$? (Tutorial 6 samples text
#    with a temperature.)
# 3. `cross_entropy_forward` takes `ignore_index`: set one target of the batch above to `-100` and
#    confirm that the loss becomes the mean over the three remaining positions and that the ignored
#    row's gradient is exactly zero.
# 4. Label smoothing replaces the one-hot target by $(1-\alpha)\,\mathrm{onehot} + \alpha / V$. Derive the
#    gradient with respect to the logits and check it with `npllm.gradcheck.check_function`.
