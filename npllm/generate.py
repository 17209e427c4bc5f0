"""Sampling text from a language model: greedy, temperature, top-k and top-p (nucleus) decoding.

- temperature T divides the logits: T → 0 approaches greedy (argmax; ``temperature=0`` is exactly that),
  T > 1 flattens the distribution.
- top-k keeps the k most likely tokens (Fan et al. 2018); top-p keeps the smallest set of most likely
  tokens whose probabilities sum to at least p (Holtzman et al. 2020, "The Curious Case of Neural Text
  Degeneration").  Both renormalise what they keep.

Each new token should cost one position, not the whole prefix.  The GPT keeps the keys and values of
earlier positions (:class:`npllm.models.gpt.KVCache`); its positions are learned and absolute, so once
the context outgrows ``block_size`` and is cropped, every token moves to a new position and the cache is
rebuilt from the cropped context instead of rolled.  Recurrent models carry their hidden state.
"""
from __future__ import annotations


import numpy as np


def _is_recurrent(model) -> bool:
    return hasattr(model, "step")


def iter_next_logits(model, tokens: np.ndarray, start: int, stop: int, kv_cache: bool = True):
    """Yield the logits (B, V) predicting tokens[:, t] for t = start .. stop-1.

    The caller may write tokens[:, t] after receiving step t's logits (that is how sampling feeds its
    choice back); with kv_cache=False every step re-runs the model on the whole (cropped) context.
    """
    if _is_recurrent(model):
        state = None
        for t in range(start, stop):
            if kv_cache and state is not None:
                logits, state = model.step(tokens[:, t - 1], state)       # one step from the carried state
            else:
                all_logits, cache = model.forward(tokens[:, :t])          # the state summarises all of it
                logits, state = all_logits[:, -1], cache.state
            yield logits
        return
    block_size = model.config.block_size
    cache = None
    for t in range(start, stop):
        context = tokens[:, max(0, t - block_size):t]                     # crop to the last block_size
        if not kv_cache:
            logits, _ = model.forward(context)
        elif cache is not None and t <= block_size:                       # positions unchanged: append one
            logits, cache = model.forward_cached(tokens[:, t - 1:t], cache)
        else:                                                             # first step, or the crop shifted
            logits, cache = model.forward_cached(context, None)
        yield logits[:, -1]


def sample_next(logits, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                rng: np.random.Generator) -> np.ndarray:
    """logits (B, V) → next token ids (B,) int64 under temperature, top-k and top-p."""
    if temperature == 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    scaled = np.asarray(logits, dtype=np.float64) / temperature          # float64: exp of large logits
    V = scaled.shape[-1]
    if top_k is not None and top_k < V:
        kth_largest = np.partition(scaled, V - top_k, axis=-1)[:, V - top_k][:, None]
        scaled = np.where(scaled < kth_largest, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")                # most likely first
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep = np.zeros_like(probs, dtype=bool)
        # Keep a token while the mass of the tokens above it is still short of p: the first always stays.
        np.put_along_axis(keep, order, mass_before < top_p, axis=-1)
        probs = np.where(keep, probs, 0.0)
    # Inverse-CDF sampling: u in (0, 1] so a zero-probability token can never be chosen.
    cdf = np.cumsum(probs, axis=-1)
    u = (1.0 - rng.random((probs.shape[0], 1))) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=-1), V - 1).astype(np.int64)


def _check_options(model, idx, max_new_tokens, temperature, top_k, top_p):
    if not hasattr(model, "forward") or not hasattr(model, "config"):
        raise TypeError(f"model must be an npllm language model (GPT, RNNLM, LSTMLM, GRULM), got "
                        f"{type(model).__name__}")
    if not isinstance(idx, np.ndarray) or not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 2:
        raise ValueError(f"idx must be an int array (B, T) of token ids, got "
                         f"{getattr(idx, 'dtype', type(idx).__name__)} {getattr(idx, 'shape', '')}")
    if idx.shape[0] < 1 or idx.shape[1] < 1:
        raise ValueError(f"idx must hold at least one token per row (a prompt), got shape {idx.shape}")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")


def generate(model, idx, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, rng=None, kv_cache: bool = True) -> np.ndarray:
    """Extend prompts idx int (B, T) by max_new_tokens sampled tokens → int64 (B, T + max_new_tokens).

    temperature=0 is greedy; rng is a numpy Generator or a seed (None: fresh entropy); kv_cache=False
    recomputes the whole context for every token (slower, same result).
    """
    _check_options(model, idx, max_new_tokens, temperature, top_k, top_p)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    B, T = idx.shape
    tokens = np.zeros((B, T + max_new_tokens), dtype=np.int64)
    tokens[:, :T] = idx
    steps = iter_next_logits(model, tokens, T, T + max_new_tokens, kv_cache)
    for t, logits in zip(range(T, T + max_new_tokens), steps):
        tokens[:, t] = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, rng=rng)
    return tokens


def prompt_ids(tokenizer, prompt: str) -> tuple[list[int], bool]:
    """Ids to start from, and whether they are the prompt itself (an empty prompt starts at a newline)."""
    if prompt:
        return tokenizer.encode(prompt), True
    for start in ("\n", " "):
        try:
            ids = tokenizer.encode(start)
        except ValueError:
            continue
        if ids:
            return ids, False
    return [0], False
