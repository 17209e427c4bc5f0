"""Everything ``npllm train`` sets up before its loop, and the state the loop carries.

:class:`RunState` holds the model, optimizer, tokenizer, data splits, the two random generators
(training batches, dropout masks), the step, the best validation loss and the metrics rows.
:func:`build_run` makes one from the command line — fresh, from ``--init-from``, or from the latest
checkpoint with ``--resume`` — and :func:`save_state` writes it to a checkpoint that restores all of it.
Every user mistake becomes a :class:`~npllm.errors.UsageError` naming the flag.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npllm.checkpoint import BEST_NAME, LATEST_NAME, load_checkpoint, restore_rng, rng_state, save_checkpoint
from npllm.data import check_splits, get_batch
from npllm.errors import CheckpointError, UsageError
from npllm.evaluate import estimate_loss, perplexity, unigram_entropy
from npllm.optim import AdamW, cosine_lr

VAL_FRACTION = 0.1
METRICS_NAME = "metrics.jsonl"


@dataclass
class RunState:
    """A training run: what the loop reads and updates, and what a checkpoint saves."""
    args: object
    model: object
    optimizer: AdamW
    tokenizer: object
    train_ids: np.ndarray
    val_ids: np.ndarray
    block_size: int                 # training window T (<= the model's block_size)
    batch_rng: np.random.Generator
    dropout_rng: np.random.Generator
    out_dir: Path
    data_source: str                # "builtin" or the absolute path of --data
    step: int = 0
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    rows: list = field(default_factory=list)
    train_seconds: float = 0.0      # time inside training steps after this process's first one
    train_tokens: int = 0

    @property
    def latest_path(self) -> Path:
        return self.out_dir / LATEST_NAME

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST_NAME

    @property
    def data_name(self) -> str:
        return "the built-in corpus" if self.data_source == "builtin" else Path(self.data_source).name

    @property
    def tokens_per_step(self) -> int:
        return self.args.batch_size * self.block_size * self.args.grad_accum

    @property
    def unigram(self) -> float:
        return unigram_entropy(self.train_ids, self.tokenizer.vocab_size)

    def lr_at(self, it: int) -> float:
        args = self.args
        return cosine_lr(it, lr=args.lr, min_lr=args.min_lr, warmup_iters=args.warmup_iters,
                         lr_decay_iters=args.lr_decay_iters)

    def next_batch(self):
        """x, y int (B, T) from the training split, drawn by the training generator."""
        return get_batch(self.train_ids, self.args.batch_size, self.block_size, self.batch_rng)

    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    def eval_loss(self, split: str) -> float:
        data = self.val_ids if split == "val" else self.train_ids
        seed = [self.args.seed, 1 if split == "val" else 2]   # fixed windows, independent of training
        return estimate_loss(self.model, data, self.args.batch_size, self.block_size, self.args.eval_iters, seed)

    def evaluate(self, row: dict, train_loss: float) -> bool:
        """Add val loss/perplexity to row; update the best loss; → whether it improved."""
        val = self.eval_loss("val")
        row.update(train_loss_avg=train_loss, val_loss=val, val_perplexity=perplexity(val),
                   tokens_per_second=self.tokens_per_second())
        if val < self.best_val_loss:
            self.best_val_loss, self.evals_since_best = val, 0
            return True
        self.evals_since_best += 1
        return False

    def record(self, row: dict) -> None:
        """Keep a metrics row and append it to metrics.jsonl."""
        self.rows.append(row)
        with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def final_summary(self) -> dict:
        """The final JSON line's numbers (val loss reused when the last step was just evaluated)."""
        last = self.rows[-1] if self.rows else {}
        val = last["val_loss"] if last.get("step") == self.step and "val_loss" in last else self.eval_loss("val")
        return {"final_train_loss": self.eval_loss("train"), "final_val_loss": val,
                "val_perplexity": perplexity(val), "tokens_per_second": self.tokens_per_second(),
                "seconds": None, "iters": self.step, "checkpoint": str(self.latest_path),
                "best_checkpoint": str(self.best_path), "best_val_loss": self.best_val_loss,
                "unigram_baseline": self.unigram}


def save_state(run: RunState, path: Path) -> Path:
    """Write the whole run (weights, optimizer, step, both generators, bookkeeping) to path."""
    arrays, scalars = run.optimizer.state_dict()
    meta = {"model_type": run.model.kind, "model_config": run.model.config_dict(),
            "tokenizer": run.tokenizer.to_dict(), "optimizer": scalars, "step": run.step,
            "rng_state": rng_state(run.batch_rng),
            "extra": {"dropout_rng_state": rng_state(run.dropout_rng), "best_val_loss": run.best_val_loss,
                      "evals_since_best": run.evals_since_best, "block_size": run.block_size,
                      "data": {"source": run.data_source, "val_fraction": VAL_FRACTION}}}
    return save_checkpoint(path, run.model.params, optimizer_arrays=arrays, meta=meta)


def _check_schedule(args) -> None:
    """Fill the schedule defaults and check the flags that depend on each other."""
    if args.min_lr is None:
        args.min_lr = args.lr / 10
    if args.min_lr > args.lr:
        raise UsageError("--min-lr", f"must be <= --lr ({args.lr}), got {args.min_lr}")
    if args.lr_decay_iters is None:
        args.lr_decay_iters = args.max_iters
    if args.warmup_iters is None:
        args.warmup_iters = min(100, args.lr_decay_iters // 10)   # fixed by the schedule, not the run
    if args.warmup_iters > args.lr_decay_iters:
        raise UsageError("--warmup-iters", f"must be <= --lr-decay-iters ({args.lr_decay_iters}), "
                         f"got {args.warmup_iters}")


def _new_model(args, vocab_size: int):
    from npllm.models import GPT, GPTConfig, LANGUAGE_MODELS, RNNLMConfig
    if args.model == "gpt":
        n_layer = 3 if args.n_layer is None else args.n_layer
        if args.n_embd % args.n_head:
            raise UsageError("--n-embd", f"must be divisible by --n-head ({args.n_head}), got {args.n_embd}")
        config = GPTConfig(vocab_size, args.block_size, n_layer, args.n_head, args.n_embd, args.dropout)
        return GPT(config, seed=args.seed, dtype=args.dtype)
    n_layer = 1 if args.n_layer is None else args.n_layer
    if n_layer > 2:
        raise UsageError("--n-layer", f"recurrent models have 1 or 2 layers, got {n_layer}")
    config = RNNLMConfig(vocab_size, args.hidden_size, n_layer, args.block_size, args.dropout)
    return LANGUAGE_MODELS[args.model](config, seed=args.seed, dtype=args.dtype)


def _train_tokenizer(args, text: str):
    from npllm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
    cls = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}[args.tokenizer]
    try:
        return cls.train(text, vocab_size=None if args.tokenizer == "char" else args.vocab_size)
    except ValueError as exc:
        raise UsageError("--vocab-size" if args.tokenizer != "char" else "--tokenizer", str(exc)) from None


def init_from(args):
    """--init-from PATH → (model, tokenizer): an npllm checkpoint, or a Hugging Face GPT-2 directory."""
    from npllm.models import GPT, model_from_checkpoint
    from npllm.train import tokenizer_from_checkpoint
    path = Path(args.init_from)
    try:
        if (path / "config.json").is_file():
            from npllm.tokenizers import BPETokenizer
            model, tokenizer = GPT.from_pretrained(path), BPETokenizer.from_pretrained(path)
        else:
            checkpoint = load_checkpoint(path)
            model, tokenizer = model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)
    except ImportError as exc:
        raise UsageError("--init-from", f"loading GPT-2 directories is not part of this build ({exc})") from None
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError("--init-from", str(exc)) from None
    if model.config.block_size < args.block_size:
        raise UsageError("--block-size", f"must be <= the model's block_size {model.config.block_size}, "
                         f"got {args.block_size}")
    model.config.dropout = args.dropout           # fine-tuning chooses its own regularisation
    want = np.dtype(args.dtype)
    model.params = {name: value.astype(want, copy=False) for name, value in model.params.items()}
    return model, tokenizer


def _data(args, tokenizer, source) -> tuple[np.ndarray, np.ndarray]:
    from npllm.train import corpus_ids
    return corpus_ids(None if source == "builtin" else source, tokenizer, "--data", split=True)


def build_run(args) -> RunState:
    """A ready-to-train RunState from the parsed command line (fresh, --init-from or --resume)."""
    _check_schedule(args)
    out_dir = Path(args.out_dir)
    if args.resume:
        return _resume(args, out_dir)
    source = "builtin" if args.data is None else str(Path(args.data).resolve())
    if args.init_from:
        model, tokenizer = init_from(args)
        block_size = args.block_size
    else:
        from npllm.data import builtin_corpus, load_text
        try:
            text = builtin_corpus() if args.data is None else load_text(args.data)
        except ValueError as exc:
            raise UsageError("--data", str(exc)) from None
        tokenizer = _train_tokenizer(args, text)
        model = _new_model(args, tokenizer.vocab_size)
        block_size = model.config.block_size
    train_ids, val_ids = _data(args, tokenizer, source)
    _check_data(train_ids, val_ids, block_size)
    optimizer = AdamW(args.lr, betas=(args.beta1, args.beta2), weight_decay=args.weight_decay)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_NAME).write_text("")
    return RunState(args, model, optimizer, tokenizer, train_ids, val_ids, block_size,
                    np.random.default_rng(args.seed), np.random.default_rng([args.seed, 4]), out_dir, source)


def _check_data(train_ids, val_ids, block_size: int) -> None:
    try:
        check_splits(train_ids, val_ids, block_size)
    except ValueError as exc:
        raise UsageError("--data", f"{exc} (--block-size is {block_size})") from None


def _resume(args, out_dir: Path) -> RunState:
    """The RunState saved in <out-dir>/ckpt.safetensors; model, tokenizer and data come from it."""
    from npllm.models import model_from_checkpoint
    from npllm.train import tokenizer_from_checkpoint
    path = out_dir / LATEST_NAME
    if not path.is_file():
        raise UsageError("--resume", f"no checkpoint to resume from: {path} does not exist")
    try:
        checkpoint = load_checkpoint(path)
        model = model_from_checkpoint(checkpoint)
        tokenizer = tokenizer_from_checkpoint(checkpoint)
        meta, extra = checkpoint.meta, checkpoint.meta.get("extra", {})
        optimizer = AdamW(args.lr, betas=(args.beta1, args.beta2), weight_decay=args.weight_decay)
        optimizer.load_state_dict(checkpoint.optimizer_arrays, meta["optimizer"], model.params)
        batch_rng, dropout_rng = restore_rng(meta["rng_state"]), restore_rng(extra["dropout_rng_state"])
        step, block_size, source = int(meta["step"]), int(extra["block_size"]), extra["data"]["source"]
    except (CheckpointError, ValueError, KeyError, TypeError) as exc:
        raise UsageError("--resume", f"{path}: {exc}") from None
    if step >= args.max_iters:
        raise UsageError("--max-iters", f"the checkpoint in {out_dir} is already at step {step}; "
                         f"ask for more to continue")
    if args.data is not None:
        source = str(Path(args.data).resolve())
    model.config.dropout = args.dropout
    train_ids, val_ids = _data(args, tokenizer, source)
    _check_data(train_ids, val_ids, block_size)
    rows = _read_rows(out_dir / METRICS_NAME, step)
    (out_dir / METRICS_NAME).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return RunState(args, model, optimizer, tokenizer, train_ids, val_ids, block_size, batch_rng, dropout_rng,
                    out_dir, source, step=step, best_val_loss=float(extra.get("best_val_loss", math.inf)),
                    evals_since_best=int(extra.get("evals_since_best", 0)), rows=rows)


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
