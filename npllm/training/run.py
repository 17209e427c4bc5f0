"""A training run's state, and the one checkpoint that records all of it.

:class:`Run` holds what the loop reads and updates: the task (model, tokenizer, data), the optimizer, two
random generators (training batches; dropout masks), the step, the best validation loss, the losses since
the last evaluation and the metrics rows.  :func:`save_run` writes every piece of it, with the run's whole
:class:`~npllm.training.config.TrainConfig`, to one checkpoint; :func:`start_run` makes a Run fresh or from
that checkpoint (``--resume``), so a resumed run repeats exactly the losses the uninterrupted one would have.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npllm.checkpoint import BEST_NAME, LATEST_NAME, load_checkpoint, restore_rng, rng_state, save_checkpoint
from npllm.errors import CheckpointError, UsageError
from npllm.optim import AdamW, cosine_lr
from npllm.training.config import TrainConfig, merge_resumed, resolve
from npllm.training.outdir import METRICS_NAME

CONFIG_KEY = "run"       # meta["extra"]["run"]: every field of the run's TrainConfig


def task_class(model: str):
    """The task that trains ``model``: seq2seq, or language modelling for every other kind."""
    if model == "seq2seq":
        from npllm.training.seq2seq import Seq2SeqTask
        return Seq2SeqTask
    from npllm.training.lm import LanguageModelTask
    return LanguageModelTask


@dataclass
class Run:
    """A training run: what the loop reads and updates, and what a checkpoint saves."""
    config: TrainConfig
    task: object
    optimizer: AdamW
    batch_rng: np.random.Generator
    dropout_rng: np.random.Generator
    out_dir: Path
    step: int = 0
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    since_eval: list = field(default_factory=list)   # training losses since the last evaluation
    rows: list = field(default_factory=list)
    last_eval: dict | None = None
    train_seconds: float = 0.0      # time inside training steps after this process's first one
    train_tokens: int = 0
    saved_step: int | None = None   # the step of the checkpoint on disk (None: none written yet)

    @property
    def model(self):
        return self.task.model

    @property
    def latest_path(self) -> Path:
        return self.out_dir / LATEST_NAME

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST_NAME

    def lr_at(self, step: int) -> float:
        c = self.config
        return cosine_lr(step, lr=c.lr, min_lr=c.min_lr, warmup_iters=c.warmup_iters, lr_decay_iters=c.lr_decay_iters)

    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    def record(self, row: dict) -> None:
        """Keep a metrics row and append it to metrics.jsonl."""
        self.rows.append(row)
        with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def _optimizer(config: TrainConfig) -> AdamW:
    return AdamW(config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)


def save_run(run: Run, path: Path) -> Path:
    """Write the whole run (weights, optimizer, step, generators, config, bookkeeping) to ``path``."""
    arrays, scalars = run.optimizer.state_dict()
    task_meta = run.task.checkpoint_meta()
    extra = {CONFIG_KEY: run.config.to_dict(), "data": task_meta["data"], "task_state": run.task.state(),
             "dropout_rng_state": rng_state(run.dropout_rng), "best_val_loss": run.best_val_loss,
             "evals_since_best": run.evals_since_best, "since_eval": run.since_eval,
             "block_size": task_meta["data"].get("block_size")}
    meta = {"model_type": task_meta["model_type"], "model_config": task_meta["model_config"],
            "tokenizer": task_meta["tokenizer"], "optimizer": scalars, "step": run.step,
            "rng_state": rng_state(run.batch_rng), "extra": extra}
    written = save_checkpoint(path, run.model.params, optimizer_arrays=arrays, meta=meta)
    if path == run.latest_path:
        run.saved_step = run.step
    return written


def start_run(typed: TrainConfig, resume: bool, out_dir: Path) -> tuple[Run, list[str]]:
    """A ready-to-train Run → (run, notes): new from the typed config (nothing is written: the caller claims
    out_dir, see :func:`npllm.training.outdir.claim`), or ``--resume``d from the checkpoint in out_dir."""
    if resume:
        return _resume(typed, out_dir)
    config = resolve(typed)
    config.out_dir = str(out_dir)
    task = task_class(config.model).create(config, typed)
    run = Run(config, task, _optimizer(config), np.random.default_rng(config.seed),
              np.random.default_rng([config.seed, 4]), out_dir)
    return run, []


def _resume(typed: TrainConfig, out_dir: Path) -> tuple[Run, list[str]]:
    path = out_dir / LATEST_NAME
    try:
        checkpoint = load_checkpoint(path)
        meta = checkpoint.meta
        extra = meta.get("extra") or {}
        if CONFIG_KEY not in extra:
            raise CheckpointError("it records no run config (written by an older npllm); start a new run with "
                                  f"--init-from {path}")
        recorded = TrainConfig.from_dict(extra[CONFIG_KEY])
        step = meta["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"step must be an integer >= 0, got {step!r}")
        batch_rng, dropout_rng = restore_rng(meta["rng_state"]), restore_rng(extra["dropout_rng_state"])
    except (CheckpointError, ValueError, KeyError, TypeError) as exc:
        raise UsageError("--resume", f"{path}: {exc}") from None
    config, changes = merge_resumed(recorded, typed)
    config.out_dir = str(out_dir)
    if step >= config.max_iters:
        raise UsageError("--max-iters", f"the checkpoint in {out_dir} is already at step {step}; ask for more "
                                        "to continue")
    try:
        task = task_class(config.model).restore(config, checkpoint, typed.data)
        task.load_state(extra.get("task_state") or {})
        optimizer = _optimizer(config)
        optimizer.load_state_dict(checkpoint.optimizer_arrays, meta["optimizer"], task.model.params)
    except (CheckpointError, ValueError, KeyError, TypeError) as exc:
        raise UsageError("--resume", f"{path}: {exc}") from None
    rows = _read_rows(out_dir / METRICS_NAME, step)
    (out_dir / METRICS_NAME).write_text("".join(json.dumps(row) + "\n" for row in rows))
    last_eval = next((r for r in reversed(rows) if "val_loss" in r), None)
    run = Run(config, task, optimizer, batch_rng, dropout_rng, out_dir, step=step,
              best_val_loss=float(extra.get("best_val_loss", math.inf)),
              evals_since_best=int(extra.get("evals_since_best", 0)), since_eval=list(extra.get("since_eval", [])),
              rows=rows, last_eval=last_eval, saved_step=step)
    notes = [f"resuming {path} at step {step} with the flags it recorded"
             + (f"; changed: {', '.join(changes)}" if changes else "")]
    return run, notes


def _read_rows(path: Path, up_to_step: int) -> list:
    """Metrics rows of steps <= up_to_step (later ones belong to steps the resumed run will redo)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue                    # a line cut short by a crash
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= up_to_step:
            rows.append(row)
    return rows
