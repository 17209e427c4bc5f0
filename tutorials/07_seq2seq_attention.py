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
# # 7. An LSTM encoder-decoder with attention
#
# A **sequence-to-sequence** model reads one sequence and writes another (Sutskever, Vinyals & Le 2014).
# An LSTM **encoder** reads the source; an LSTM **decoder** writes the target one token at a time. Without
# attention, everything the decoder knows about the source must squeeze through the encoder's final
# state. **Attention** (Bahdanau, Cho & Bengio 2015) lets the decoder look back at *every* encoder state
# at every step, through learned alignment weights:
#
# $$
# e_{tj} = v^\top \tanh(h_t W_q + k_j W_k), \qquad
# \alpha_{t\cdot} = \mathrm{softmax}(e_{t\cdot}), \qquad
# \text{context}_t = \sum_j \alpha_{tj}\, k_j, \qquad
# \text{logits}_t = [h_t;\ \text{context}_t]\, W_\text{head} + b ,
# $$
#
# with $h_t$ the decoder state (the query) and $k_j$ the encoder states (the keys). The task: rewrite
# dates written by humans in any of 22 formats as ISO dates — `"tuesday 3 september 1995"` →
# `"1995-09-03"` — which needs the model to find the day, the month and the year wherever they are. The
# alignment heatmap at the end shows it doing exactly that.

# %%
import os
import sys
import time

import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

if "ipykernel" not in sys.modules:      # run as a script: draw into PNG files, never open a window
    matplotlib.use("Agg")

from npllm.datasets.dates import dates_task
from npllm.datasets.pairs import IGNORE_INDEX, Vocab, encode_pairs, join_tokens, make_batch, split_tokens
from npllm.gradcheck import check_op, check_params
from npllm.layers import (additive_attention_backward, additive_attention_forward, cross_entropy_backward,
                          cross_entropy_forward)
from npllm.models import Seq2Seq, Seq2SeqConfig
from npllm.optim import AdamW, clip_grad_norm, cosine_lr
from npllm.plots import plot_attention, plot_loss_curve

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
# ## The data
#
# `dates_task` generates the pairs from a seed with Python's `datetime`, so there is nothing to download;
# the held-out dates never occur in training, in any format. We tokenise by character. Each vocabulary
# reserves `<pad>` (fills short rows), `<bos>` (the decoder's first input) and `<eos>` (ends the target).
# **Teacher forcing**: during training the decoder reads the *true* previous character,
# `<bos> y_1 … y_n`, and must predict `y_1 … y_n <eos>`; `make_batch` builds both and marks positions
# past the end with `IGNORE_INDEX`, which the cross-entropy skips.

# %%
train_pairs, test_pairs = dates_task(n_train=20_000, n_test=200, seed=0)
for source, target in train_pairs[:4]:
    print(f"{source!r:>34} → {target!r}")
src_vocab = Vocab.build(split_tokens(source, "char") for source, _ in train_pairs)
tgt_vocab = Vocab.build(split_tokens(target, "char") for _, target in train_pairs)
train = encode_pairs(train_pairs, src_vocab, tgt_vocab, "char")
test = encode_pairs(test_pairs, src_vocab, tgt_vocab, "char")
print(f"vocabularies: {len(src_vocab)} source characters, {len(tgt_vocab)} target characters")
example = make_batch(train, [0])
print("decoder input :", example.tgt_in[0], "\ndecoder target:", example.tgt_out[0])

# %% [markdown]
# ## The attention op, checked
#
# `additive_attention_forward(query, keys, W_q, W_k, v, mask)` is the formula above, for one query per
# row or for all $T_q$ decoder steps at once (teacher forcing scores every step in one call). The mask
# hides padded source positions. Its backward is checked like every other op:

# %%
rng = np.random.default_rng(0)
mask = np.array([[True, True, True, True, True], [True, True, True, False, False]])   # row 1: 2 pads
attention_inputs = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 6)),
                    rng.standard_normal((4, 7)), rng.standard_normal((6, 7)), rng.standard_normal(7)]
attention_report = check_op(additive_attention_forward, additive_attention_backward, attention_inputs,
                            {"mask": mask})
print(attention_report)
context, weights, _ = additive_attention_forward(*attention_inputs, mask=mask)
print("weights of row 1, query 0 (the padding gets 0):", np.round(weights[1, 0], 3))

# %% [markdown]
# ## The model and its training loop
#
# `Seq2Seq` holds both LSTMs, the attention and the output layer in one flat parameter dict, with
# `forward(src, tgt_in)` → logits $(B, T_t, V_t)$ and a hand-written `backward`, exactly like the language
# models. The loop is the familiar one: batch, forward, masked cross-entropy, backward, clip, AdamW.

# %%
config = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), embed_size=16, hidden_size=64, attention_size=64)
model = Seq2Seq(config, seed=0)
print(f"{model.num_params():,} parameters")
max_iters = 120 if FAST else 400
eval_interval = 40 if FAST else 100
learning_rate = 5e-3
optimizer = AdamW(lr=learning_rate, weight_decay=0.0)
batch_rng = np.random.default_rng(1)
test_batch = make_batch(test, np.arange(len(test_pairs)))


def loss_on(batch):
    """Teacher-forced mean cross-entropy over a batch's real target tokens → (loss, cache, ce_cache)."""
    logits, cache = model.forward(batch.src, batch.tgt_in)
    loss, ce_cache = cross_entropy_forward(logits, batch.tgt_out, ignore_index=IGNORE_INDEX)
    return float(loss), cache, ce_cache


rows, started = [], time.perf_counter()
for step in range(1, max_iters + 1):
    lr = cosine_lr(step - 1, lr=learning_rate, min_lr=learning_rate / 10, warmup_iters=max_iters // 10,
                   lr_decay_iters=max_iters)
    batch = make_batch(train, batch_rng.choice(len(train_pairs), size=64, replace=False))
    loss, cache, ce_cache = loss_on(batch)
    grads = model.backward(cross_entropy_backward(1.0, ce_cache), cache)
    clip_grad_norm(grads, 5.0)
    optimizer.step(model.params, grads, lr=lr)
    row = {"step": step, "train_loss": loss}
    if step % eval_interval == 0:
        row["val_loss"] = loss_on(test_batch)[0]
        print(f"step {step:4d}  train {loss:.3f}  held-out {row['val_loss']:.3f}  "
              f"({time.perf_counter() - started:.0f} s)")
    rows.append(row)
show_png(plot_loss_curve(rows, "07_seq2seq_loss.png", title="seq2seq with attention on the dates task"))

# %% [markdown]
# ## Decoding
#
# At test time there is no true previous token: **greedy decoding** feeds back the most likely character
# at each step until `<eos>`; **beam search** keeps the `beam_size` most likely prefixes instead of one.
# Exact match counts dates that come out entirely right.

# %%
max_len = int(train.tgt_len.max()) + 2
tokens, alignment = model.greedy_decode(test.src, max_len)
greedy = [join_tokens(tgt_vocab.decode(row), "char") for row in tokens.tolist()]
accuracy = np.mean([output == target for output, (_, target) in zip(greedy, test_pairs)])
n_beam = 50                                                         # beam search costs 4x: a subset
beams, _ = model.beam_search(test.src[:n_beam], max_len, beam_size=4)
beam = [join_tokens(tgt_vocab.decode(row), "char") for row in beams]
beam_accuracy = np.mean([output == target for output, (_, target) in zip(beam, test_pairs[:n_beam])])
greedy_subset = np.mean([output == target for output, (_, target) in zip(greedy[:n_beam], test_pairs[:n_beam])])
print(f"exact match on {len(test_pairs)} held-out dates, greedy: {accuracy:.1%}")
print(f"on the first {n_beam}: greedy {greedy_subset:.1%}, beam search (4 beams) {beam_accuracy:.1%}")
for (source, target), output in list(zip(test_pairs, greedy))[:6]:
    print(f"{source!r:>34} → {output!r:14} {'✓' if output == target else '✗ expected ' + repr(target)}")

# %% [markdown]
# ## Where does the decoder look?
#
# The alignment weights $\alpha_{tj}$ of one held-out example: a row per output character, a column per
# source character. A trained model reads the year's digits when it writes the year, the month name (or
# number) when it writes the month, and the day last — reordering the fields, which is exactly what an
# encoder-decoder without attention finds hard.

# %%
index = next(i for i, (source, _) in enumerate(test_pairs) if any(c.isalpha() for c in source))
source = test_pairs[index][0]
output = tgt_vocab.decode(tokens[index].tolist())
n_rows = min(len(output) + 1, tokens.shape[1])                     # the output and its <eos> step
show_png(plot_attention(alignment[index, :n_rows, :len(source)],
                        ["␣" if c == " " else c for c in source], (output + ["<eos>"])[:n_rows],
                        "07_seq2seq_alignment.png", title=f"{source!r} → {''.join(output)!r}"))

# %% [markdown]
# ## Check: the whole model's backward agrees with numerical gradients
#
# A tiny float64 model with a padded source and a padded target (so the mask and `ignore_index` are
# exercised), its parameters redrawn at a larger scale so every path carries gradient. Even so, the
# attention's query weights get gradients around $10^{-4}$: with the default $\varepsilon = 10^{-6}$ the
# round-off of the central differences (about $10^{-10}$ absolute, tutorial 8) would be a relative error
# near $10^{-6}$. A larger step, $\varepsilon = 10^{-4}$, moves us to the bottom of tutorial 8's V-shaped curve.

# %%
tiny = Seq2Seq(Seq2SeqConfig(9, 8, embed_size=3, hidden_size=4, attention_size=5), seed=0, dtype=np.float64)
tiny_rng = np.random.default_rng(0)
for name, array in tiny.params.items():
    array[...] = tiny_rng.normal(0.0, 1.0 if name.startswith("attention") else 0.5, array.shape)
src = np.array([[4, 5, 6, 7], [8, 4, 0, 0]])                       # row 1 ends with two <pad>
tgt_in = np.array([[1, 3, 4], [1, 5, 0]])
tgt_out = np.array([[3, 4, 2], [5, 2, IGNORE_INDEX]])


def tiny_loss():
    """The tiny model's loss, reading its current params (check_params perturbs them in place)."""
    return float(cross_entropy_forward(tiny.forward(src, tgt_in)[0], tgt_out, ignore_index=IGNORE_INDEX)[0])


logits, tiny_cache = tiny.forward(src, tgt_in)
_, tiny_ce = cross_entropy_forward(logits, tgt_out, ignore_index=IGNORE_INDEX)
model_report = check_params(tiny_loss, tiny.params, tiny.backward(cross_entropy_backward(1.0, tiny_ce), tiny_cache),
                            max_entries=10, eps=1e-4, op="Seq2Seq")
print(model_report)
assert attention_report.passed and model_report.passed

# %% [markdown]
# ## Summary
#
# - An encoder-decoder reads the source with one LSTM and writes the target with another; with attention
#   the decoder reads a weighted average of all encoder states at every step, so no single vector has to
#   hold the whole source.
# - Training uses teacher forcing and a cross-entropy that ignores padding; decoding is greedy or beam
#   search, one step at a time.
# - The alignment weights are interpretable: on dates, the decoder learns to look at the field it is
#   writing.
#
# ## Exercises
#
# 1. Remove attention: replace the context by zeros (edit a copy of the model's `forward`, or set
#    `attention.v` to zero and freeze it). How much lower is the accuracy after the same training?
# 2. Find held-out dates the model gets wrong. Which formats are hardest, and why (two-digit years,
#    ordinals, day-first numeric forms)?
# 3. Compare greedy decoding with beam sizes 2, 4 and 8 on all held-out dates, and time them.
# 4. `npllm train --task dates` trains a larger model for longer and writes alignment plots; compare its
#    exact match with this tutorial's.
