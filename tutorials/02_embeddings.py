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
# # 2. Embeddings
#
# A model cannot multiply a token id by a weight matrix: the id 17 is a name, not a quantity. An
# **embedding** gives every token of the vocabulary a learned vector, a row of a matrix
# $W \in \mathbb{R}^{V \times D}$, and "reading" token $i$ means taking row $i$. This tutorial shows that
# the lookup is a matrix product with a one-hot vector, derives its gradient (a *scatter-add*, with a
# classic bug to avoid), and trains a tiny model whose learned character embeddings we can look at.
#
# $$ y = W[\text{ids}] = \mathrm{onehot}(\text{ids})\, W, \qquad
#    \frac{\partial L}{\partial W} = \mathrm{onehot}(\text{ids})^\top \frac{\partial L}{\partial y}. $$

# %%
import os
import sys

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from npllm.data import builtin_corpus, encode_corpus, get_batch, train_val_split
from npllm.gradcheck import check_op
from npllm.layers import (cross_entropy_backward, cross_entropy_forward, embedding_backward,
                          embedding_forward, linear_backward, linear_forward)
from npllm.optim import Adam
from npllm.plots import save_figure
from npllm.tokenizers import CharTokenizer

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: fewer training steps

# The matrices here are small: a multi-threaded BLAS gains nothing on them, and its idle threads spin
# between calls, taking the cores from NumPy's other work (10x slower on a busy 2-core machine). One
# BLAS thread for this whole tutorial — `npllm train` makes the same choice for small models.
threadpool_limits(limits=1, user_api="blas")
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## A lookup is a one-hot matrix product
#
# With $V = 5$ tokens and $D = 3$ dimensions, `embedding_forward(ids, W)` returns `W[ids]`. Multiplying
# the one-hot rows of the ids by $W$ gives the same numbers — the one-hot row has a single 1 that
# selects a row of $W$ — but costs $V$ times more work and memory, which is why nobody builds it.

# %%
rng = np.random.default_rng(0)
V, D = 5, 3
W = rng.standard_normal((V, D))
ids = np.array([[1, 4, 1],
                [0, 1, 3]])                         # (B, T) = (2, 3); token 1 appears three times
y, cache = embedding_forward(ids, W)                # (B, T, D)
onehot = np.eye(V)[ids]                             # (B, T, V)
print("W[ids][0] =\n", y[0])
assert np.allclose(y, onehot @ W)
print("embedding lookup == onehot(ids) @ W  ✓")

# %% [markdown]
# ## The gradient is a scatter-add
#
# From $y = \mathrm{onehot}\,W$, the gradient of a matrix product gives
# $\partial L / \partial W = \mathrm{onehot}^\top\, \partial L / \partial y$: row $v$ of $dW$ is the sum of
# the upstream gradients of every position that looked up token $v$. Rows of tokens that did not occur
# get zero. A token that occurs several times must receive the *sum* of its gradients.
#
# The tempting one-liner `dW[ids] += dy` is wrong: NumPy's fancy-index assignment writes each repeated
# index once (the last write wins), so token 1 — used three times — would get one gradient instead of
# three. `embedding_backward` uses `np.add.at`, which accumulates.

# %%
dy = rng.standard_normal(y.shape)
dW = embedding_backward(dy, cache)
dW_matmul = onehot.reshape(-1, V).T @ dy.reshape(-1, D)   # (V, B·T) @ (B·T, D)

dW_buggy = np.zeros_like(W)
dW_buggy[ids.reshape(-1)] += dy.reshape(-1, D)            # the bug: repeated ids are written once

print("row of token 1, library :", dW[1])
print("row of token 1, one-hot :", dW_matmul[1])
print("row of token 1, buggy   :", dW_buggy[1])
print("row of token 2 (unused) :", dW[2])
assert np.allclose(dW, dW_matmul)
assert not np.allclose(dW_buggy[1], dW[1])

# %% [markdown]
# ## Learning embeddings: a character bigram model
#
# The smallest language model with an embedding: read one character, look up its vector
# $e \in \mathbb{R}^{D}$, and predict the next character with a linear layer,
# $\text{logits} = e\, W_{\text{out}} + b$. Trained with cross-entropy on the built-in corpus (Python's
# documentation), characters that are followed by similar things should end up with similar vectors.
#
# The best any bigram model can do is the conditional entropy of the next character given the current
# one, which we can count directly; it is the floor our loss should approach.

# %%
text = builtin_corpus()
tokenizer = CharTokenizer.train(text)
data = encode_corpus(text, tokenizer)
train_ids, val_ids = train_val_split(data)
V = tokenizer.vocab_size
print(f"{len(text):,} characters, vocabulary of {V}")

counts = np.zeros((V, V))
np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1.0)   # counts[a, b] = how often b follows a
p_next = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
bigram_entropy = -np.sum(counts * np.log(np.where(p_next > 0, p_next, 1))) / counts.sum()
print(f"bigram floor (train entropy): {bigram_entropy:.3f} nats; uniform guess: {np.log(V):.3f} nats")

# %%
D = 16
params = {"embedding": (rng.standard_normal((V, D)) * 0.1).astype(np.float32),
          "W_out": (rng.standard_normal((D, V)) / np.sqrt(D)).astype(np.float32),
          "b_out": np.zeros(V, dtype=np.float32)}
optimizer = Adam(lr=0.01)
n_steps = 150 if FAST else 600
batch_rng = np.random.default_rng(1)
losses = []
for step in range(n_steps):
    x, y_next = get_batch(train_ids, batch_size=64, block_size=32, rng=batch_rng)   # (B, T) each
    e, emb_cache = embedding_forward(x, params["embedding"])                          # (B, T, D)
    logits, lin_cache = linear_forward(e, params["W_out"], params["b_out"])           # (B, T, V)
    loss, ce_cache = cross_entropy_forward(logits, y_next)
    dlogits = cross_entropy_backward(1.0, ce_cache)
    de, dW_out, db_out = linear_backward(dlogits, lin_cache)
    grads = {"embedding": embedding_backward(de, emb_cache), "W_out": dW_out, "b_out": db_out}
    optimizer.step(params, grads)
    losses.append(float(loss))
    if step % 100 == 0 or step == n_steps - 1:
        print(f"step {step:4d}  loss {np.mean(losses[-50:]):.3f} (mean of the last 50 batches)")


def mean_loss(ids, chunk=50_000):
    """Mean next-character cross-entropy of the bigram model over a 1-D id array (in chunks: V logits each)."""
    total = 0.0
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start:start + chunk + 1]
        e, _ = embedding_forward(piece[:-1], params["embedding"])
        logits, _ = linear_forward(e, params["W_out"], params["b_out"])
        total += float(cross_entropy_forward(logits, piece[1:])[0]) * (len(piece) - 1)
    return total / (len(ids) - 1)


print(f"training-set loss {mean_loss(train_ids):.3f} nats (bigram floor {bigram_entropy:.3f}); "
      f"validation loss {mean_loss(val_ids):.3f} nats")

# %% [markdown]
# ## Looking at the embeddings
#
# The vectors live in 16 dimensions; we look at their first two principal components (the 2-D plane
# that keeps the most variance). Each character is drawn at its point, coloured by kind. No label was
# ever given to the model — whatever grouping appears was learned from what follows each character.

# %%
def kind(char):
    """A coarse class of a character, for colouring the plot."""
    if char in "aeiou":
        return "lowercase vowel"
    if char.islower():
        return "lowercase consonant"
    if char.isupper():
        return "uppercase"
    if char.isdigit():
        return "digit"
    if char.isspace():
        return "whitespace"
    return "punctuation"


vectors = params["embedding"].astype(np.float64)
centered = vectors - vectors.mean(axis=0)
_, _, components = np.linalg.svd(centered, full_matrices=False)
plane = centered @ components[:2].T                          # (V, 2)
colours = {"lowercase vowel": "tab:red", "lowercase consonant": "tab:blue", "uppercase": "tab:purple",
           "digit": "tab:green", "whitespace": "tab:gray", "punctuation": "tab:orange"}

fig, (curve, scatter) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.4]})
curve.plot(losses, linewidth=1, label="training loss")
curve.axhline(bigram_entropy, color="black", linestyle="--", linewidth=1, label="bigram floor")
curve.set_xlabel("step")
curve.set_ylabel("loss (nats/char)")
curve.set_title("character bigram model")
curve.legend()
for char, (px, py) in zip(tokenizer.chars, plane):
    label = {" ": "␣", "\n": "\\n", "\t": "\\t"}.get(char, char)
    scatter.text(px, py, label, color=colours[kind(char)], fontsize=9, ha="center", va="center")
scatter.set_xlim(plane[:, 0].min() - 0.1, plane[:, 0].max() + 0.1)
scatter.set_ylim(plane[:, 1].min() - 0.1, plane[:, 1].max() + 0.1)
for name, colour in colours.items():
    scatter.scatter([], [], color=colour, label=name)
scatter.legend(fontsize=8, loc="best")
scatter.set_title("learned character embeddings (first two principal components)")
save_figure(fig, "02_embeddings.png")

# %% [markdown]
# ## Check: the embedding backward agrees with numerical gradients
#
# The ids repeat (token 1 three times), so a backward that dropped repeated gradients would fail here.
# Integer inputs get no gradient; `check_op` checks the float ones only.

# %%
report = check_op(embedding_forward, embedding_backward, [ids, rng.standard_normal((5, 3))])
print(report)
assert report.passed

# %% [markdown]
# ## Summary
#
# - An embedding is a table lookup, $W[\text{ids}]$, mathematically the product $\mathrm{onehot}(\text{ids})\,W$.
# - Its gradient is a scatter-add of the upstream gradients into the looked-up rows; repeated tokens
#   must accumulate (`np.add.at`), and unused rows get zero.
# - Trained on next-character prediction, the embeddings organise characters by how they are used:
#   the model approaches the bigram floor, the best any one-character-context model can reach.
#
# ## Exercises
#
# 1. Time `embedding_forward` against `onehot @ W` for $V = 50{,}000$, $D = 768$ and 1,024 ids. How much
#    memory does the one-hot matrix take?
# 2. Train with $D = 2$ and plot the embeddings directly. Which characters does the model still manage
#    to separate with only two numbers each?
# 3. Tie the weights: use $W_{\text{out}} = W^\top$ (as GPT-2 does, tutorial 6). Where does the gradient
#    of the shared matrix come from, and what is the sum rule for it?
# 4. Replace the count-based floor with a smoothed estimate on the validation split. Why can the
#    validation loss of the model be *below* the training-set entropy of the counts?
