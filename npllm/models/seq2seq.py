"""An LSTM encoder-decoder with additive attention (Sutskever et al. 2014; Bahdanau et al. 2015;
Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural Machine Translation").

    source ids (B, Ts) ─ embedding ─ LSTM encoder ─→ keys: all encoder states (B, Ts, H)
                                         └ final (h, c) at each row's last real token ─┐
    decoder input <bos> y_1 … (B, Tt) ─ embedding ─ LSTM decoder (starts from it) ─→ h_t (B, Tt, H)
    context_t = additive_attention(query h_t, keys, mask = source positions that are not <pad>)
    logits_t  = [h_t ; context_t] W_head + b_head                                         (B, Tt, V)

The decoder state h_t queries the encoder states with Bahdanau's additive score vᵀ tanh(h_t W_q + k_j W_k)
(Luong et al.'s "concat" score) and the prediction reads the concatenation [h_t; context_t].  Because the
attention sits after the decoder LSTM (no input feeding), teacher forcing runs the decoder over the
whole target at once and scores every step in one attention call; decoding (seq2seq_decode.py) runs
the same computation one step at a time.

Padding: sources are right-padded with ``pad_id``; padded positions get no attention weight and the
encoder's final state is taken at each row's last real token.  Target padding is skipped by the loss
(``ignore_index``), so forward/backward never see it specially.

Dimensions: B batch, Ts source length, Tt target length, E = embed_size, H = hidden_size,
A = attention_size, Vs/Vt the source/target vocabularies.  Parameters, flat: ``src_embedding.weight``
(Vs, E), ``encoder.Wx`` (E, 4H), ``encoder.Wh`` (H, 4H), ``encoder.b`` (4H,), ``tgt_embedding.weight``
(Vt, E), ``decoder.Wx``/``.Wh``/``.b`` likewise, ``attention.W_q`` (H, A), ``attention.W_k`` (H, A),
``attention.v`` (A,), ``head.weight`` (2H, Vt), ``head.bias`` (Vt,).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from npllm.backend import ops
from npllm.layers.additive_attention import (additive_attention_backward, additive_attention_forward,
                                             additive_attention_projected_forward)
from npllm.layers.lstm import init_lstm


@dataclass
class Seq2SeqConfig:
    """Sizes of a Seq2Seq model and its reserved token ids (shared by both vocabularies)."""
    src_vocab_size: int
    tgt_vocab_size: int
    embed_size: int = 32
    hidden_size: int = 128
    attention_size: int = 64
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "embed_size", "hidden_size", "attention_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        special = (self.pad_id, self.bos_id, self.eos_id)
        if len(set(special)) != 3 or not all(0 <= i < min(self.src_vocab_size, self.tgt_vocab_size) for i in special):
            raise ValueError(f"pad_id, bos_id, eos_id must be distinct ids of both vocabularies, got {special}")


class Seq2SeqCache(NamedTuple):
    src_embedding: object   # EmbeddingCache
    encoder: object         # LSTMCache over the source
    last: np.ndarray        # (B,) index of each row's last real source token
    tgt_embedding: object   # EmbeddingCache
    decoder: object         # LSTMCache over the target
    attention: object       # AdditiveAttentionCache: Tt queries against Ts keys
    head: object            # LinearCache of [h; context] W_head + b_head
    weights: np.ndarray     # (B, Tt, Ts) the attention alignments (for plots)


class EncoderOutput(NamedTuple):
    """What decoding needs from the source: keys (B, Ts, H), their projection (B, Ts, A), the mask, and
    the decoder's initial state h, c (B, H)."""
    keys: np.ndarray
    keys_proj: np.ndarray
    mask: np.ndarray
    h: np.ndarray
    c: np.ndarray


def _check_ids(name: str, ids, vocab_size: int) -> None:
    if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 2:
        got = f"{ids.dtype} {ids.shape}" if isinstance(ids, np.ndarray) else type(ids).__name__
        raise TypeError(f"{name} must be an integer numpy.ndarray of shape (B, T), got {got}")
    if ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one token per row, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got values in [{ids.min()}, {ids.max()}]")


class Seq2Seq:
    """LSTM encoder → LSTM decoder with additive attention (see the module docstring)."""

    kind = "seq2seq"
    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig, seed: int = 0, dtype=np.float32):
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = config
        self.params = self.init_params(config, np.random.default_rng(seed), np.dtype(dtype))

    @staticmethod
    def init_params(config: Seq2SeqConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        """Embeddings N(0, 1); LSTMs as init_lstm (forget bias 1); other matrices uniform ±1/√fan_in."""
        E, H, A = config.embed_size, config.hidden_size, config.attention_size

        def uniform(shape):
            bound = 1.0 / np.sqrt(shape[0])
            return rng.uniform(-bound, bound, shape).astype(dtype)

        params = {"src_embedding.weight": rng.standard_normal((config.src_vocab_size, E)).astype(dtype)}
        params.update({f"encoder.{k}": w for k, w in init_lstm(E, H, rng, dtype).items()})
        params["tgt_embedding.weight"] = rng.standard_normal((config.tgt_vocab_size, E)).astype(dtype)
        params.update({f"decoder.{k}": w for k, w in init_lstm(E, H, rng, dtype).items()})
        params["attention.W_q"], params["attention.W_k"] = uniform((H, A)), uniform((H, A))
        params["attention.v"] = uniform((A,))
        params["head.weight"] = uniform((2 * H, config.tgt_vocab_size))
        params["head.bias"] = np.zeros(config.tgt_vocab_size, dtype)
        return params

    # ------------------------------------------------------------------ forward
    def source_mask(self, src) -> np.ndarray:
        """bool (B, Ts), True at real tokens; checks that every row is right-padded and non-empty."""
        _check_ids("src", src, self.config.src_vocab_size)
        mask = src != self.config.pad_id
        lengths = mask.sum(axis=1)
        if lengths.min() == 0:
            raise ValueError(f"src row {int(np.argmin(lengths))} holds only padding (pad_id {self.config.pad_id})")
        if not np.array_equal(mask, np.arange(src.shape[1]) < lengths[:, None]):
            bad = int(np.nonzero((mask != (np.arange(src.shape[1]) < lengths[:, None])).any(axis=1))[0][0])
            raise ValueError(f"src must be right-padded (real tokens, then pad_id); row {bad} has padding inside")
        return mask

    def _encode(self, src):
        """src (B, Ts) → encoder states (B, Ts, H), final h, c (B, H), mask, and the caches."""
        p = self.params
        mask = self.source_mask(src)
        x, src_embedding = ops.embedding_forward(src, p["src_embedding.weight"])          # (B, Ts, E)
        zeros = np.zeros((src.shape[0], self.config.hidden_size), dtype=x.dtype)
        hs, cs, encoder = ops.lstm_forward(x, zeros, zeros, p["encoder.Wx"], p["encoder.Wh"], p["encoder.b"])
        # The LSTM also ran over the padding after each row's end; its state there is not the row's.
        last = mask.sum(axis=1) - 1
        rows = np.arange(src.shape[0])
        return hs, hs[rows, last], cs[rows, last], mask, (src_embedding, encoder, last)

    def forward(self, src, tgt_in):
        """Teacher forcing.  src int (B, Ts) right-padded, tgt_in int (B, Tt) = <bos> y_1 … →
        logits (B, Tt, Vt), Seq2SeqCache."""
        p = self.params
        _check_ids("src", src, self.config.src_vocab_size)
        _check_ids("tgt_in", tgt_in, self.config.tgt_vocab_size)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in must have src's batch size {src.shape[0]}, got shape {tgt_in.shape}")
        keys, h0, c0, mask, (src_embedding, encoder, last) = self._encode(src)
        y, tgt_embedding = ops.embedding_forward(tgt_in, p["tgt_embedding.weight"])       # (B, Tt, E)
        hs, _, decoder = ops.lstm_forward(y, h0, c0, p["decoder.Wx"], p["decoder.Wh"], p["decoder.b"])
        context, weights, attention = additive_attention_forward(
            hs, keys, p["attention.W_q"], p["attention.W_k"], p["attention.v"], mask=mask)  # (B, Tt, H)
        features = np.concatenate([hs, context], axis=-1)                                # (B, Tt, 2H)
        logits, head = ops.linear_forward(features, p["head.weight"], p["head.bias"])      # (B, Tt, Vt)
        return logits, Seq2SeqCache(src_embedding, encoder, last, tgt_embedding, decoder, attention, head, weights)

    # ----------------------------------------------------------------- backward
    def backward(self, dlogits, cache: Seq2SeqCache) -> dict[str, np.ndarray]:
        """dlogits (B, Tt, Vt) → grads: a dict with the keys and shapes of params (fresh arrays)."""
        if not isinstance(cache, Seq2SeqCache):
            raise TypeError(f"cache must be the Seq2SeqCache returned by forward, got {type(cache).__name__}")
        H = self.config.hidden_size
        grads: dict[str, np.ndarray] = {}
        dfeatures, grads["head.weight"], grads["head.bias"] = ops.linear_backward(dlogits, cache.head)
        dhs, dcontext = dfeatures[..., :H], dfeatures[..., H:]
        # h_t reaches the logits twice: directly and as the attention's query.
        dquery, dkeys, grads["attention.W_q"], grads["attention.W_k"], grads["attention.v"] = \
            additive_attention_backward(dcontext, None, cache.attention)
        dy, dh0, dc0, grads["decoder.Wx"], grads["decoder.Wh"], grads["decoder.b"] = \
            ops.lstm_backward(dhs + dquery, None, cache.decoder)
        grads["tgt_embedding.weight"] = ops.embedding_backward(dy, cache.tgt_embedding)
        # The encoder states receive the attention's gradient everywhere, and the decoder's initial
        # state's gradient at each row's last real token (h through hs, c through cs).
        rows = np.arange(dkeys.shape[0])
        dkeys[rows, cache.last] += dh0
        dcs = np.zeros_like(dkeys)
        dcs[rows, cache.last] = dc0
        dx, _, _, grads["encoder.Wx"], grads["encoder.Wh"], grads["encoder.b"] = \
            ops.lstm_backward(dkeys, dcs, cache.encoder)
        grads["src_embedding.weight"] = ops.embedding_backward(dx, cache.src_embedding)
        return {name: grads[name] for name in self.params}                               # params' order

    # ------------------------------------------------------- step-by-step decoding
    def encode(self, src) -> EncoderOutput:
        """src (B, Ts) → :class:`EncoderOutput` (keys projected once, reused at every decoding step)."""
        keys, h, c, mask, _ = self._encode(src)
        keys_proj, _ = ops.linear_forward(keys, self.params["attention.W_k"], None)       # (B, Ts, A)
        return EncoderOutput(keys, keys_proj, mask, h, c)

    def decode_step(self, tokens, h, c, encoded: EncoderOutput):
        """One decoder step.  tokens int (B,), h, c (B, H) → log-probabilities (B, Vt) over the tokens a
        decoder may emit (<pad>, <bos> get −inf), the new h, c, and attention weights (B, Ts)."""
        p = self.params
        x = p["tgt_embedding.weight"][tokens]                                            # (B, E)
        h, c, _ = ops.lstm_step_forward(x, h, c, p["decoder.Wx"], p["decoder.Wh"], p["decoder.b"])
        context, weights, _ = additive_attention_projected_forward(
            h @ p["attention.W_q"], encoded.keys, encoded.keys_proj, p["attention.v"], encoded.mask)
        logits = np.concatenate([h, context], axis=-1) @ p["head.weight"] + p["head.bias"]  # (B, Vt)
        return self.output_log_probs(logits), h, c, weights

    def output_log_probs(self, logits) -> np.ndarray:
        """log-softmax of logits (..., Vt) over the tokens a decoder may emit (<pad>, <bos> → −inf)."""
        logits = np.array(logits, dtype=np.float64)     # float64: beam scores add many small log-probs
        logits[..., [self.config.pad_id, self.config.bos_id]] = -np.inf
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def greedy_decode(self, src, max_len: int):
        """Most likely token at each step.  src (B, Ts) → tokens int (B, ≤ max_len) (after <eos>: pad_id)
        and attention weights (B, ≤ max_len, Ts)."""
        from npllm.models.seq2seq_decode import greedy_decode
        return greedy_decode(self, src, max_len)

    def beam_search(self, src, max_len: int, beam_size: int = 4, length_penalty: float = 0.0):
        """Beam search.  src (B, Ts) → a list of B token lists (each without <eos>) and their scores."""
        from npllm.models.seq2seq_decode import beam_search
        return beam_search(self, src, max_len, beam_size, length_penalty)

    # -------------------------------------------------------------- utilities
    def num_params(self) -> int:
        """Number of scalar parameters."""
        return sum(int(a.size) for a in self.params.values())

    def config_dict(self) -> dict:
        """The config as a JSON-able dict (for checkpoints)."""
        return asdict(self.config)
