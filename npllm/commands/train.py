"""``npllm train``: train a language model (or seq2seq) from scratch, from --init-from, or --resume a run.

Every flag defaults to ``None`` on the parser, so the handler knows exactly which flags were typed; the
defaults themselves live in :mod:`npllm.training.config` (they depend on the model) and the help shows
them.  The run's whole config is recorded in its checkpoint, which ``--resume`` restores.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from npllm.commands._args import BACKEND_CHOICES, configure_process, nonneg_float, nonneg_int, positive_float, positive_int, probability, seed_value
from npllm.errors import UsageError
from npllm.training.config import (COMMON_DEFAULTS, LM_DEFAULTS, MODELS, SEQ2SEQ_DEFAULTS, TOKENIZERS, TrainConfig,
                                   resolve)


def _default(name: str) -> str:
    """The help text's default: one value, or the language-model and seq2seq values."""
    if name in LM_DEFAULTS or name in SEQ2SEQ_DEFAULTS:
        lm = LM_DEFAULTS.get(name, "3 for gpt/llama, 1 for rnn/lstm/gru" if name == "n_layer" else None)
        return f"default: {lm}; seq2seq {SEQ2SEQ_DEFAULTS[name]}"
    return f"default: {COMMON_DEFAULTS[name]}" if name in COMMON_DEFAULTS else ""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a language model (or seq2seq) from scratch")

    def arg(name, help_text, **kwargs):
        default = _default(name.lstrip("-").replace("-", "_"))
        p.add_argument(name, default=None, help=f"{help_text} ({default})" if default else help_text, **kwargs)

    arg("--model", "architecture", choices=MODELS)
    arg("--data", "UTF-8 text file (seq2seq: tab-separated source/target lines); default: the built-in corpus "
                  "of Python's documentation topics")
    arg("--task", "built-in seq2seq task", choices=["dates"])
    arg("--tokenizer", "how text becomes ids", choices=TOKENIZERS)
    arg("--vocab-size", "BPE/word vocabulary size", type=positive_int)
    arg("--n-layer", "layers", type=positive_int)
    arg("--n-head", "GPT/llama attention heads", type=positive_int)
    arg("--n-embd", "GPT/llama width (divisible by --n-head); seq2seq: embedding size", type=positive_int)
    arg("--n-kv-head", "llama: key/value heads (grouped-query attention; divides --n-head); default: --n-head",
        type=positive_int)
    arg("--intermediate-size", "llama: SwiGLU MLP width; default: 8/3 · --n-embd rounded up to a multiple of 32",
        type=positive_int)
    arg("--rope-theta", "llama: RoPE base; default: 10000", type=positive_float)
    arg("--hidden-size", "RNN/LSTM/GRU hidden size", type=positive_int)
    arg("--block-size", "tokens of context per training window", type=positive_int)
    arg("--batch-size", "windows (or pairs) per micro-batch", type=positive_int)
    arg("--max-iters", "optimizer steps in total", type=positive_int)
    arg("--lr", "peak learning rate (AdamW)", type=positive_float)
    arg("--min-lr", "learning rate at the end of the cosine; default: --lr / 10", type=nonneg_float)
    arg("--warmup-iters", "linear warm-up steps; default: 10%% of --lr-decay-iters, at most 100", type=nonneg_int)
    arg("--lr-decay-iters", "step where the cosine reaches --min-lr; default: --max-iters", type=positive_int)
    arg("--weight-decay", "AdamW decay of weight matrices", type=nonneg_float)
    arg("--beta1", "AdamW β1", type=probability)
    arg("--beta2", "AdamW β2", type=probability)
    arg("--grad-clip", "max global gradient norm; 0 disables", type=nonneg_float)
    arg("--dropout", "dropout probability while training", type=probability)
    arg("--grad-accum", "micro-batches per optimizer step", type=positive_int)
    arg("--eval-interval", "steps between evaluations (and checkpoints)", type=positive_int)
    arg("--eval-iters", "batches per loss estimate", type=positive_int)
    arg("--patience", "stop after this many evaluations without a better val loss (0: never)", type=nonneg_int)
    arg("--seed", "seeds the weights, batches and dropout", type=seed_value)
    arg("--backend", "default: $NPLLM_BACKEND or numpy", choices=BACKEND_CHOICES)
    arg("--dtype", "parameter dtype", choices=["float32", "float64"])
    arg("--blas-threads", "threads for NumPy's matrix products; default: every core (seq2seq: 1)", type=positive_int)
    arg("--out-dir", "checkpoints, metrics.jsonl and loss.png go here")
    arg("--init-from", "fine-tune from a Hugging Face GPT-2 or Llama/Qwen2/Mistral directory (config.json + "
                       "model.safetensors + tokenizer) or an npllm checkpoint")
    arg("--samples", "samples printed at the end", type=nonneg_int)
    arg("--sample-tokens", "tokens per sample", type=nonneg_int)
    arg("--sample-prompt", "text the samples start from (a newline if the tokenizer cannot encode it)")
    p.add_argument("--no-progress", action="store_true", default=None, help="hide the progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir with every flag it recorded; typed flags may only extend "
                        "it (--max-iters, --eval-interval, --patience, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out-dir")


def typed_config(args) -> TrainConfig:
    """The flags typed on the command line (every parser default is None)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def run(args) -> int:
    """Set up (fresh, --init-from or --resume), train, evaluate, sample, print the final JSON line."""
    from npllm.training import start_run, summarize, train
    from npllm.training.outdir import claim

    started = time.perf_counter()
    typed = typed_config(args)
    if args.resume and args.overwrite:
        raise UsageError("--overwrite", "cannot be combined with --resume")
    if args.resume and args.init_from:
        raise UsageError("--init-from", "a resumed run continues from its own checkpoint; drop --init-from")
    out_dir = Path(args.out_dir or COMMON_DEFAULTS["out_dir"])
    try:
        if not args.resume:     # every value checked, the data read and the model built before out-dir is touched
            config = resolve(typed)
            configure_process(config.backend, blas_threads=_blas_threads(config))
            run_state, notes = start_run(typed, False, out_dir)
        with claim(out_dir, args.resume, args.overwrite) as out_path:
            if args.resume:
                run_state, notes = start_run(typed, True, out_path)
                configure_process(run_state.config.backend, blas_threads=_blas_threads(run_state.config))
            for note in notes:
                print(note, file=sys.stderr)
            print(run_state.task.describe() + (f"; resuming at step {run_state.step}" if run_state.step else ""),
                  file=sys.stderr)
            return _train_and_report(run_state, started, train, summarize)
    except KeyboardInterrupt:       # before the loop, after it, or a second Ctrl-C inside it
        print(f"\naborted; the checkpoints in {out_dir} are those of the last evaluation", file=sys.stderr)
        return 130


def _blas_threads(config) -> int | None:
    """--blas-threads, else every core; seq2seq's small (128, 160) @ (160, 512) products gain little from a
    second thread and an idle one spins (docs/performance.md, "Threads"), so it takes one."""
    return config.blas_threads or (1 if config.model == "seq2seq" else None)


def _train_and_report(run_state, started: float, train, summarize) -> int:
    status = train(run_state)
    if status != "done" and status != "early":
        return {"interrupted": 130, "diverged": 1, "write_failed": 1}[status]
    summary = summarize(run_state)
    summary["seconds"] = time.perf_counter() - started
    from npllm.plots import plot_loss_curve
    if run_state.rows:
        plot_loss_curve(run_state.rows, run_state.out_dir / "loss.png",
                        title=f"{run_state.model.kind} on {run_state.task.data_name}")
    config = run_state.config
    log = lambda message: print(message, file=sys.stderr)   # noqa: E731
    for line in run_state.task.samples(config.samples, config.sample_tokens, config.sample_prompt, config.seed):
        print(line)
    run_state.task.finish(run_state.out_dir, summary, log)
    scores = ", ".join(f"{key} {summary[key]:.2%}" for key in ("exact_match", "char_accuracy") if key in summary)
    print(f"final: train {summary['final_train_loss']:.4f}, val {summary['final_val_loss']:.4f} (perplexity "
          f"{summary['val_perplexity']:.2f}{', ' + scores if scores else ''}), {summary['tokens_per_second']:,.0f} "
          f"tok/s, {summary['seconds']:.1f} s; outputs in {run_state.out_dir}", file=sys.stderr)
    print(json.dumps(summary))
    return 0
