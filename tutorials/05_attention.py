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
# # 5. Scaled dot-product and multi-head attention
#
# An RNN squeezes the past into one state vector. **Attention** lets every position look at every
# other position directly and take a weighted average of what it finds (Bahdanau et al. 2015; Vaswani
# et al. 2017). Each position emits a query $q$, a key $k$ and a value $v$; the query is compared with
# every key, and the softmax of the scores weights the values:
#
# $$ \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V, $$
#
# with $Q \in \mathbb{R}^{T_q \times d_k}$, $K \in \mathbb{R}^{T_k \times d_k}$, $V \in \mathbb{R}^{T_k \times d_v}$ per
# batch element and head, the softmax taken **over the keys** (each row sums to 1), and the scale
# $1/\sqrt{d_k}$ with $d_k$ the query/key width. This tutorial checks the formula against versions that
# look almost right, shows why the scale is $1/\sqrt{d_k}$, builds causal and padding masks, and looks
# inside multi-head attention.

# %%
import os
import sys

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.gradcheck import check_op
from npllm.layers import (multi_head_attention_backward, multi_head_attention_forward,
                          scaled_dot_product_attention_backward, scaled_dot_product_attention_forward,
                          softmax)
from npllm.plots import save_figure

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: fewer samples in the experiment
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## The formula, and four ways to get it wrong
#
# npllm's `scaled_dot_product_attention_forward(q, k, v, mask=None, causal=False)` takes
# $(B, H, T, d)$ arrays — batch, heads, time, width — and returns the output and a cache holding the
# attention weights (`cache.probs`). Below are versions a student might write; each is off in one
# place. Compare them with the library on the same input: the error and whether rows of the weights
# still sum to 1 tell the story.

# %%
rng = np.random.default_rng(0)
B, H, T, d = 1, 1, 6, 64
q, k, v = (rng.standard_normal((B, H, T, d)) for _ in range(3))
out, cache = scaled_dot_product_attention_forward(q, k, v)


def no_scale(q, k, v):
    """softmax(Q Kᵀ) V: forgets the 1/√d."""
    weights = softmax(q @ k.swapaxes(-1, -2))
    return weights @ v, weights


def scale_by_d(q, k, v):
    """softmax(Q Kᵀ / d) V: divides by d instead of √d."""
    weights = softmax(q @ k.swapaxes(-1, -2) / q.shape[-1])
    return weights @ v, weights


def softmax_over_queries(q, k, v):
    """Normalises each *column* (over queries) instead of each row (over keys)."""
    weights = softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]), axis=-2)
    return weights @ v, weights


def mask_after_softmax(q, k, v):
    """Causal attention that zeroes the future *after* the softmax, without renormalising."""
    weights = softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]))
    weights = weights * np.tril(np.ones((q.shape[-2], k.shape[-2])))
    return weights @ v, weights


causal_out, causal_cache = scaled_dot_product_attention_forward(q, k, v, causal=True)
print(f"{'version':<24}{'max |out - library|':>20}{'row sums of the weights':>40}")
for wrong, reference in ((no_scale, out), (scale_by_d, out), (softmax_over_queries, out),
                         (mask_after_softmax, causal_out)):
    wrong_out, weights = wrong(q, k, v)
    row_sums = weights.sum(axis=-1)[0, 0]
    print(f"{wrong.__name__:<24}{np.abs(wrong_out - reference).max():>20.3f}   {np.array2string(row_sums, precision=2)}")
print(f"{'library':<24}{0.0:>20.3f}   {np.array2string(cache.probs.sum(axis=-1)[0, 0], precision=2)}")

# %% [markdown]
# The last two are easy to spot: their weights no longer sum to 1 over the keys. The first two still
# produce valid distributions — just the wrong ones — so only a comparison with a reference catches them.
# Masking must happen **before** the softmax, by setting disallowed scores to $-\infty$ (so
# $e^{-\infty} = 0$ and the remaining weights renormalise).

# %% [markdown]
# ## Why $\sqrt{d_k}$?
#
# If the entries of $q$ and $k$ are independent with mean 0 and variance 1, their dot product
# $q \cdot k = \sum_{i=1}^{d_k} q_i k_i$ has mean 0 and variance $d_k$. The scores' spread therefore grows
# like $\sqrt{d_k}$; dividing by $\sqrt{d_k}$ brings it back to 1 whatever the width. Unscaled, the
# softmax of wide heads saturates to one-hot rows (entropy near 0) whose gradient is almost zero —
# training stalls. Dividing by $d_k$ overcorrects: the scores shrink like $1/\sqrt{d_k}$ and attention
# becomes uniform (entropy near $\log T_k$), unable to pick anything out.

# %%
def mean_entropy(scores):
    """Mean entropy (nats) of the softmax rows of scores (..., Tk)."""
    p = softmax(scores)
    return float(-(p * np.log(np.maximum(p, 1e-300))).sum(axis=-1).mean())


widths = [4, 16, 64, 256, 1024]
Tk, n_rows = 32, 64 if FAST else 256
entropies = {"$1/\\sqrt{d}$ (correct)": [], "no scale": [], "$1/d$": []}
for width in widths:
    qs = rng.standard_normal((n_rows, width))
    ks = rng.standard_normal((Tk, width))
    raw = qs @ ks.T                                             # (n_rows, Tk), variance ≈ width
    for name, divisor in zip(entropies, (np.sqrt(width), 1.0, width)):
        entropies[name].append(mean_entropy(raw / divisor))
    print(f"d = {width:5d}: std of raw scores {raw.std():6.1f} (√d = {np.sqrt(width):5.1f})")

# %% [markdown]
# ## Masks
#
# A **causal** mask lets query $i$ see keys $j \le i$ only, so a language model cannot peek at the token
# it must predict; with a key/value cache ($T_k > T_q$) the library shifts the diagonal so the new
# queries see all the past. A **padding** mask (`mask`, a boolean array broadcastable to
# $(B, H, T_q, T_k)$, True = may attend) hides padding keys. Masks combine by AND, and a query left with
# no key at all outputs zeros rather than NaN.

# %%
pad = np.array([True, True, True, True, False, False])          # the last two keys are padding
masked_out, masked_cache = scaled_dot_product_attention_forward(q, k, v, mask=pad[None, None, None, :],
                                                                causal=True)
print("causal + padding weights (rows = queries):\n", masked_cache.probs[0, 0])
assert np.allclose(masked_cache.probs[0, 0][:, 4:], 0.0)        # padding never attended
assert np.allclose(np.triu(masked_cache.probs[0, 0], 1), 0.0)   # no future key attended

nothing = np.zeros((1, 1, T, T), dtype=bool)
nothing[..., 1:, :] = True                                      # query 0 may attend to nothing
empty_out, _ = scaled_dot_product_attention_forward(q, k, v, mask=nothing)
print("output of a query with no allowed key:", empty_out[0, 0, 0, :4], "... (zeros, not NaN)")

# %% [markdown]
# ## Multi-head attention, and what heads can do
#
# One attention computes one weighted average per position. **Multi-head** attention (GPT-2's layout)
# projects $x \in \mathbb{R}^{B\times T\times C}$ to queries, keys and values with one matrix
# $W_{qkv} \in \mathbb{R}^{C\times 3C}$ laid out $[q \mid k \mid v]$, splits each into $n_\text{head}$ heads of
# width $C / n_\text{head}$ (`split_heads`), attends in every head independently, concatenates the heads
# back (`merge_heads`) and mixes them with $W_\text{out}$.
#
# To see that heads can learn different jobs, we *set* the weights of a two-head layer by hand. Each
# token's input vector is a one-hot of its word next to a one-hot of its position. Head 0's query at
# position $t$ matches the key at position $t - 1$: a **previous-token head**. Head 1's query matches keys
# holding the same word: a **same-word head** (the second "the" finds the first). Trained transformers
# contain heads like both (Olsson et al. 2022, "induction heads").

# %%
sentence = "the cat sat on the mat because the cat was tired".split()
words = sorted(set(sentence))
T, W_len = len(sentence), len(words)
n_head, head_size = 2, 16
C = n_head * head_size                                       # 32 ≥ words + positions
x = np.zeros((1, T, C))
for t, word in enumerate(sentence):
    x[0, t, words.index(word)] = 1.0                         # word one-hot in columns [0, W_len)
    x[0, t, W_len + t] = 1.0                                 # position one-hot after it

sharpness = 32.0        # query scale: the score of a match is 32/√16 = 8, so e^8 outweighs ten non-matches
W_qkv = np.zeros((C, 3 * C))
q_cols, k_cols, v_cols = slice(0, C), slice(C, 2 * C), slice(2 * C, 3 * C)
for t in range(1, T):                                        # head 0: query of position t ...
    W_qkv[W_len + t, q_cols.start + (t % head_size)] = sharpness
    W_qkv[W_len + t - 1, k_cols.start + (t % head_size)] = 1.0   # ... matches the key of position t-1
for w in range(W_len):                                       # head 1: query of word w matches key of word w
    W_qkv[w, q_cols.start + head_size + w] = sharpness
    W_qkv[w, k_cols.start + head_size + w] = 1.0
W_qkv[:, v_cols] = np.eye(C)                                 # values: the input itself
y, mha_cache = multi_head_attention_forward(x, W_qkv, np.zeros(3 * C), np.eye(C), np.zeros(C),
                                            n_head=n_head, causal=True)
head_maps = mha_cache.attention.probs[0]                     # (n_head, T, T)
print("head 0, query 'sat' (t=2) attends to:", sentence[int(head_maps[0, 2].argmax())])
print("head 1, query 'the' (t=4) attends to positions:", np.flatnonzero(head_maps[1, 4] > 0.1))

# %%
fig = plt.figure(figsize=(16, 4.4))
scaling_axes = fig.add_subplot(1, 3, 1)
for name, values in entropies.items():
    scaling_axes.semilogx(widths, values, "o-", label=name)
scaling_axes.axhline(np.log(Tk), color="gray", linestyle="--", linewidth=1, label=r"uniform: $\log T_k$")
scaling_axes.set_xlabel("query/key width d")
scaling_axes.set_ylabel("mean entropy of attention rows (nats)")
scaling_axes.set_title("scaling the scores")
scaling_axes.legend(fontsize=8)
for h, title in enumerate(["head 0: previous token", "head 1: same word"]):
    axes = fig.add_subplot(1, 3, 2 + h)
    image = axes.imshow(head_maps[h], cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(T), sentence, rotation=90, fontsize=8)
    axes.set_yticks(range(T), sentence, fontsize=8)
    axes.set_xlabel("key")
    axes.set_ylabel("query" if h == 0 else "")
    axes.set_title(f"{title} (causal)")
fig.colorbar(image, ax=fig.axes[1:], fraction=0.025)
save_figure(fig, "05_attention.png")

# %% [markdown]
# The blank upper triangles are the causal mask at work; the first rows have little choice. The
# same-word head spreads its weight when a word has occurred before ("the", "cat") and otherwise
# attends to the token itself.

# %% [markdown]
# ## Check: the backward passes agree with numerical gradients
#
# With a padding mask, a causal mask, a fully masked query row and $T_q \ne T_k$ (the key/value-cache
# case), and for multi-head attention with its projections.

# %%
mask = np.ones((2, 1, 3, 5), dtype=bool)
mask[0, :, :, 3:] = False                                     # padding in batch element 0
mask[1, :, 0, :] = False                                      # a query with no allowed key
attention_inputs = [rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 5, 4)),
                    rng.standard_normal((2, 2, 5, 3))]
attention_report = check_op(scaled_dot_product_attention_forward, scaled_dot_product_attention_backward,
                            attention_inputs, {"mask": mask, "causal": True})
mha_inputs = [rng.standard_normal((2, 4, 8)), rng.standard_normal((8, 24)) * 0.3, rng.standard_normal(24) * 0.1,
              rng.standard_normal((8, 8)) * 0.3, rng.standard_normal(8) * 0.1]
mha_report = check_op(multi_head_attention_forward, multi_head_attention_backward, mha_inputs,
                      {"n_head": 2, "causal": True})
print(attention_report)
print(mha_report)
assert attention_report.passed and mha_report.passed

# %% [markdown]
# ## Summary
#
# - Attention is $\mathrm{softmax}(QK^\top/\sqrt{d_k})\,V$ with the softmax over the **keys**; the
#   $1/\sqrt{d_k}$ keeps the scores' spread independent of the width, so the softmax neither
#   saturates nor flattens.
# - Masks are applied to the scores ($-\infty$) **before** the softmax. Causal masks stop a language
#   model from seeing the future; padding masks hide padding; a fully masked query outputs zeros.
# - Multi-head attention runs several attentions in parallel subspaces; heads can specialise, e.g. on
#   the previous token or on earlier occurrences of the same word.
#
# ## Exercises
#
# 1. Derive the backward: with $P = \mathrm{softmax}(S)$, $O = PV$, show $\bar V = P^\top \bar O$,
#    $\bar P = \bar O V^\top$, $\bar S = P \odot (\bar P - \mathrm{rowsum}(\bar P \odot P))$, then
#    $\bar Q = \bar S K / \sqrt{d}$ and $\bar K = \bar S^\top Q / \sqrt{d}$. Compare with
#    `scaled_dot_product_attention_backward`.
# 2. Measure the gradient norm $\lVert \partial L/\partial Q \rVert$ for the unscaled version as $d$ grows. What
#    does saturation do to it?
# 3. Build a third head by hand that attends to the first token of the sentence (an "attention sink").
# 4. With $T_q = 1$ and $T_k = 10$ (one new token, a cache of ten), which keys does `causal=True` allow?
#    Check against the rule "query $i$ sees keys $j \le i + (T_k - T_q)$".
