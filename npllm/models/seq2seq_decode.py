"""Decoding a :class:`~npllm.models.seq2seq.Seq2Seq`: greedy and beam search, one step at a time.

Both encode the source once (keys and their projection), then call ``model.decode_step``, which runs
the decoder LSTM one step and attends to the keys — the same arithmetic as teacher-forced ``forward``.

Beam search (as in Sutskever et al. 2014; Wu et al. 2016, "Google's NMT system", section 7) keeps the
``beam_size`` best prefixes of every source by total log-probability.  All B·K beams run as one batch:
at each step each beam proposes every token, the K best of the K·V candidates survive, and the LSTM
states are reordered to follow their parents.  A beam that has emitted <eos> is finished: it may only
be "extended" by padding at no cost, so it keeps its score while others grow.  With
``length_penalty`` α > 0 the finished hypotheses are ranked by log p / ((5 + length) / 6)^α (Wu et al.),
which stops short outputs winning only because they add fewer negative terms; α = 0 ranks by log p.
"""
from __future__ import annotations

import numpy as np


def _check_max_len(max_len) -> int:
    if not isinstance(max_len, (int, np.integer)) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    return int(max_len)


def greedy_decode(model, src, max_len: int):
    """The most likely token at each step.  src int (B, Ts) → tokens int (B, T ≤ max_len) (pad_id after
    each row's <eos>) and attention weights (B, T, Ts); stops when every row has emitted <eos>."""
    max_len = _check_max_len(max_len)
    config = model.config
    encoded = model.encode(src)
    B, Ts = src.shape
    tokens = np.full((B, max_len), config.pad_id, dtype=np.int64)
    weights = np.zeros((B, max_len, Ts), dtype=encoded.keys.dtype)
    previous = np.full(B, config.bos_id, dtype=np.int64)
    h, c = encoded.h, encoded.c
    done = np.zeros(B, dtype=bool)
    for t in range(max_len):
        log_probs, h, c, weights[:, t] = model.decode_step(previous, h, c, encoded)
        previous = np.where(done, config.pad_id, log_probs.argmax(axis=-1))
        tokens[:, t] = previous
        done |= previous == config.eos_id
        if done.all():
            return tokens[:, :t + 1], weights[:, :t + 1]
    return tokens, weights


def _length_penalty(lengths, alpha: float):
    return ((5.0 + lengths) / 6.0) ** alpha


def beam_search(model, src, max_len: int, beam_size: int = 4, length_penalty: float = 0.0):
    """Beam search.  src int (B, Ts) → (hypotheses, scores): for each row the best token list (without
    <eos>; a hypothesis cut at max_len has none) and its log-probability (divided by the length penalty)."""
    max_len = _check_max_len(max_len)
    if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    config, K = model.config, int(beam_size)
    encoded = model.encode(src)
    B = src.shape[0]
    # Every source gets K beams, laid out row-major: beam k of source b is row b·K + k.
    encoded = type(encoded)(*(np.repeat(part, K, axis=0) for part in encoded))
    h, c = encoded.h, encoded.c
    previous = np.full(B * K, config.bos_id, dtype=np.int64)
    scores = np.full((B, K), -np.inf)
    scores[:, 0] = 0.0                         # one live beam at first, or the K beams would be copies
    finished = np.zeros((B, K), dtype=bool)
    lengths = np.zeros((B, K))
    chosen, parents = [], []                   # per step: token and parent beam of each beam, (B, K)
    for _ in range(max_len):
        log_probs, h, c, _ = model.decode_step(previous, h, c, encoded)
        V = log_probs.shape[-1]
        log_probs = log_probs.reshape(B, K, V)
        log_probs[finished] = -np.inf          # a finished beam only continues with padding, at no cost
        log_probs[finished, config.pad_id] = 0.0
        candidates = (scores[:, :, None] + log_probs).reshape(B, K * V)
        top = np.argsort(-candidates, axis=1, kind="stable")[:, :K]                # (B, K)
        scores = np.take_along_axis(candidates, top, axis=1)
        parent, token = top // V, top % V
        finished = np.take_along_axis(finished, parent, axis=1)
        lengths = np.take_along_axis(lengths, parent, axis=1) + ~finished
        finished |= token == config.eos_id
        rows = (np.arange(B)[:, None] * K + parent).reshape(-1)                  # follow the parents
        h, c, previous = h[rows], c[rows], token.reshape(-1)
        chosen.append(token)
        parents.append(parent)
        if finished.all():
            break
    ranked = scores / _length_penalty(lengths, length_penalty)
    best = np.argmax(ranked, axis=1)
    hypotheses = []
    for b in range(B):
        k, sequence = best[b], []
        for token, parent in zip(reversed(chosen), reversed(parents)):   # walk back to the first step
            sequence.append(int(token[b, k]))
            k = parent[b, k]
        sequence.reverse()
        hypotheses.append(sequence[:sequence.index(config.eos_id)] if config.eos_id in sequence else sequence)
    return hypotheses, ranked[np.arange(B), best]
