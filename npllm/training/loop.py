"""The one training loop, for every model: nanoGPT's recipe around a task's batches and loss.

Recipe (nanoGPT's ``train.py``): AdamW (weight decay on matrices only), linear warm-up then cosine decay
to ``min_lr`` at ``lr_decay_iters``, gradient clipping at a global norm, gradient accumulation over
``grad_accum`` micro-batches.  Every ``eval_interval`` steps (and at the last step) the task evaluates, a
metrics row with the validation numbers is written, the latest state goes to ``ckpt.safetensors`` and an
improved one to ``best.safetensors``; ``patience`` evaluations without improvement stop early.

How a run ends (:func:`train` returns it): "done", "early", "interrupted" (the first Ctrl-C: the state is
saved, then the loop stops; a second Ctrl-C aborts at once), "diverged" (a non-finite loss or gradient: the
loop stops *without* saving, so the last good checkpoint stays as it was) or "write_failed" (a checkpoint
could not be written: the previous one is intact, since writes are atomic).
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from npllm.optim import clip_grad_norm
from npllm.training.run import Run, save_run


def train_step(run: Run, lr: float) -> tuple[float, float, int]:
    """One optimizer step over grad_accum micro-batches → (mean loss, gradient norm before clipping, tokens)."""
    accum = run.config.grad_accum
    grads, total_loss, tokens = None, 0.0, 0
    for _ in range(accum):
        batch = run.task.next_batch(run.batch_rng)
        # d(mean over micro-batches)/d(loss_i) = 1/accum: scaling each backward sums to the mean gradient.
        loss, micro_grads, n = run.task.loss_and_grads(batch, 1.0 / accum, run.dropout_rng)
        if grads is None:
            grads = micro_grads
        else:
            for name, grad in micro_grads.items():
                grads[name] += grad
        total_loss += loss / accum
        tokens += n
    if not math.isfinite(total_loss):
        return total_loss, math.nan, tokens
    norm = clip_grad_norm(grads, run.config.grad_clip)
    if math.isfinite(norm):
        run.optimizer.step(run.model.params, grads, lr=lr)
    return total_loss, norm, tokens


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


def _save(run: Run, path, log) -> bool:
    """Write a checkpoint; on failure log which write failed and what is intact → False."""
    try:
        save_run(run, path)
        return True
    except OSError as exc:
        intact = (f"the checkpoint of step {run.saved_step} in {run.latest_path} is intact"
                  if run.saved_step is not None else "no checkpoint of this run exists yet")
        log(f"error: writing {path} failed ({exc.strerror or exc}); {intact}")
        return False


def _evaluate(run: Run, row: dict, log, lr: float) -> bool:
    """Evaluate, fill the row, update the best loss, log one line → whether it improved."""
    scores = run.task.evaluate()
    row.update(train_loss_avg=float(np.mean(run.since_eval)), **scores, tokens_per_second=run.tokens_per_second())
    run.since_eval, run.last_eval = [], scores
    improved = scores["val_loss"] < run.best_val_loss
    if improved:
        run.best_val_loss, run.evals_since_best = scores["val_loss"], 0
    else:
        run.evals_since_best += 1
    extra = f", exact match {scores['exact_match']:.1%}" if "exact_match" in scores else ""
    log(f"step {run.step}: train {row['train_loss_avg']:.4f}, val {scores['val_loss']:.4f} (perplexity "
        f"{scores['val_perplexity']:.2f}{extra}), lr {lr:.2e}, {run.tokens_per_second():,.0f} tok/s"
        + (" *" if improved else ""))
    return improved


def train(run: Run, log=None) -> str:
    """Run steps until max_iters, early stop, Ctrl-C, a non-finite loss or a failed write; → how it ended."""
    from tqdm.auto import tqdm
    config = run.config
    flag = {"stop": False}
    first_step = run.step
    with _stop_on_ctrl_c(flag), tqdm(total=config.max_iters, initial=run.step, disable=config.no_progress,
                                     file=sys.stderr, dynamic_ncols=True, unit="it",
                                     desc=f"train {run.model.kind}") as bar:
        say = log or (lambda message: bar.write(message, file=sys.stderr))
        while run.step < config.max_iters:
            if flag["stop"]:
                if not _save(run, run.latest_path, say):
                    return "write_failed"
                say(f"interrupted at step {run.step}: saved {run.latest_path}; continue with --resume")
                return "interrupted"
            lr = run.lr_at(run.step)
            started = time.perf_counter()
            loss, norm, tokens = train_step(run, lr)
            elapsed = time.perf_counter() - started
            if not (math.isfinite(loss) and math.isfinite(norm)):
                kept = (f"the last good checkpoint (step {run.saved_step}) in {run.latest_path} is unchanged"
                        if run.saved_step is not None else "no checkpoint was written (none had been saved yet)")
                say(f"error: the {'loss' if not math.isfinite(loss) else 'gradient norm'} became non-finite at "
                    f"step {run.step + 1}; stopping: {kept}. Try a lower --lr or --grad-clip 1.0.")
                return "diverged"
            if run.step > first_step:           # the first step pays for compilation and warm-up: skip it
                run.train_seconds += elapsed
                run.train_tokens += tokens
            run.step += 1
            run.since_eval.append(loss)
            row = {"step": run.step, "train_loss": loss, "lr": lr, "grad_norm": norm}
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f}, {run.tokens_per_second():,.0f} tok/s", refresh=False)
            if run.step % config.eval_interval and run.step != config.max_iters:
                run.record(row)
                continue
            improved = _evaluate(run, row, say, lr)
            run.record(row)
            if not _save(run, run.latest_path, say) or (improved and not _save(run, run.best_path, say)):
                return "write_failed"
            if config.patience and run.evals_since_best >= config.patience:
                say(f"early stop: no better val loss in {config.patience} evaluations (best {run.best_val_loss:.4f})")
                return "early"
    return "done"


def summarize(run: Run) -> dict:
    """The final JSON line's numbers: the task's final metrics, throughput, steps and checkpoint paths."""
    if run.last_eval is None:
        run.last_eval = run.task.evaluate()
    summary = run.task.final_metrics(run.last_eval)
    summary.update(tokens_per_second=run.tokens_per_second(), seconds=None, iters=run.step,
                   checkpoint=str(run.latest_path), best_checkpoint=str(run.best_path),
                   best_val_loss=run.best_val_loss)
    return summary
