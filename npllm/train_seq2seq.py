"""``npllm train --model seq2seq``: the attention Seq2Seq on the dates task or on a user's pairs.

``npllm train --model seq2seq --task dates`` (or ``--task dates`` alone) learns to rewrite dates in many
formats as ISO dates: 100,000 generated training pairs, 2,000 held-out dates that never occur in training.
``--data PAIRS.tsv`` trains on ``source<TAB>target`` lines instead (the last 10% held out), tokenised by
character (``--tokenizer char``, the default) or by whitespace word (``--tokenizer word``).

The recipe: AdamW with warm-up and cosine decay (the LM recipe of train.py), teacher forcing, the loss
averaged over real target tokens.  Batches hold sources of similar length (a pool of 50 batches is
shuffled, sorted by length and cut), so little time goes into the LSTM running over padding.  Flags the
user did not set take this module's defaults (:data:`SEQ2SEQ_DEFAULTS`, e.g. 128 pairs a batch), since
the language-model defaults (12 windows of text) suit a different job.

Evaluation decodes every held-out source greedily and reports the exact-match accuracy, the character
accuracy and (for ``--data``) corpus BLEU over whitespace words; the final JSON line carries them with
train.py's keys (``tokens_per_second`` counts source and target tokens, padding excluded, per second spent
in training steps; ``seconds`` is the whole run, data generation and evaluation included).  Outputs in ``--out-dir``: ``ckpt.safetensors`` (weights, optimizer, vocabularies),
``metrics.jsonl``, ``loss.png`` and ``attention_<i>.png`` alignment plots of a few held-out examples.
``npllm generate``/``eval`` refuse this checkpoint with a clear message (they handle language models);
:func:`load_seq2seq` and :func:`translate` use it from Python.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from npllm.datasets.pairs import (EOS_ID, IGNORE_INDEX, Vocab, encode_pairs, join_tokens, load_pairs, make_batch,
                                  split_held_out, split_tokens)
from npllm.errors import CheckpointError, UsageError
from npllm.flags import fill_defaults, given
from npllm.metrics import bleu, char_accuracy, exact_match, perplexity

SEQ2SEQ_DEFAULTS = {"batch_size": 128, "max_iters": 800, "lr": 5e-3, "hidden_size": 128, "n_embd": 32,
                    "weight_decay": 0.0, "grad_clip": 5.0, "eval_interval": 200}
DATES_SEED = 0                # the dates task's data is fixed: --seed changes the model, not the test set
N_TRAIN_DATES, N_TEST_DATES = 100_000, 2_000
EVAL_SUBSET = 500             # held-out pairs scored at each --eval-interval (all of them at the end)
N_ALIGNMENT_PLOTS = 3
BUCKET_POOL = 50              # batches per length-sorted pool


def check_flags(args) -> None:
    """UsageError for flags seq2seq training cannot honour; then fill its defaults."""
    if given(args, "model") and args.model != "seq2seq":
        raise UsageError("--task", f"--task {args.task} trains a seq2seq model; drop --model {args.model}")
    if args.task is not None and args.data is not None:
        raise UsageError("--data", "give either --task dates or --data PAIRS.tsv, not both")
    refusals = {"init_from": ("--init-from", "fine-tuning applies to GPT models; seq2seq trains from scratch"),
                "resume": ("--resume", "is not supported for --model seq2seq (runs take minutes: start again)"),
                "n_head": ("--n-head", "has no meaning for the LSTM seq2seq"),
                "block_size": ("--block-size", "has no meaning for seq2seq (pairs are padded to their length)"),
                "dropout": ("--dropout", "is not implemented for seq2seq"),
                "grad_accum": ("--grad-accum", "is not implemented for seq2seq")}
    for dest, (flag, message) in refusals.items():
        if given(args, dest):
            raise UsageError(flag, message)
    if given(args, "n_layer") and args.n_layer != 1:
        raise UsageError("--n-layer", f"the seq2seq encoder and decoder have one LSTM layer each, got {args.n_layer}")
    if args.tokenizer == "bpe" or (args.data is None and args.tokenizer != "char"):
        raise UsageError("--tokenizer", "seq2seq tokenises by 'char' or, for --data, 'word'")
    fill_defaults(args, SEQ2SEQ_DEFAULTS)
    if args.min_lr is None:
        args.min_lr = args.lr / 10
    if args.lr_decay_iters is None:
        args.lr_decay_iters = args.max_iters
    if args.warmup_iters is None:
        args.warmup_iters = min(100, args.max_iters // 10, args.lr_decay_iters)
    if args.min_lr > args.lr:
        raise UsageError("--min-lr", f"must be <= --lr ({args.lr}), got {args.min_lr}")
    if args.warmup_iters > args.lr_decay_iters:
        raise UsageError("--warmup-iters", f"must be <= --lr-decay-iters ({args.lr_decay_iters})")


def load_data(args):
    """(train pairs, held-out pairs, description) for --task dates or --data."""
    if args.data is None:
        from npllm.datasets.dates import dates_task
        train, test = dates_task(N_TRAIN_DATES, N_TEST_DATES, seed=DATES_SEED)
        return train, test, "dates"
    try:
        train, test = split_held_out(load_pairs(args.data))
    except ValueError as exc:
        raise UsageError("--data", str(exc)) from None
    return train, test, str(Path(args.data).resolve())


def bucketed_batches(lengths, batch_size: int, rng: np.random.Generator):
    """Endless row-index batches of similar length: shuffle, sort pools of BUCKET_POOL batches, cut, shuffle."""
    while True:
        order = rng.permutation(len(lengths))
        batches = []
        for start in range(0, len(order), batch_size * BUCKET_POOL):
            pool = order[start:start + batch_size * BUCKET_POOL]
            pool = pool[np.argsort(lengths[pool], kind="stable")]
            batches.extend(pool[i:i + batch_size] for i in range(0, len(pool), batch_size))
        for index in rng.permutation(len(batches)):
            yield batches[index]


def batch_loss(model, batch, ops):
    """Teacher-forced loss of a Batch → (loss, logits cache, ce cache)."""
    logits, cache = model.forward(batch.src, batch.tgt_in)
    loss, ce_cache = ops.cross_entropy_forward(logits, batch.tgt_out, ignore_index=IGNORE_INDEX)
    return float(loss), cache, ce_cache


def evaluate(model, arrays, pairs, tgt_vocab, level: str, max_len: int, chunk: int = 500) -> dict:
    """Loss (token-weighted), greedy exact match, char accuracy and BLEU over ``pairs`` (encoded as arrays)."""
    from npllm.backend import ops
    total_loss = total_tokens = 0.0
    hypotheses = []
    for start in range(0, len(pairs), chunk):
        rows = np.arange(start, min(start + chunk, len(pairs)))
        batch = make_batch(arrays, rows)
        loss, _, _ = batch_loss(model, batch, ops)
        total_loss += loss * batch.n_tokens
        total_tokens += batch.n_tokens
        tokens, _ = model.greedy_decode(batch.src, max_len)
        hypotheses.extend(join_tokens(tgt_vocab.decode(row), level) for row in tokens.tolist())
    references = [target for _, target in pairs]
    loss = total_loss / total_tokens
    return {"loss": loss, "perplexity": perplexity(loss), "exact_match": exact_match(hypotheses, references),
            "char_accuracy": char_accuracy(hypotheses, references),
            "bleu": bleu([h.split() for h in hypotheses], [[r.split()] for r in references]).score,
            "hypotheses": hypotheses}


def plot_alignments(model, pairs, src_vocab, tgt_vocab, level: str, max_len: int, out_dir: Path) -> list:
    """attention_<i>.png for the first few held-out pairs: which source tokens each output token read."""
    from npllm.plots import plot_attention
    paths = []
    for i, (source, _) in enumerate(pairs[:N_ALIGNMENT_PLOTS]):
        src_tokens = split_tokens(source, level)
        tokens, weights = model.greedy_decode(np.array([src_vocab.encode(src_tokens)]), max_len)
        ids = tokens[0].tolist()
        n_out = ids.index(EOS_ID) + 1 if EOS_ID in ids else len(ids)           # up to and with <eos>
        output = join_tokens(tgt_vocab.decode(ids), level)
        paths.append(plot_attention(weights[0, :n_out], src_tokens, [tgt_vocab.tokens[t] for t in ids[:n_out]],
                                    out_dir / f"attention_{i}.png", title=f"{source!r} → {output!r}"))
    return paths


def save(path: Path, model, optimizer, vocabs, level: str, step: int, batch_rng, extra: dict) -> Path:
    """Write weights, optimizer state, both vocabularies and the run's numbers to one checkpoint."""
    from npllm.checkpoint import rng_state, save_checkpoint
    arrays, scalars = optimizer.state_dict()
    tokenizer = {"type": "seq2seq_pairs", "level": level, "source": vocabs[0].to_dict(),
                 "target": vocabs[1].to_dict()}
    meta = {"model_type": model.kind, "model_config": model.config_dict(), "tokenizer": tokenizer,
            "optimizer": scalars, "step": step, "rng_state": rng_state(batch_rng), "extra": extra}
    return save_checkpoint(path, model.params, optimizer_arrays=arrays, meta=meta)


def load_seq2seq(path):
    """(model, source Vocab, target Vocab, level) from a checkpoint written by this module."""
    from npllm.checkpoint import check_params_match, load_checkpoint
    from npllm.models import Seq2Seq, Seq2SeqConfig
    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    if meta.get("model_type") != "seq2seq":
        raise CheckpointError(f"{path}: model_type is {meta.get('model_type')!r}, not 'seq2seq'")
    dtype = next(iter(checkpoint.params.values())).dtype
    model = Seq2Seq(Seq2SeqConfig(**meta["model_config"]), dtype=dtype)
    check_params_match(checkpoint.params, model.params)
    model.params = dict(checkpoint.params)
    tokenizer = meta["tokenizer"]
    return model, Vocab.from_dict(tokenizer["source"]), Vocab.from_dict(tokenizer["target"]), tokenizer["level"]


def translate(model, src_vocab, tgt_vocab, level: str, texts, max_len: int = 100, beam_size: int = 1) -> list:
    """Decode each text (greedy, or beam search with beam_size > 1) → list of output strings."""
    from npllm.datasets.pairs import PAD_ID, pad_rows
    src = pad_rows([src_vocab.encode(split_tokens(text, level)) for text in texts], PAD_ID)
    if beam_size > 1:
        outputs, _ = model.beam_search(src, max_len, beam_size=beam_size)
    else:
        outputs = model.greedy_decode(src, max_len)[0].tolist()
    return [join_tokens(tgt_vocab.decode(ids), level) for ids in outputs]


def run(args) -> int:
    """``npllm train --model seq2seq``: set up, train, evaluate, plot, save, print the final JSON line."""
    from threadpoolctl import threadpool_limits

    # The matrices here are small ((128, 160) @ (160, 512) in the LSTM step): a second BLAS thread gains
    # little, and an idle BLAS pool spins (PERF-NOTES lesson 4).  Measured on the 2-core machine while
    # other jobs ran: 181 ms a step with one BLAS thread, 1,370-1,720 ms with two.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(args)


def _run(args) -> int:
    from tqdm.auto import tqdm

    from npllm.backend import ops
    from npllm.checkpoint import LATEST_NAME
    from npllm.models import Seq2Seq, Seq2SeqConfig
    from npllm.optim import AdamW, clip_grad_norm, cosine_lr
    from npllm.plots import plot_loss_curve
    from npllm.train import select_backend

    started = time.perf_counter()
    check_flags(args)
    select_backend(args.backend)
    level = args.tokenizer
    train_pairs, test_pairs, source = load_data(args)
    src_vocab = Vocab.build(split_tokens(s, level) for s, _ in train_pairs)
    tgt_vocab = Vocab.build(split_tokens(t, level) for _, t in train_pairs)
    train, test = (encode_pairs(p, src_vocab, tgt_vocab, level) for p in (train_pairs, test_pairs))
    max_len = int(train.tgt_len.max()) + 10               # decoding stops early once every row has <eos>
    config = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), embed_size=args.n_embd, hidden_size=args.hidden_size,
                           attention_size=args.hidden_size)
    model = Seq2Seq(config, seed=args.seed, dtype=args.dtype)
    optimizer = AdamW(args.lr, betas=(args.beta1, args.beta2), weight_decay=args.weight_decay)
    batch_rng = np.random.default_rng(args.seed)
    batches = bucketed_batches(train.src_len, args.batch_size, batch_rng)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"seq2seq on {source}: {len(train_pairs):,} training pairs, {len(test_pairs):,} held out; vocabularies "
          f"{len(src_vocab)} → {len(tgt_vocab)} {level}s; {model.num_params():,} parameters", file=sys.stderr)

    rows, train_seconds, train_tokens, recent = [], 0.0, 0, []
    subset = test_pairs[:EVAL_SUBSET]
    subset_arrays = encode_pairs(subset, src_vocab, tgt_vocab, level)
    with open(out_dir / "metrics.jsonl", "w", encoding="utf-8") as log, \
            tqdm(total=args.max_iters, disable=args.no_progress, file=sys.stderr, unit="it",
                 desc="train seq2seq") as bar:
        for step in range(1, args.max_iters + 1):
            lr = cosine_lr(step - 1, lr=args.lr, min_lr=args.min_lr, warmup_iters=args.warmup_iters,
                           lr_decay_iters=args.lr_decay_iters)
            tick = time.perf_counter()
            batch = make_batch(train, next(batches))
            loss, cache, ce_cache = batch_loss(model, batch, ops)
            grads = model.backward(ops.cross_entropy_backward(1.0, ce_cache), cache)
            norm = clip_grad_norm(grads, args.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                print(f"error: the loss became non-finite at step {step}; try a lower --lr", file=sys.stderr)
                return 1
            optimizer.step(model.params, grads, lr=lr)
            if step > 1:                                  # the first step pays for warm-up: skip it
                train_seconds += time.perf_counter() - tick
                train_tokens += int((batch.src != 0).sum()) + batch.n_tokens
            recent.append(loss)
            row = {"step": step, "train_loss": loss, "lr": lr, "grad_norm": norm}
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f}", refresh=False)
            if step % args.eval_interval == 0 and step < args.max_iters:
                scores = evaluate(model, subset_arrays, subset, tgt_vocab, level, max_len)
                row.update(val_loss=scores["loss"], exact_match=scores["exact_match"])
                bar.write(f"step {step}: train {np.mean(recent):.4f}, val {scores['loss']:.4f}, exact match "
                          f"{scores['exact_match']:.1%} on {len(subset)} held-out pairs", file=sys.stderr)
                recent = []
            rows.append(row)
            log.write(json.dumps(row) + "\n")

    final = evaluate(model, test, test_pairs, tgt_vocab, level, max_len)
    train_subset = train_pairs[:N_TEST_DATES]                 # as many training pairs as held-out dates
    train_scores = evaluate(model, encode_pairs(train_subset, src_vocab, tgt_vocab, level), train_subset,
                            tgt_vocab, level, max_len)
    rows[-1]["val_loss"] = final["loss"]
    plot_loss_curve(rows, out_dir / "loss.png", title=f"seq2seq on {Path(source).name}")
    plot_alignments(model, test_pairs, src_vocab, tgt_vocab, level, max_len, out_dir)
    summary = {"final_train_loss": train_scores["loss"], "final_val_loss": final["loss"],
               "val_perplexity": final["perplexity"],
               "tokens_per_second": train_tokens / train_seconds if train_seconds else 0.0,
               "seconds": None, "iters": args.max_iters, "checkpoint": str(out_dir / LATEST_NAME),
               "exact_match": final["exact_match"], "char_accuracy": final["char_accuracy"],
               "n_eval": len(test_pairs)}
    if args.data is not None:
        summary["bleu"] = final["bleu"]
    save(out_dir / LATEST_NAME, model, optimizer, (src_vocab, tgt_vocab), level, args.max_iters, batch_rng,
         {"data": {"source": source}, "metrics": {k: v for k, v in summary.items() if k != "seconds"}})
    for (src, ref), hyp in list(zip(test_pairs, final["hypotheses"]))[:args.samples]:
        print(f"{src!r} → {hyp!r} ({'correct' if hyp == ref else 'expected ' + repr(ref)})")
    summary["seconds"] = time.perf_counter() - started
    print(f"final: exact match {summary['exact_match']:.2%}, char accuracy {summary['char_accuracy']:.2%} on "
          f"{len(test_pairs):,} held-out pairs, val loss {final['loss']:.4f}, {summary['seconds']:.1f} s; "
          f"outputs in {out_dir}", file=sys.stderr)
    print(json.dumps(summary))
    return 0
