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
# # 6. A GPT from the blocks, trained on the built-in corpus
#
# Everything from tutorials 1–5 assembles into GPT-2's architecture (Radford et al. 2019), as
# `npllm.models.GPT` writes it out:
#
# $$
# \begin{aligned}
# x_0 &= W_\text{te}[\text{ids}] + W_\text{pe}[0..T-1] && \text{token + learned position embeddings (tutorial 2)}\\
# x'_\ell &= x_{\ell-1} + \mathrm{Attn}(\mathrm{LN}_1(x_{\ell-1})) && \text{causal multi-head attention (tutorial 5)}\\
# x_\ell &= x'_\ell + \mathrm{MLP}(\mathrm{LN}_2(x'_\ell)), \quad \mathrm{MLP}(h) = \mathrm{GELU}(h W_1 + b_1) W_2 + b_2 && \text{width } 4C\\
# \text{logits} &= \mathrm{LN}_f(x_L)\, W_\text{te}^\top && \text{the head shares the embedding matrix}
# \end{aligned}
# $$
#
# and the loss is the cross-entropy of tutorial 1 at every position. We build a small one, check its
# hand-written backward against numerical gradients, train it for a minute on Python's documentation,
# plot the loss, sample text and look at what its attention heads do.

# %%
import inspect
import os
import sys
import time

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")

from npllm.data import builtin_corpus, encode_corpus, get_batch, train_val_split
from npllm.generate import generate
from npllm.gradcheck import check_params
from npllm.layers import cross_entropy_backward, cross_entropy_forward
from npllm.models import GPT, GPTConfig
from npllm.optim import AdamW, clip_grad_norm, cosine_lr
from npllm.plots import plot_attention, plot_loss_curve
from npllm.tokenizers import CharTokenizer

FAST = os.environ.get("NPLLM_FAST") == "1"   # the test-suite sets it: fewer training steps

# The matrices here are small: a multi-threaded BLAS gains nothing on them, and its idle threads spin
# between calls, taking the cores from NumPy's other work (10x slower on a busy 2-core machine). One
# BLAS thread for this whole tutorial — `npllm train` makes the same choice for small models.
threadpool_limits(limits=1, user_api="blas")


def show_png(path):
    """Report a PNG written by npllm.plots; in a notebook, also show it inline."""
    print(f"saved {path}")
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display
        display(Image(filename=str(path)))


# %% [markdown]
# ## Data and model
#
# A character tokenizer over the built-in corpus (tutorial 2), a 90/10 train/validation split, and a GPT
# with 2 layers, 4 heads of width 16 ($C = 64$) and a context of 64 characters. The parameters live in
# one flat dict with Hugging Face GPT-2's names, so every array can be inspected (and a real GPT-2
# checkpoint loads name for name with `GPT.from_pretrained`).

# %%
text = builtin_corpus()
tokenizer = CharTokenizer.train(text)
train_ids, val_ids = train_val_split(encode_corpus(text, tokenizer))
config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64)
model = GPT(config, seed=0)
print(config)
print(f"{model.num_params():,} parameters")
for name, array in list(model.params.items())[:14]:
    print(f"  {name:<28} {str(array.shape):<12} {array.dtype}")
print("  ...")

# %% [markdown]
# One transformer block, as the model writes it. Each line is an op from `npllm.layers`, called through
# `npllm.backend.ops` (so a faster backend can replace it without changing this code); the cache of
# every op is kept for the backward, which walks the same lines in reverse.

# %%
print(inspect.getsource(GPT._block_forward))

# %% [markdown]
# ## A sanity check before training
#
# GPT-2's initialisation draws the weights from $\mathcal{N}(0, 0.02^2)$, so the initial logits are nearly
# equal and the prediction nearly uniform: the first loss should be close to $\ln V$ (tutorial 1).

# %%
rng = np.random.default_rng(1337)
x, y = get_batch(train_ids, batch_size=16, block_size=config.block_size, rng=rng)   # (B, T) each
logits, cache = model.forward(x)                                                    # (B, T, V)
loss, _ = cross_entropy_forward(logits, y)
print(f"initial loss {float(loss):.3f}, ln V = {np.log(config.vocab_size):.3f}")
assert abs(float(loss) - np.log(config.vocab_size)) < 0.1

# %% [markdown]
# ## Training
#
# The loop is the one `npllm train` runs, written out: sample a batch of random windows, forward,
# cross-entropy, backward, clip the global gradient norm to 1, and an AdamW step with nanoGPT's schedule
# (linear warm-up, cosine decay). Every `eval_interval` steps we measure the mean loss on fixed
# validation batches.

# %%
max_iters = 80 if FAST else 600
eval_interval = 20 if FAST else 100
learning_rate = 3e-3
optimizer = AdamW(lr=learning_rate, weight_decay=0.1)
eval_rng = np.random.default_rng(0)
val_batches = [get_batch(val_ids, 16, config.block_size, eval_rng) for _ in range(4)]


def val_loss():
    """Mean cross-entropy over the fixed validation batches."""
    return float(np.mean([cross_entropy_forward(model.forward(vx)[0], vy)[0] for vx, vy in val_batches]))


rows = []
started = time.perf_counter()
for step in range(1, max_iters + 1):
    lr = cosine_lr(step - 1, lr=learning_rate, min_lr=learning_rate / 10, warmup_iters=20,
                   lr_decay_iters=max_iters)
    x, y = get_batch(train_ids, batch_size=16, block_size=config.block_size, rng=rng)
    logits, cache = model.forward(x)
    loss, ce_cache = cross_entropy_forward(logits, y)
    grads = model.backward(cross_entropy_backward(1.0, ce_cache), cache)
    clip_grad_norm(grads, 1.0)
    optimizer.step(model.params, grads, lr=lr)
    row = {"step": step, "train_loss": float(loss)}
    if step % eval_interval == 0 or step == max_iters:
        row["val_loss"] = val_loss()
        recent = np.mean([r["train_loss"] for r in rows[-eval_interval + 1:]] + [float(loss)])
        print(f"step {step:4d}  train {recent:.3f} (mean since last eval)  val {row['val_loss']:.3f}  "
              f"({time.perf_counter() - started:.0f} s)")
    rows.append(row)
tokens_per_second = max_iters * 16 * config.block_size / (time.perf_counter() - started)
print(f"{tokens_per_second:,.0f} tokens/s with the NumPy reference")

# %%
title = f"GPT ({model.num_params():,} parameters) on the built-in corpus"
show_png(plot_loss_curve(rows, "06_gpt_loss.png", title=title))

# %% [markdown]
# ## Samples
#
# `npllm.generate.generate` feeds the model its own predictions one token at a time, sampling from the
# softmax of the logits divided by a temperature (0.8: a little more conservative than the model's
# distribution). It keeps a key/value cache, so each new character costs one position, not the whole
# prefix. After a minute of training, expect word-like fragments and the corpus's layout, not sense:
# `npllm train` trains a larger model for longer.

# %%
prompt = "The "
prompt_ids = np.array([tokenizer.encode(prompt)] * 2)                 # two samples, (2, len(prompt))
samples = generate(model, prompt_ids, 120, temperature=0.8, rng=np.random.default_rng(0))
for i, sample in enumerate(samples):
    print(f"--- sample {i + 1} ---\n{tokenizer.decode(sample.tolist())}")

# %% [markdown]
# ## What do the heads look at?
#
# The forward's cache holds every attention map (the NumPy reference keeps them: a block's `attn` is
# its multi-head attention cache, whose `attention` part holds the probabilities). Here is one head of the last layer on a line of the
# corpus — each row is a character (query) and shows which earlier characters it draws from. We pick
# the head whose rows have the lowest entropy (the most decided one). Heads of small character models
# often attend to the previous character, or to the spaces that start the current and previous words.

# %%
line = "The for statement is used to iterate"
line_ids = np.array([tokenizer.encode(line)])
_, line_cache = model.forward(line_ids)
probs = line_cache.blocks[-1].attn.attention.probs[0]                # (NH, T, T)
head = int(np.argmax([(p * np.log(np.maximum(p, 1e-12))).sum() for p in probs]))   # the sharpest head
labels = ["␣" if char == " " else char for char in line]
show_png(plot_attention(probs[head], labels, labels, "06_gpt_attention.png",
                        title=f"layer {config.n_layer - 1}, head {head}"))

# %% [markdown]
# ## Check: the model's backward agrees with numerical gradients
#
# `check_params` perturbs entries of every parameter of a tiny float64 GPT and compares the loss
# differences with `model.backward` — through the embeddings, both blocks, the tied head and the loss.
# At GPT-2's initialisation (std 0.02) some gradients are around $10^{-3}$, so the round-off of the
# central differences alone (about $10^{-10}$, tutorial 8) would be a relative error near $10^{-7}$; we
# first add noise of a larger scale to every parameter, which makes every gradient sizeable.

# %%
tiny = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8), seed=0, dtype=np.float64)
tiny_rng = np.random.default_rng(0)
for array in tiny.params.values():
    array += tiny_rng.normal(0.0, 0.3, array.shape)                 # in place: the model reads the dict
tiny_x, tiny_y = tiny_rng.integers(0, 11, (2, 6)), tiny_rng.integers(0, 11, (2, 6))


def tiny_loss():
    """The tiny model's loss, reading its current params (check_params perturbs them in place)."""
    return float(cross_entropy_forward(tiny.forward(tiny_x)[0], tiny_y)[0])


tiny_logits, tiny_cache = tiny.forward(tiny_x)
_, tiny_ce = cross_entropy_forward(tiny_logits, tiny_y)
tiny_grads = tiny.backward(cross_entropy_backward(1.0, tiny_ce), tiny_cache)
report = check_params(tiny_loss, tiny.params, tiny_grads, max_entries=10, op="GPT")
print(report)
assert report.passed

# %% [markdown]
# ## Summary
#
# - A GPT is embeddings, then blocks of (LayerNorm → causal multi-head attention → residual add) and
#   (LayerNorm → GELU MLP → residual add), then a final LayerNorm and a head tied to the token embedding.
# - Its backward is the same chain in reverse; residual connections add gradients from both paths, and
#   the tied embedding sums the gradients of its two uses.
# - At initialisation the loss is $\approx \ln V$; the training loop is forward, cross-entropy, backward,
#   clip, AdamW with warm-up and cosine decay.
#
# ## Exercises
#
# 1. Train with `n_layer=1` and with `n_layer=4` for the same time budget. Which reaches the lower
#    validation loss, and why is "same number of steps" not a fair comparison?
# 2. Set `model.params["wpe.weight"][:] = 0` and freeze it (skip its update). How much worse is a model
#    without position information, and what does it still learn?
# 3. Sample with temperature 0 (greedy), 0.5 and 1.5, and with `top_k=5`. Describe the differences.
# 4. Run `npllm train --max-iters 2000` and compare its loss curve (`out/loss.png`) with this one; then
#    try `--backend numba` once the kernels are installed and compare the tokens per second.
