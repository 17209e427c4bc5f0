"""Seq2seq as a training task: the attention Seq2Seq on the dates task or on a user's pairs.

``--task dates`` learns to rewrite dates in many formats as ISO dates: 100,000 generated training pairs,
2,000 held-out dates never seen in training.  ``--data PAIRS.tsv`` trains on ``source<TAB>target`` lines
(the last 10% held out), tokenised by character (``--tokenizer char``) or whitespace word (``word``).

Teacher forcing, the loss averaged over real target tokens.  Batches hold sources of similar length (a
pool of 50 batches is shuffled, sorted by length and cut), so little time goes into the LSTM running over
padding; the sampler's place in its epoch is part of the checkpoint, so a resumed run sees the same
batches.  Evaluation decodes held-out sources greedily and reports exact match, character accuracy and
(for ``--data``) corpus BLEU over whitespace words.  The same loop as the language models runs it
(:mod:`npllm.training.loop`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from npllm.backend import ops
from npllm.checkpoint import load_checkpoint, restore_rng, rng_state
from npllm.datasets.pairs import (EOS_ID, IGNORE_INDEX, PAD_ID, Vocab, encode_pairs, join_tokens, load_pairs,
                                  make_batch, pad_rows, split_held_out, split_tokens)
from npllm.errors import CheckpointError, UsageError
from npllm.metrics import bleu, char_accuracy, exact_match, perplexity
from npllm.training.config import TrainConfig

DATES_SEED = 0                # the dates task's data is fixed: --seed changes the model, not the test set
N_TRAIN_DATES, N_TEST_DATES = 100_000, 2_000
EVAL_SUBSET = 500             # held-out pairs scored at each --eval-interval (all of them at the end)
N_ALIGNMENT_PLOTS = 3
BUCKET_POOL = 50              # batches per length-sorted pool


class BucketSampler:
    """Row-index batches of similar length, epoch after epoch: shuffle, sort pools of BUCKET_POOL batches, cut,
    shuffle the batches.  Its state (the generator's state when the epoch was drawn, and the position in it)
    is JSON, so a resumed run continues with exactly the batches the uninterrupted one would have seen."""

    def __init__(self, lengths, batch_size: int):
        self.lengths, self.batch_size = np.asarray(lengths), batch_size
        self.epoch, self.position, self.epoch_state = [], 0, None

    def _draw_epoch(self, rng: np.random.Generator) -> list:
        order = rng.permutation(len(self.lengths))
        pool_size = self.batch_size * BUCKET_POOL
        batches = []
        for start in range(0, len(order), pool_size):
            pool = order[start:start + pool_size]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def next(self, rng: np.random.Generator) -> np.ndarray:
        """The next batch's row indices; a new epoch is drawn from ``rng`` when one is used up."""
        if self.position >= len(self.epoch):
            self.epoch_state = rng_state(rng)
            self.epoch, self.position = self._draw_epoch(rng), 0
        self.position += 1
        return self.epoch[self.position - 1]

    def state(self) -> dict:
        return {"epoch_state": self.epoch_state, "position": self.position}

    def load_state(self, state: dict) -> None:
        """Redraw the saved epoch from the generator state it was drawn with, and skip to the position."""
        if state.get("epoch_state") is not None:
            self.epoch_state = state["epoch_state"]
            self.epoch = self._draw_epoch(restore_rng(self.epoch_state))
            self.position = int(state["position"])


def load_pairs_data(config: TrainConfig):
    """(train pairs, held-out pairs, source, fingerprint) for --task dates or --data."""
    if config.data is None:
        from npllm.datasets.dates import dates_task
        train, test = dates_task(N_TRAIN_DATES, N_TEST_DATES, seed=DATES_SEED)
        return train, test, "dates", None
    try:
        pairs = load_pairs(config.data)
        train, test = split_held_out(pairs)
    except ValueError as exc:
        raise UsageError("--data", str(exc)) from None
    digest = hashlib.sha256("\n".join(f"{s}\t{t}" for s, t in pairs).encode("utf-8")).hexdigest()
    return train, test, str(Path(config.data).absolute()), digest


def _batch_loss(model, batch):
    """Teacher-forced loss of a Batch → (loss, model cache, ce cache)."""
    logits, cache = model.forward(batch.src, batch.tgt_in)
    loss, ce_cache = ops.cross_entropy_forward(logits, batch.tgt_out, ignore_index=IGNORE_INDEX)
    return float(loss), cache, ce_cache


def evaluate_pairs(model, arrays, pairs, tgt_vocab, level: str, max_len: int, chunk: int = 500) -> dict:
    """Loss (token-weighted), greedy exact match, char accuracy and BLEU over ``pairs`` (encoded as arrays)."""
    total_loss = total_tokens = 0.0
    hypotheses = []
    for start in range(0, len(pairs), chunk):
        batch = make_batch(arrays, np.arange(start, min(start + chunk, len(pairs))))
        loss, _, _ = _batch_loss(model, batch)
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


class Seq2SeqTask:
    """Source → target pairs: batches, loss and gradients, evaluation and checkpoint content."""
    kind = "seq2seq"

    def __init__(self, config: TrainConfig, pairs, vocabs, model=None):
        self.config = config
        self.train_pairs, self.test_pairs, self.source, self.fingerprint = pairs
        self.level = config.tokenizer
        self.src_vocab, self.tgt_vocab = vocabs
        self.train = encode_pairs(self.train_pairs, self.src_vocab, self.tgt_vocab, self.level)
        self.test = encode_pairs(self.test_pairs, self.src_vocab, self.tgt_vocab, self.level)
        self.subset = self.test_pairs[:EVAL_SUBSET]
        self.subset_arrays = encode_pairs(self.subset, self.src_vocab, self.tgt_vocab, self.level)
        self.max_len = int(self.train.tgt_len.max()) + 10       # decoding stops early once every row has <eos>
        if model is None:
            from npllm.models import Seq2Seq, Seq2SeqConfig
            model = Seq2Seq(Seq2SeqConfig(len(self.src_vocab), len(self.tgt_vocab), embed_size=config.n_embd,
                                          hidden_size=config.hidden_size, attention_size=config.hidden_size),
                            seed=config.seed, dtype=config.dtype)
        self.model = model
        self.sampler = BucketSampler(self.train.src_len, config.batch_size)

    @classmethod
    def create(cls, config: TrainConfig, typed: TrainConfig) -> "Seq2SeqTask":
        pairs = load_pairs_data(config)
        level = config.tokenizer
        vocabs = (Vocab.build(split_tokens(s, level) for s, _ in pairs[0]),
                  Vocab.build(split_tokens(t, level) for _, t in pairs[0]))
        return cls(config, pairs, vocabs)

    @classmethod
    def restore(cls, config: TrainConfig, checkpoint, typed_data: str | None) -> "Seq2SeqTask":
        """The task of a checkpoint being resumed: its vocabularies and weights, the same pairs."""
        data = checkpoint.meta.get("extra", {}).get("data", {})
        if typed_data is not None:
            config.data = typed_data
        elif data.get("source") not in (None, "dates"):
            if not Path(data["source"]).is_file():
                raise UsageError("--resume", "the run's --data file is no longer a regular file; give --data "
                                             "with the same pairs")
            config.data = data["source"]
        pairs = load_pairs_data(config)
        if pairs[3] != data.get("sha256"):
            raise UsageError("--data", "the pairs differ from those this run was trained on (SHA-256 differs)")
        model, src_vocab, tgt_vocab, _ = seq2seq_from_checkpoint(checkpoint)
        return cls(config, pairs, (src_vocab, tgt_vocab), model)

    # --- the loop's interface -----------------------------------------------------------------------
    data_name = property(lambda self: "dates" if self.source == "dates" else Path(self.source).name)

    def describe(self) -> str:
        return (f"seq2seq on {self.source}: {len(self.train_pairs):,} training pairs, {len(self.test_pairs):,} "
                f"held out; vocabularies {len(self.src_vocab)} → {len(self.tgt_vocab)} {self.level}s; "
                f"{self.model.num_params():,} parameters")

    def next_batch(self, rng: np.random.Generator):
        return make_batch(self.train, self.sampler.next(rng))

    def loss_and_grads(self, batch, scale: float, dropout_rng):
        loss, cache, ce_cache = _batch_loss(self.model, batch)
        grads = self.model.backward(ops.cross_entropy_backward(scale, ce_cache), cache)
        return loss, grads, int((batch.src != PAD_ID).sum()) + batch.n_tokens

    def evaluate(self) -> dict:
        """Loss and exact match on the first EVAL_SUBSET held-out pairs."""
        scores = evaluate_pairs(self.model, self.subset_arrays, self.subset, self.tgt_vocab, self.level, self.max_len)
        return {"val_loss": scores["loss"], "val_perplexity": scores["perplexity"],
                "exact_match": scores["exact_match"]}

    def final_metrics(self, last_eval: dict) -> dict:
        """Every held-out pair scored, and as many training pairs for the training loss."""
        final = evaluate_pairs(self.model, self.test, self.test_pairs, self.tgt_vocab, self.level, self.max_len)
        subset = self.train_pairs[:N_TEST_DATES]
        train = evaluate_pairs(self.model, encode_pairs(subset, self.src_vocab, self.tgt_vocab, self.level), subset,
                               self.tgt_vocab, self.level, self.max_len)
        self._final = final
        metrics = {"final_train_loss": train["loss"], "final_val_loss": final["loss"],
                   "val_perplexity": final["perplexity"], "exact_match": final["exact_match"],
                   "char_accuracy": final["char_accuracy"], "n_eval": len(self.test_pairs)}
        if self.source != "dates":
            metrics["bleu"] = final["bleu"]
        return metrics

    def state(self) -> dict:
        return {"sampler": self.sampler.state()}

    def load_state(self, state: dict) -> None:
        self.sampler.load_state(state.get("sampler", {}))

    def checkpoint_meta(self) -> dict:
        tokenizer = {"type": "seq2seq_pairs", "level": self.level, "source": self.src_vocab.to_dict(),
                     "target": self.tgt_vocab.to_dict()}
        return {"model_type": self.model.kind, "model_config": self.model.config_dict(), "tokenizer": tokenizer,
                "data": {"source": self.source, "sha256": self.fingerprint}}

    def samples(self, count: int, tokens: int, prompt: str, seed: int) -> list[str]:
        """The first ``count`` held-out pairs as decoded at the end (final_metrics ran first)."""
        final = getattr(self, "_final", None)
        if final is None:
            return []
        rows = list(zip(self.test_pairs, final["hypotheses"]))[:count]
        return [f"{src!r} → {hyp!r} ({'correct' if hyp == ref else 'expected ' + repr(ref)})" for (src, ref), hyp in rows]

    def finish(self, out_dir: Path, summary: dict, log) -> None:
        """attention_<i>.png: which source tokens each output token read, for a few held-out pairs."""
        from npllm.plots import plot_attention
        for i, (source, _) in enumerate(self.test_pairs[:N_ALIGNMENT_PLOTS]):
            src_tokens = split_tokens(source, self.level)
            tokens, weights = self.model.greedy_decode(np.array([self.src_vocab.encode(src_tokens)]), self.max_len)
            ids = tokens[0].tolist()
            n_out = ids.index(EOS_ID) + 1 if EOS_ID in ids else len(ids)           # up to and with <eos>
            output = join_tokens(self.tgt_vocab.decode(ids), self.level)
            plot_attention(weights[0, :n_out], src_tokens, [self.tgt_vocab.tokens[t] for t in ids[:n_out]],
                           out_dir / f"attention_{i}.png", title=f"{source!r} → {output!r}")


def seq2seq_from_checkpoint(checkpoint):
    """(model, source Vocab, target Vocab, level) of a loaded seq2seq checkpoint."""
    from npllm.checkpoint import check_params_match
    from npllm.models import Seq2Seq, check_model_config
    meta = checkpoint.meta
    if meta.get("model_type") != "seq2seq":
        raise CheckpointError(f"model_type is {meta.get('model_type')!r}, not 'seq2seq'")
    shapes = {name: array.shape for name, array in checkpoint.params.items()}
    config = check_model_config("seq2seq", meta.get("model_config"), shapes)   # before anything is allocated
    try:
        dtype = next(iter(checkpoint.params.values())).dtype
        model = Seq2Seq(config, dtype=dtype)
        tokenizer = meta["tokenizer"]
        vocabs = Vocab.from_dict(tokenizer["source"]), Vocab.from_dict(tokenizer["target"])
        level = tokenizer["level"]
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise CheckpointError(f"malformed seq2seq checkpoint metadata: {exc}") from None
    check_params_match(checkpoint.params, model.params)
    model.params = dict(checkpoint.params)
    return model, *vocabs, level


def load_seq2seq(path):
    """(model, source Vocab, target Vocab, level) from a seq2seq checkpoint file or --out-dir."""
    return seq2seq_from_checkpoint(load_checkpoint(path))


def translate(model, src_vocab, tgt_vocab, level: str, texts, max_len: int = 100, beam_size: int = 1) -> list:
    """Decode each text (greedy, or beam search with beam_size > 1) → list of output strings."""
    src = pad_rows([src_vocab.encode(split_tokens(text, level)) for text in texts], PAD_ID)
    if beam_size > 1:
        outputs, _ = model.beam_search(src, max_len, beam_size=beam_size)
    else:
        outputs = model.greedy_decode(src, max_len)[0].tolist()
    return [join_tokens(tgt_vocab.decode(ids), level) for ids in outputs]
