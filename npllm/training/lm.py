"""Language modelling as a training task: next-token prediction on windows of one text.

A training example is a random window of ``block_size + 1`` ids from the first 90% of the text (nanoGPT's
``get_batch``); evaluation averages the loss of ``eval_iters`` fixed windows of the last 10%, drawn by their
own generator so evaluating never changes which training batches come next.  The task builds the model
fresh, from ``--init-from`` (an npllm checkpoint or a Hugging Face GPT-2 or Llama-family directory) or
from the checkpoint being resumed, and says what a checkpoint must record to rebuild it (model,
tokenizer, data fingerprint).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from npllm.backend import ops
from npllm.checkpoint import load_checkpoint
from npllm.data import builtin_corpus, check_splits, encode_corpus, get_batch, load_text, train_val_split
from npllm.errors import CheckpointError, UsageError
from npllm.evaluate import estimate_loss, unigram_entropy
from npllm.metrics import perplexity
from npllm.training.config import TrainConfig, check_against_model

SAMPLE_TEMPERATURE = 0.8   # a little below 1: fewer low-probability typos in the printed samples
HF_DIR = "hf"              # where a fine-tuned GPT or Llama is also written in Hugging Face's layout


def text_fingerprint(text: str) -> str:
    """SHA-256 of a corpus: a resumed run checks it is training on the same text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_corpus(source: str | None) -> str:
    """The text of --data (None or "builtin": the built-in corpus); a UsageError naming --data."""
    try:
        return builtin_corpus() if source in (None, "builtin") else load_text(source)
    except ValueError as exc:
        raise UsageError("--data", str(exc)) from None


def tokenizer_from_checkpoint(checkpoint):
    """The tokenizer stored in a checkpoint's metadata (CheckpointError when absent or malformed)."""
    from npllm.tokenizers import tokenizer_from_dict
    try:
        return tokenizer_from_dict(checkpoint.meta.get("tokenizer"))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint's tokenizer is missing or malformed: {exc}") from None


def load_language_model(path):
    """(checkpoint, model, tokenizer) of an npllm checkpoint file or --out-dir."""
    from npllm.models import model_from_checkpoint
    checkpoint = load_checkpoint(path)
    return checkpoint, model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)


def corpus_ids(source: str | None, tokenizer, flag: str = "--data") -> np.ndarray:
    """Token ids (N,) of a text file (None or "builtin": the built-in corpus), errors naming ``flag``."""
    text = read_corpus(source)
    try:
        return encode_corpus(text, tokenizer)
    except ValueError as exc:
        raise UsageError(flag, str(exc)) from None


def _new_model(config: TrainConfig, vocab_size: int):
    from npllm.models import GPT, GPTConfig, LANGUAGE_MODELS, Llama, LlamaConfig, RNNLMConfig
    if config.model == "gpt":
        gpt = GPTConfig(vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd, config.dropout)
        return GPT(gpt, seed=config.seed, dtype=config.dtype)
    if config.model == "llama":
        llama = LlamaConfig(vocab_size, config.block_size, config.n_layer, config.n_head, config.n_kv_head,
                            config.n_embd, config.intermediate_size, rope_theta=config.rope_theta)
        return Llama(llama, seed=config.seed, dtype=config.dtype)
    rnn = RNNLMConfig(vocab_size, config.hidden_size, config.n_layer, config.block_size, config.dropout)
    return LANGUAGE_MODELS[config.model](rnn, seed=config.seed, dtype=config.dtype)


def _train_tokenizer(config: TrainConfig, text: str):
    from npllm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
    cls = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}[config.tokenizer]
    try:
        return cls.train(text, vocab_size=None if config.tokenizer == "char" else config.vocab_size)
    except ValueError as exc:
        raise UsageError("--vocab-size" if config.tokenizer != "char" else "--tokenizer", str(exc)) from None


def load_init_from(path: str, typed: TrainConfig):
    """--init-from PATH (an npllm checkpoint, or a Hugging Face GPT-2 or Llama-family directory) →
    (model, tokenizer); a typed flag contradicting the loaded model is an error."""
    from npllm.models import load_pretrained, model_from_checkpoint
    from npllm.models.gpt2_io import is_hf_directory
    from npllm.tokenizers import BPETokenizer
    where = Path(path)
    what = f"--init-from {path}"
    try:
        if is_hf_directory(where):
            model = load_pretrained(where)
            check_against_model(typed, model.kind, model.config_dict(), "bpe", what)
            tokenizer = BPETokenizer.from_pretrained(where)
            if tokenizer.vocab_size > model.config.vocab_size:
                raise CheckpointError(f"{where}: the tokenizer has {tokenizer.vocab_size} tokens, the model's "
                                      f"vocab_size is {model.config.vocab_size}")
        else:
            checkpoint = load_checkpoint(where)
            meta = checkpoint.meta
            check_against_model(typed, str(meta.get("model_type")), dict(meta.get("model_config") or {}),
                                str((meta.get("tokenizer") or {}).get("type")), what)
            model, tokenizer = model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError("--init-from", str(exc)) from None
    return model, tokenizer


class LanguageModelTask:
    """Next-token prediction: batches, loss and gradients, evaluation and checkpoint content."""
    kind = "lm"

    def __init__(self, config: TrainConfig, model, tokenizer, text: str, source: str):
        self.config, self.model, self.tokenizer, self.source = config, model, tokenizer, source
        self.fingerprint = text_fingerprint(text)
        try:
            self.train_ids, self.val_ids = train_val_split(encode_corpus(text, tokenizer))
        except ValueError as exc:
            raise UsageError("--data", str(exc)) from None
        self.block_size = config.block_size
        try:
            check_splits(self.train_ids, self.val_ids, self.block_size)
        except ValueError as exc:
            raise UsageError("--data", f"{exc} (--block-size is {self.block_size})") from None
        self.unigram = unigram_entropy(self.train_ids, tokenizer.vocab_size)

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, config: TrainConfig, typed: TrainConfig) -> "LanguageModelTask":
        """A new task: the model fresh, or loaded by --init-from (whose architecture the config then records)."""
        source = "builtin" if config.data is None else str(Path(config.data).absolute())
        text = read_corpus(source)
        if config.init_from:
            model, tokenizer = load_init_from(config.init_from, typed)
            if model.config.block_size < config.block_size:
                raise UsageError("--block-size", f"must be <= the model's block_size {model.config.block_size}, "
                                                 f"got {config.block_size}")
            if model.kind == "llama" and config.dropout:
                raise UsageError("--dropout", "Llama has no dropout (as in Meta's Llama); drop the flag")
            if hasattr(model.config, "dropout"):
                model.config.dropout = config.dropout      # fine-tuning chooses its own regularisation
            model.params = {k: v.astype(config.dtype, copy=False) for k, v in model.params.items()}
            _record_architecture(config, model, tokenizer)
        else:
            tokenizer = _train_tokenizer(config, text)
            model = _new_model(config, tokenizer.vocab_size)
        return cls(config, model, tokenizer, text, source)

    @classmethod
    def restore(cls, config: TrainConfig, checkpoint, typed_data: str | None) -> "LanguageModelTask":
        """The task of a checkpoint being resumed; --data may be given again only with the same content."""
        from npllm.models import model_from_checkpoint
        data = checkpoint.meta.get("extra", {}).get("data", {})
        source = data.get("source", "builtin")
        if typed_data is not None:
            source = str(Path(typed_data).absolute())
        elif source != "builtin" and not Path(source).is_file():
            raise UsageError("--resume", "the run's --data file is no longer a regular file; give --data "
                                         "with the same text")
        text = read_corpus(source)
        if data.get("sha256") not in (None, text_fingerprint(text)):
            raise UsageError("--data", f"{'the given file' if typed_data else 'the recorded file'} does not hold "
                                       "the text this run was trained on (its SHA-256 differs)")
        model, tokenizer = model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)
        if hasattr(model.config, "dropout"):            # Llama has none
            model.config.dropout = config.dropout
        return cls(config, model, tokenizer, text, source)

    # --- the loop's interface -----------------------------------------------------------------------
    @property
    def data_name(self) -> str:
        return "the built-in corpus" if self.source == "builtin" else Path(self.source).name

    def describe(self) -> str:
        """What is being trained on what, and the baselines its loss must beat."""
        cfg = ", ".join(f"{k} {v}" for k, v in self.model.config_dict().items() if k != "vocab_size")
        vocab = self.tokenizer.vocab_size
        return (f"{self.model.kind}: {self.model.num_params() / 1e6:.2f}M parameters ({cfg}); {self.data_name}: "
                f"{len(self.train_ids):,} train / {len(self.val_ids):,} val tokens, {type(self.tokenizer).__name__} "
                f"vocabulary {vocab}\nbaselines: uniform guess {math.log(vocab):.3f}, unigram entropy "
                f"{self.unigram:.3f} nats/token (the best loss without context)")

    def next_batch(self, rng: np.random.Generator):
        """x, y int (B, T) from the training split."""
        return get_batch(self.train_ids, self.config.batch_size, self.block_size, rng)

    def loss_and_grads(self, batch, scale: float, dropout_rng):
        """(loss, grads of scale · loss, tokens) for one batch."""
        x, y = batch
        logits, cache = self.model.forward(x, training=True, rng=dropout_rng)
        loss, ce_cache = ops.cross_entropy_forward(logits, y)
        grads = self.model.backward(ops.cross_entropy_backward(scale, ce_cache), cache)
        return float(loss), grads, int(y.size)

    def _loss_on(self, split: str) -> float:
        data = self.val_ids if split == "val" else self.train_ids
        seed = [self.config.seed, 1 if split == "val" else 2]    # fixed windows, independent of training
        return estimate_loss(self.model, data, self.config.batch_size, self.block_size, self.config.eval_iters, seed)

    def evaluate(self) -> dict:
        """The periodic evaluation: val_loss and perplexity."""
        val = self._loss_on("val")
        return {"val_loss": val, "val_perplexity": perplexity(val)}

    def final_metrics(self, last_eval: dict) -> dict:
        """The final JSON line's task numbers (the last evaluation's val loss reused)."""
        return {"final_train_loss": self._loss_on("train"), "final_val_loss": last_eval["val_loss"],
                "val_perplexity": last_eval["val_perplexity"], "unigram_baseline": self.unigram}

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def checkpoint_meta(self) -> dict:
        """model_type, model_config, tokenizer and data: how to rebuild this task from a checkpoint."""
        return {"model_type": self.model.kind, "model_config": self.model.config_dict(),
                "tokenizer": self.tokenizer.to_dict(),
                "data": {"source": self.source, "sha256": self.fingerprint, "val_fraction": 0.1,
                         "block_size": self.block_size}}

    def samples(self, count: int, tokens: int, prompt: str, seed: int) -> list[str]:
        """``count`` texts of ``tokens`` tokens sampled from the model, starting at ``prompt``."""
        from npllm.generate import generate, prompt_ids
        if not (count and tokens):
            return []
        try:
            ids, echo = prompt_ids(self.tokenizer, prompt)
        except ValueError:                   # the prompt has a character this corpus never uses
            ids, echo = prompt_ids(self.tokenizer, "")
        idx = np.tile(np.asarray(ids, dtype=np.int64), (count, 1))
        out = generate(self.model, idx, tokens, temperature=SAMPLE_TEMPERATURE, rng=np.random.default_rng([seed, 3]))
        return [f"--- sample {i + 1} (temperature {SAMPLE_TEMPERATURE}) ---\n"
                + self.tokenizer.decode(row[0 if echo else len(ids):].tolist()) for i, row in enumerate(out)]

    def finish(self, out_dir: Path, summary: dict, log) -> None:
        """After training: a fine-tuned GPT or Llama is also written to <out-dir>/hf in Hugging Face's layout."""
        if not self.config.init_from or self.model.kind not in ("gpt", "llama"):
            return
        from npllm.tokenizers import BPETokenizer
        tokenizer = self.tokenizer if isinstance(self.tokenizer, BPETokenizer) else None
        if tokenizer is None:
            log(f"note: {HF_DIR}/ holds the weights only: a {type(self.tokenizer).__name__} has no Hugging Face "
                "tokenizer.json form")
        self.model.save_pretrained(out_dir / HF_DIR, tokenizer)
        summary["hf"] = str(out_dir / HF_DIR)


def _record_architecture(config: TrainConfig, model, tokenizer) -> None:
    """Write the loaded model's architecture into the run's config, so the checkpoint records the truth."""
    config.model = model.kind
    model_config = model.config_dict()
    for name in ("n_layer", "n_head", "n_embd", "n_kv_head", "intermediate_size", "rope_theta", "hidden_size",
                 "vocab_size"):
        if name in model_config:
            setattr(config, name, model_config[name])
    config.tokenizer = {"CharTokenizer": "char", "WordTokenizer": "word"}.get(type(tokenizer).__name__, "bpe")
