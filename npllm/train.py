"""``npllm train``: the training loop for language models, with nanoGPT's recipe.

Recipe (nanoGPT's ``train.py``): AdamW (β2 = 0.99, weight decay on matrices only), linear warm-up then
cosine decay to ``--min-lr`` at ``--lr-decay-iters``, gradient clipping at a global norm, optional
dropout and gradient accumulation.  Every ``--eval-interval`` steps the mean validation loss over
``--eval-iters`` batches is measured (the same windows each time, drawn by their own generator, so
evaluation never changes which training batches come next), the latest state is written to
``ckpt.safetensors`` and the best one to ``best.safetensors``; ``--patience`` stops early.

Randomness comes from two generators, both saved in every checkpoint: one draws the training batches,
one draws dropout masks.  A run resumed with ``--resume`` therefore repeats exactly the losses the
uninterrupted run would have had (given the same flags and a schedule fixed by ``--lr-decay-iters``).

Outputs in ``--out-dir``: the checkpoints, ``metrics.jsonl`` (one JSON object per step: step,
train_loss, lr, grad_norm; evaluation steps add val_loss, val_perplexity, tokens_per_second) and
``loss.png``.  stdout gets the samples and, last, one JSON line with the final numbers.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from npllm.backend import ops
from npllm.errors import CheckpointError, UsageError
from npllm.train_setup import RunState, build_run, save_state

SAMPLE_TEMPERATURE = 0.8   # a little below 1: fewer low-probability typos in the printed samples


def select_backend(name) -> None:
    """Select --backend (None: keep $NPLLM_BACKEND or numpy); an unavailable one is a UsageError."""
    from npllm.backend import get_backend, set_backend
    try:
        set_backend(name) if name is not None else get_backend()
    except (ValueError, RuntimeError) as exc:
        raise UsageError("--backend", str(exc)) from None


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse rather than hand it back to the OS.

    Every step allocates and frees the same few-MiB activation arrays.  By default glibc serves blocks
    this size with fresh mmaps or trims them off the heap when freed, so each step page-faults its
    memory in again: here that was 15% of a step in system time and 25% slower steps
    (shared/PERF-NOTES.md, lesson 5).  A process-wide setting, so only the commands call it.
    """
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return                                  # not glibc (macOS, Windows, musl): nothing to tune
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)     # blocks below 32 MiB come from the heap...
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024)   # ...which is not shrunk until 1 GiB lies free


def train_step(run: RunState, lr: float) -> tuple[float, float]:
    """One optimizer step over --grad-accum micro-batches → (mean loss, gradient norm before clipping)."""
    model, args = run.model, run.args
    accum = args.grad_accum
    grads, total_loss = None, 0.0
    for _ in range(accum):
        x, y = run.next_batch()
        logits, cache = model.forward(x, training=True, rng=run.dropout_rng)
        loss, ce_cache = ops.cross_entropy_forward(logits, y)
        # d(mean over micro-batches)/d(loss_i) = 1/accum: scaling here sums to the mean gradient.
        micro_grads = model.backward(ops.cross_entropy_backward(1.0 / accum, ce_cache), cache)
        if grads is None:
            grads = micro_grads
        else:
            for name, grad in micro_grads.items():
                grads[name] += grad
        total_loss += float(loss) / accum
    if not math.isfinite(total_loss):
        return total_loss, math.nan
    from npllm.optim import clip_grad_norm
    norm = clip_grad_norm(grads, args.grad_clip)
    if math.isfinite(norm):
        run.optimizer.step(model.params, grads, lr=lr)
    return total_loss, norm


@contextmanager
def _stop_on_ctrl_c(flag: dict):
    """Turn the first Ctrl-C into flag["stop"] = True (the loop saves and exits); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, previous)
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(run: RunState):
    from tqdm.auto import tqdm
    return tqdm(total=run.args.max_iters, initial=run.step, disable=run.args.no_progress, file=sys.stderr,
                dynamic_ncols=True, unit="it", desc=f"train {run.model.kind}")


def _log(bar, message: str) -> None:
    bar.write(message, file=sys.stderr)


def train_loop(run: RunState) -> str:
    """Run steps until --max-iters, early stop, Ctrl-C or a non-finite loss; → "done"|"early"|"interrupted"|"diverged"."""
    args = run.args
    flag = {"stop": False}
    first_step = run.step
    since_eval = []
    with _stop_on_ctrl_c(flag), _progress(run) as bar:
        while run.step < args.max_iters:
            if flag["stop"]:
                save_state(run, run.latest_path)
                _log(bar, f"interrupted at step {run.step}: saved {run.latest_path}; continue with --resume")
                return "interrupted"
            lr = run.lr_at(run.step)
            started = time.perf_counter()
            loss, norm = train_step(run, lr)
            elapsed = time.perf_counter() - started
            if not (math.isfinite(loss) and math.isfinite(norm)):
                _log(bar, f"error: the loss became {'non-finite' if math.isfinite(loss) else loss} at step "
                     f"{run.step + 1} (gradient norm {norm}); stopping without saving, so the last good "
                     f"checkpoint {run.latest_path} is unchanged. Try a lower --lr or --grad-clip 1.0.")
                return "diverged"
            if run.step > first_step:           # the first step pays for compilation and warm-up: skip it
                run.train_seconds += elapsed
                run.train_tokens += run.tokens_per_step
            run.step += 1
            since_eval.append(loss)
            row = {"step": run.step, "train_loss": loss, "lr": lr, "grad_norm": norm}
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f}, {run.tokens_per_second():,.0f} tok/s", refresh=False)
            if run.step % args.eval_interval == 0 or run.step == args.max_iters:
                improved = run.evaluate(row, train_loss=float(np.mean(since_eval)))
                since_eval = []
                _log(bar, f"step {run.step}: train {row['train_loss_avg']:.4f}, val {row['val_loss']:.4f} "
                     f"(perplexity {row['val_perplexity']:.2f}), lr {lr:.2e}, "
                     f"{run.tokens_per_second():,.0f} tok/s" + (" *" if improved else ""))
                run.record(row)
                save_state(run, run.latest_path)
                if improved:
                    save_state(run, run.best_path)
                if args.patience and run.evals_since_best >= args.patience:
                    _log(bar, f"early stop: no better val loss in {args.patience} evaluations "
                         f"(best {run.best_val_loss:.4f})")
                    return "early"
            else:
                run.record(row)
    return "done"


SMALL_MODEL_WIDTH = 256   # up to this n_embd/hidden_size, generation and evaluation use one BLAS thread


def blas_threads(model, threads: int | None = None, training: bool = False):
    """Context: NumPy's BLAS limited to ``threads``; None means BLAS's own choice (every core) when
    ``training``, else one thread for models up to SMALL_MODEL_WIDTH wide.

    Training steps multiply (batch · block, width) matrices, big enough for a BLAS thread team: on the
    2-core Xeon, ``npllm train`` (default GPT) ran 12,828 tok/s with one thread and 14,487 with two on
    numpy, 16,422 and 21,526 on numba. Generating one token multiplies single rows, where a team's
    hand-offs and spinning idle workers cost more than they save."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits
    if threads is None and not training:
        width = getattr(model.config, "n_embd", None) or getattr(model.config, "hidden_size", 0)
        threads = 1 if width <= SMALL_MODEL_WIDTH else None
    return threadpool_limits(limits=threads, user_api="blas") if threads else nullcontext()


def print_header(run: RunState) -> None:
    """What is being trained on what, and the baselines its loss must beat (stderr)."""
    config = ", ".join(f"{k} {v}" for k, v in run.model.config_dict().items() if k != "vocab_size")
    resumed = f", resuming at step {run.step}" if run.step else ""
    print(f"{run.model.kind}: {run.model.num_params() / 1e6:.2f}M parameters ({config}); "
          f"{run.data_name}: {len(run.train_ids):,} train / {len(run.val_ids):,} val tokens, "
          f"{type(run.tokenizer).__name__} vocabulary {run.tokenizer.vocab_size}{resumed}\n"
          f"baselines: uniform guess {math.log(run.tokenizer.vocab_size):.3f}, unigram entropy "
          f"{run.unigram:.3f} nats/token (the best loss without context)", file=sys.stderr)


def print_samples(run: RunState) -> None:
    """Print --samples texts of --sample-tokens tokens from the trained model (stdout)."""
    from npllm.generate import generate, prompt_ids
    args = run.args
    if not (args.samples and args.sample_tokens):
        return
    try:
        ids, echo = prompt_ids(run.tokenizer, getattr(args, "sample_prompt", ""))
    except ValueError:                       # the prompt has a character this corpus never uses
        ids, echo = prompt_ids(run.tokenizer, "")
    idx = np.tile(np.asarray(ids, dtype=np.int64), (args.samples, 1))
    tokens = generate(run.model, idx, args.sample_tokens, temperature=SAMPLE_TEMPERATURE,
                      rng=np.random.default_rng([args.seed, 3]))
    for i, row in enumerate(tokens):
        print(f"--- sample {i + 1} (temperature {SAMPLE_TEMPERATURE}) ---")
        print(run.tokenizer.decode(row[0 if echo else len(ids):].tolist()))


def run_from_args(args) -> int:
    """``npllm train``: set up, train, evaluate, sample, print the final JSON line."""
    if args.model == "seq2seq" or args.task is not None:
        return _run_seq2seq(args)
    select_backend(args.backend)
    keep_freed_memory()
    started = time.perf_counter()
    if args.init_from and not args.resume:
        from npllm.init_from import check_flags
        check_flags(args)                  # a flag contradicting the loaded architecture: error before any work
    try:
        run = build_run(args)
        print_header(run)
        with blas_threads(run.model, args.blas_threads, training=True):
            return _train_and_report(run, args, started)
    except KeyboardInterrupt:       # before the loop, after it, or a second Ctrl-C inside it
        print(f"\naborted; the checkpoints in {args.out_dir} are those of the last evaluation", file=sys.stderr)
        return 130


def _train_and_report(run: RunState, args, started: float) -> int:
    status = train_loop(run)
    if status in ("interrupted", "diverged"):
        return 130 if status == "interrupted" else 1
    summary = run.final_summary()
    summary["seconds"] = time.perf_counter() - started
    try:
        from npllm.plots import plot_loss_curve
        plot_loss_curve(run.rows, run.out_dir / "loss.png", title=f"{run.model.kind} on {run.data_name}")
    except ValueError:
        pass                                   # nothing to plot (zero new steps)
    print(f"final: train {summary['final_train_loss']:.4f}, val {summary['final_val_loss']:.4f} "
          f"(perplexity {summary['val_perplexity']:.2f}; unigram baseline {run.unigram:.4f}), "
          f"{summary['tokens_per_second']:,.0f} tok/s, {summary['seconds']:.1f} s; "
          f"outputs in {run.out_dir}", file=sys.stderr)
    print_samples(run)
    if args.init_from:
        from npllm.init_from import export_hf
        hf_dir = export_hf(run.model, run.tokenizer, run.out_dir)   # <out-dir>/hf: transformers' layout
        if hf_dir is not None:
            summary["hf"] = str(hf_dir)
    print(json.dumps(summary))
    return 0


def _run_seq2seq(args) -> int:
    """--model seq2seq / --task: handled by npllm.train_seq2seq when that module is installed."""
    try:
        from npllm import train_seq2seq
    except ImportError:
        raise UsageError("--model", "seq2seq training is not part of this build (npllm.train_seq2seq is "
                         "missing)") from None
    return train_seq2seq.run(args)


def tokenizer_from_checkpoint(checkpoint):
    """The tokenizer stored in a checkpoint's metadata (CheckpointError when absent or malformed)."""
    from npllm.tokenizers import tokenizer_from_dict
    try:
        return tokenizer_from_dict(checkpoint.meta.get("tokenizer"))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint's tokenizer is missing or malformed: {exc}") from None


def open_checkpoint(args):
    """What ``npllm generate`` and ``npllm eval`` start with: select --backend, keep freed memory, load
    --checkpoint → (checkpoint, model, tokenizer)."""
    from npllm.checkpoint import load_checkpoint
    from npllm.models import model_from_checkpoint
    select_backend(args.backend)
    keep_freed_memory()
    checkpoint = load_checkpoint(args.checkpoint)
    return checkpoint, model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)


def corpus_ids(path, tokenizer, flag: str, split: bool = False):
    """Token ids (N,) of the text file at path (None: the built-in corpus); split=True → (train, val)."""
    from npllm.data import builtin_corpus, encode_corpus, load_text, train_val_split
    try:
        text = builtin_corpus() if path is None else load_text(path)
        ids = encode_corpus(text, tokenizer)
    except ValueError as exc:
        raise UsageError(flag, str(exc)) from None
    return train_val_split(ids) if split else ids
