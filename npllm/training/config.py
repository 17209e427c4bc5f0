"""Every setting of a training run, in one dataclass that the checkpoint records whole.

A :class:`TrainConfig` field left ``None`` means "not given": :func:`resolve` fills it from the defaults of
the task (language modelling or seq2seq, which want different batch sizes and learning rates) and
checks the values that depend on each other.  Because "not given" is ``None`` and never a value a user
can type, a resumed run knows exactly which flags were typed on its command line, without guessing by
comparing values with defaults.

``--resume`` restores the recorded config; :func:`merge_resumed` lets typed fields change it only where
that cannot change what the run computes (:data:`EXTENDABLE`: how long to run, how often to evaluate,
what to print), and refuses the rest by name.  ``--init-from`` refuses typed architecture fields that
contradict the loaded model the same way (:func:`check_against_model`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from npllm.errors import UsageError

MODELS = ("gpt", "llama", "lstm", "gru", "rnn", "seq2seq")
TOKENIZERS = ("char", "word", "bpe")
DTYPES = ("float32", "float64")
BACKENDS = ("numpy", "numba", "cuda")


@dataclass
class TrainConfig:
    """The flags of ``npllm train`` (one field per flag; None = not given, filled by :func:`resolve`)."""
    model: str | None = None
    data: str | None = None
    task: str | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    n_kv_head: int | None = None
    intermediate_size: int | None = None
    rope_theta: float | None = None
    hidden_size: int | None = None
    block_size: int | None = None
    batch_size: int | None = None
    max_iters: int | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_iters: int | None = None
    lr_decay_iters: int | None = None
    weight_decay: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    grad_clip: float | None = None
    dropout: float | None = None
    grad_accum: int | None = None
    eval_interval: int | None = None
    eval_iters: int | None = None
    patience: int | None = None
    seed: int | None = None
    backend: str | None = None
    dtype: str | None = None
    blas_threads: int | None = None
    out_dir: str | None = None
    init_from: str | None = None
    samples: int | None = None
    sample_tokens: int | None = None
    sample_prompt: str | None = None
    no_progress: bool | None = None

    def given(self) -> dict:
        """The fields that hold a value (typed on the command line, or recorded by a run)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from a recorded dict; unknown keys are an error (a checkpoint from another npllm)."""
        if not isinstance(values, dict):
            raise ValueError(f"the recorded run config must be a JSON object, got {type(values).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"the recorded run config has unknown fields {unknown}")
        return cls(**values)


def flag(name: str) -> str:
    """The command-line flag of a field: "n_layer" → "--n-layer"."""
    return "--" + name.replace("_", "-")


# Defaults every task shares.
COMMON_DEFAULTS = {"model": "gpt", "tokenizer": "char", "vocab_size": 512, "n_head": 4, "block_size": 64,
                   "beta1": 0.9, "beta2": 0.99, "dropout": 0.0, "grad_accum": 1, "eval_iters": 20,
                   "patience": 0, "seed": 1337, "dtype": "float32", "out_dir": "./out", "samples": 2,
                   "sample_tokens": 200, "sample_prompt": "The", "no_progress": False}
# Language models: a char GPT on the built-in corpus in about 2 minutes on 2 cores (README).
LM_DEFAULTS = {"n_embd": 128, "hidden_size": 256, "batch_size": 16, "max_iters": 1000, "lr": 3e-3,
               "weight_decay": 0.1, "grad_clip": 1.0, "eval_interval": 100}
# Seq2seq learns from short pairs: bigger batches of them, a smaller model, a higher rate, no decay.
SEQ2SEQ_DEFAULTS = {"n_layer": 1, "n_embd": 32, "hidden_size": 128, "batch_size": 128, "max_iters": 800,
                    "lr": 5e-3, "weight_decay": 0.0, "grad_clip": 5.0, "eval_interval": 200}

# Fields a resumed run may change: they decide how long it runs and what it reports, not what it computes.
EXTENDABLE = ("max_iters", "eval_interval", "eval_iters", "patience", "backend", "blas_threads", "out_dir",
              "samples", "sample_tokens", "sample_prompt", "no_progress")
# Fields fixed by a loaded model (--init-from): the architecture and its vocabulary.
ARCHITECTURE = ("model", "tokenizer", "vocab_size", "n_layer", "n_head", "n_embd", "n_kv_head", "intermediate_size",
                "rope_theta", "hidden_size")
# Llama's own fields: refused for other models, defaulted from n_head and n_embd for llama (resolve).
LLAMA_FIELDS = ("n_kv_head", "intermediate_size", "rope_theta")
LLAMA_ROPE_THETA = 10000.0
LLAMA_MLP_MULTIPLE = 32     # SwiGLU's width: 8/3 · n_embd (same parameters as a 4·n_embd MLP), rounded up to this

# Sizes past these cannot be trained on a laptop: refused before anything is allocated.
MAX_WIDTH = 1 << 16
MAX_LAYERS = 1024
MAX_BLOCK = 1 << 20
MAX_BATCH_TOKENS = 1 << 26


def defaults_for(model: str) -> dict:
    """The default of every field for a model kind ("seq2seq" or a language model)."""
    task_defaults = SEQ2SEQ_DEFAULTS if model == "seq2seq" else LM_DEFAULTS
    n_layer = task_defaults.get("n_layer", 3 if model in ("gpt", "llama") else 1)
    return {**COMMON_DEFAULTS, **task_defaults, "n_layer": n_layer}


def _check_choice(config: TrainConfig, name: str, choices) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise UsageError(flag(name), f"must be one of {', '.join(choices)}, got {value!r}")


def _check_number(config: TrainConfig, name: str, low=None, high=None, low_open=False, high_open=False,
                  integer=False) -> None:
    value = getattr(config, name)
    if value is None:
        return
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(flag(name), f"expected an integer, got {value!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UsageError(flag(name), f"expected a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(flag(name), f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UsageError(flag(name), f"must be {'<' if high_open else '<='} {high}, got {value}")


def validate(config: TrainConfig) -> None:
    """UsageError naming the first field whose value is out of range (config fully resolved)."""
    for name, choices in (("model", MODELS), ("tokenizer", TOKENIZERS), ("dtype", DTYPES)):
        _check_choice(config, name, choices)
    if config.backend is not None:
        _check_choice(config, "backend", BACKENDS)
    if config.task not in (None, "dates"):
        raise UsageError("--task", f"must be dates, got {config.task!r}")
    for name, high in (("n_layer", MAX_LAYERS), ("n_head", MAX_WIDTH), ("n_embd", MAX_WIDTH),
                       ("n_kv_head", MAX_WIDTH), ("intermediate_size", 4 * MAX_WIDTH), ("hidden_size", MAX_WIDTH),
                       ("block_size", MAX_BLOCK), ("vocab_size", 1 << 20),
                       ("batch_size", MAX_BATCH_TOKENS), ("grad_accum", 1 << 20), ("eval_interval", None),
                       ("eval_iters", 1 << 20), ("max_iters", None), ("lr_decay_iters", None),
                       ("blas_threads", 4096)):
        _check_number(config, name, 1, high, integer=True)
    for name in ("warmup_iters", "patience", "samples", "sample_tokens"):
        _check_number(config, name, 0, None, integer=True)
    _check_number(config, "seed", 0, 2**32 - 1, integer=True)
    _check_number(config, "lr", 0.0, 10.0, low_open=True)
    _check_number(config, "min_lr", 0.0, None)
    _check_number(config, "rope_theta", 0.0, 1e12, low_open=True)
    _check_number(config, "weight_decay", 0.0, 10.0)
    _check_number(config, "grad_clip", 0.0, None)
    for name in ("beta1", "beta2", "dropout"):
        _check_number(config, name, 0.0, 1.0, high_open=True)
    if config.min_lr > config.lr:
        raise UsageError("--min-lr", f"must be <= --lr ({config.lr}), got {config.min_lr}")
    if config.warmup_iters > config.lr_decay_iters:
        raise UsageError("--warmup-iters", f"must be <= --lr-decay-iters ({config.lr_decay_iters}), "
                                           f"got {config.warmup_iters}")
    tokens = config.batch_size * config.block_size
    if tokens > MAX_BATCH_TOKENS:
        raise UsageError("--batch-size", f"--batch-size {config.batch_size} × --block-size {config.block_size} "
                                         f"= {tokens:,} tokens a step, more than {MAX_BATCH_TOKENS:,}")


def estimate_bytes(config: TrainConfig, vocab_size: int) -> tuple[int, str]:
    """Rough bytes a training step holds (weights, gradients, AdamW's two moments, activations) and the
    flag that drives it most — enough to refuse a size that cannot fit before anything is allocated."""
    itemsize = 8 if config.dtype == "float64" else 4
    tokens = config.batch_size * config.block_size * config.grad_accum
    if config.model == "gpt":
        width, layers = config.n_embd, config.n_layer
        params = 12 * layers * width * width + (vocab_size + config.block_size) * width
        activations = tokens * (layers * 34 * width + 2 * vocab_size)
        widest = "--n-embd"
    elif config.model == "llama":
        width, layers, inner = config.n_embd, config.n_layer, config.intermediate_size
        kv_width = width // config.n_head * config.n_kv_head
        params = layers * (2 * width * width + 2 * width * kv_width + 3 * width * inner) + 2 * vocab_size * width
        # per layer: norms, q/k/v/rope, attention output, residuals (≈ 16 C), gate/up/SiLU/product (≈ 5 I)
        activations = tokens * (layers * (16 * width + 5 * inner) + 2 * vocab_size)
        activations += config.batch_size * config.grad_accum * layers * config.n_head * config.block_size ** 2
        widest = "--intermediate-size" if inner > 4 * width else "--n-embd"
    else:
        width, layers = config.hidden_size, config.n_layer
        params = layers * 4 * width * (2 * width) + 2 * vocab_size * max(width, config.n_embd or 0)
        activations = tokens * (layers * 12 * width + 2 * vocab_size)
        widest = "--hidden-size"
    longest = "--block-size" if config.block_size >= config.batch_size else "--batch-size"
    flag_name = widest if 4 * params >= activations else longest
    return (4 * params + activations) * itemsize, flag_name


def check_fits(config: TrainConfig, vocab_size: int) -> None:
    """UsageError, with the estimate, when a run cannot fit in this machine's memory."""
    import os
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 1 << 40
    needed, flag_name = estimate_bytes(config, vocab_size)
    if needed > memory:
        raise UsageError(flag_name, f"this run needs about {needed / 2**30:,.1f} GiB (weights, gradients, AdamW "
                                    f"state and activations), more than this machine's {memory / 2**30:,.1f} GiB")


def _check_seq2seq(config: TrainConfig, typed: dict) -> None:
    """UsageError for typed flags a seq2seq run cannot honour."""
    if typed.get("model") not in (None, "seq2seq") and config.task is not None:
        raise UsageError("--task", f"--task {config.task} trains a seq2seq model; drop --model {typed['model']}")
    if config.task is not None and config.data is not None:
        raise UsageError("--data", "give either --task dates or --data PAIRS.tsv, not both")
    refusals = {"init_from": "fine-tuning applies to language models; seq2seq trains from scratch",
                "n_head": "has no meaning for the LSTM seq2seq",
                "block_size": "has no meaning for seq2seq (pairs are padded to their length)",
                "dropout": "is not implemented for seq2seq",
                "grad_accum": "is not implemented for seq2seq"}
    for name, message in refusals.items():
        if name in typed:
            raise UsageError(flag(name), message)
    if typed.get("n_layer", 1) != 1:
        raise UsageError("--n-layer", f"the seq2seq encoder and decoder have one LSTM layer each, got {typed['n_layer']}")
    tokenizer = typed.get("tokenizer", "char")
    if tokenizer == "bpe" or (config.data is None and tokenizer != "char"):
        raise UsageError("--tokenizer", "seq2seq tokenises by 'char' or, for --data, 'word'")


def resolve(typed: TrainConfig) -> TrainConfig:
    """The complete config of a new run: typed fields kept, the rest from the task's defaults, checked."""
    given = typed.given()
    model = "seq2seq" if typed.task is not None and typed.model in (None, "seq2seq") else (typed.model or "gpt")
    config = replace(typed, model=model)
    if model == "seq2seq":
        _check_seq2seq(config, given)
    if model != "seq2seq" and typed.task is not None:
        raise UsageError("--task", f"--task {typed.task} trains a seq2seq model; drop --model {typed.model}")
    for name, value in defaults_for(model).items():
        if getattr(config, name) is None:
            setattr(config, name, value)
    # The schedule's defaults follow from other fields, once, at the start: a resumed run keeps them.
    if config.min_lr is None:
        config.min_lr = config.lr / 10
    if config.lr_decay_iters is None:
        config.lr_decay_iters = config.max_iters
    if config.warmup_iters is None:
        config.warmup_iters = min(100, config.lr_decay_iters // 10)
    _resolve_llama(config, given)
    validate(config)
    if model in ("gpt", "llama") and config.n_embd % config.n_head:
        raise UsageError("--n-embd", f"must be divisible by --n-head ({config.n_head}), got {config.n_embd}")
    if model == "llama":
        _check_llama(config)
    if model in ("lstm", "gru", "rnn") and config.n_layer > 2:
        raise UsageError("--n-layer", f"recurrent models have 1 or 2 layers, got {config.n_layer}")
    check_fits(config, config.vocab_size if config.tokenizer != "char" else 256)
    return config


def _resolve_llama(config: TrainConfig, given: dict) -> None:
    """Llama's fields: refused for other models; for llama, n_kv_head = n_head (plain multi-head
    attention), intermediate_size = 8/3 · n_embd rounded up to a multiple of 32, rope_theta 10000."""
    if config.model != "llama":
        for name in LLAMA_FIELDS:
            if name in given:
                raise UsageError(flag(name), f"applies to --model llama only (this run trains {config.model})")
        return
    if given.get("dropout"):
        raise UsageError("--dropout", "Llama has no dropout (as in Meta's Llama); drop the flag")
    if config.n_kv_head is None:
        config.n_kv_head = config.n_head
    if config.intermediate_size is None and isinstance(config.n_embd, int):
        config.intermediate_size = -(-8 * config.n_embd // (3 * LLAMA_MLP_MULTIPLE)) * LLAMA_MLP_MULTIPLE
    if config.rope_theta is None:
        config.rope_theta = LLAMA_ROPE_THETA


def _check_llama(config: TrainConfig) -> None:
    """UsageError naming the flag unless the head size is even (RoPE rotates pairs) and --n-kv-head divides --n-head."""
    if (config.n_embd // config.n_head) % 2:
        raise UsageError("--n-embd", f"--n-embd / --n-head = {config.n_embd // config.n_head} must be even for "
                                     "llama (RoPE rotates pairs of dimensions)")
    if config.n_head % config.n_kv_head:
        raise UsageError("--n-kv-head", f"must divide --n-head ({config.n_head}), got {config.n_kv_head}")


def merge_resumed(recorded: TrainConfig, typed: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """The recorded config with the typed fields that may change on resume → (config, changes).

    A typed field equal to the recorded value is accepted silently; a different value is a change for an
    :data:`EXTENDABLE` field and a UsageError naming the flag for any other."""
    config, changes = replace(recorded), []
    for name, value in typed.given().items():
        if name == "data":
            continue                                  # compared by content: see the task's restore
        old = getattr(recorded, name)
        if value == old:
            continue
        if name not in EXTENDABLE:
            raise UsageError(flag(name), f"the run being resumed was started with {flag(name)} {old}, got "
                                         f"{value}; --resume continues a run with its own flags (start a new "
                                         "run with --out-dir elsewhere, or --init-from this checkpoint)")
        setattr(config, name, value)
        changes.append(f"{flag(name)} {old} → {value}")
    validate(config)
    return config, changes


def check_against_model(typed: TrainConfig, kind: str, model_config: dict, tokenizer_type: str,
                        what: str) -> None:
    """UsageError for a typed architecture field that contradicts a loaded model (``what`` names it)."""
    loaded = {"model": kind, "tokenizer": tokenizer_type, **{k: v for k, v in model_config.items()}}
    if kind not in ("gpt", "llama"):
        loaded.pop("n_embd", None)
    given = typed.given()
    for name in ARCHITECTURE:
        if name in given and name in loaded and given[name] != loaded[name]:
            raise UsageError(flag(name), f"{what} holds a {kind} model with {name} = {loaded[name]}; it keeps "
                                         f"its architecture, got {flag(name)} {given[name]} (drop the flag)")
