"""Recurrent language models: embedding → 1–2 recurrent layers (RNN, LSTM or GRU) → linear head.

The char-rnn recipe (Karpathy 2015; Graves 2013, "Generating Sequences With Recurrent Neural Networks"):
each position's hidden state predicts the next token.  Training runs on random blocks of ``block_size``
tokens starting from a zero state (truncated backpropagation through time); generation carries the
state from token to token with :meth:`step`, so a new token costs one step, not the whole prefix.

Dimensions: B batch, T time, V vocabulary, H = hidden_size (the embedding has H columns too).
Parameters, flat: ``embedding.weight`` (V, H); per layer l ``<cell>.<l>.Wx`` (H, gH), ``.Wh`` (H, gH)
and ``.b`` (gH,) — the GRU has ``.bx`` and ``.bh`` instead — with g = 1, 4, 3 gates for rnn, lstm,
gru; ``head.weight`` (H, V), ``head.bias`` (V,).  A state is a list with one tuple per layer: ``(h,)``
for RNN/GRU, ``(h, c)`` for the LSTM, each (B, H).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from npllm.backend import ops
from npllm.layers.gru import init_gru
from npllm.layers.lstm import init_lstm
from npllm.layers.rnn import init_rnn
from npllm.models._common import check_token_ids


@dataclass
class RNNLMConfig:
    """Sizes of a recurrent LM; block_size is the training (BPTT) length; dropout sits between layers."""
    vocab_size: int
    hidden_size: int = 256
    n_layer: int = 1
    block_size: int = 64
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "n_layer", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_layer > 2:
            raise ValueError(f"n_layer must be 1 or 2 for a recurrent LM, got {self.n_layer}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")


class RecurrentLMCache(NamedTuple):
    embedding: object    # EmbeddingCache
    drops: list          # n_layer + 1 DropoutCache: after the embedding and after each layer
    layers: list         # one sequence cache per layer (RNNCache, LSTMCache or GRUCache)
    head: object         # LinearCache
    state: list          # the final state, one tuple per layer: feed it to the next forward/step


class _RecurrentLM:
    """Shared body of RNNLM, LSTMLM and GRULM; a subclass names its cell and how one layer runs."""

    kind = ""            # "rnn" | "lstm" | "gru": the parameter prefix and the CLI's --model
    config_class = RNNLMConfig
    n_states = 1         # arrays per layer in a state: (h,) or (h, c)

    def __init__(self, config: RNNLMConfig, seed: int = 0, dtype=np.float32):
        if not isinstance(config, RNNLMConfig):
            raise TypeError(f"config must be an RNNLMConfig, got {type(config).__name__}")
        self.config = config
        self.params = self.init_params(config, np.random.default_rng(seed), np.dtype(dtype))

    @classmethod
    def init_params(cls, config: RNNLMConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        """Embedding N(0, 1) (as torch.nn.Embedding); layers as the op's init; head uniform ±1/√H, bias 0."""
        V, H = config.vocab_size, config.hidden_size
        params = {"embedding.weight": rng.normal(0.0, 1.0, (V, H)).astype(dtype)}
        for layer in range(config.n_layer):
            for name, value in cls._init_layer(H, H, rng, dtype).items():
                params[f"{cls.kind}.{layer}.{name}"] = value
        bound = 1.0 / np.sqrt(H)
        params["head.weight"] = rng.uniform(-bound, bound, (H, V)).astype(dtype)
        params["head.bias"] = np.zeros(V, dtype=dtype)
        return params

    def initial_state(self, batch_size: int) -> list:
        """The zero state: per layer a tuple of n_states arrays (B, H)."""
        shape = (batch_size, self.config.hidden_size)
        dtype = self.params["head.weight"].dtype
        return [tuple(np.zeros(shape, dtype) for _ in range(self.n_states)) for _ in range(self.config.n_layer)]

    def _check_state(self, state, batch_size: int) -> list:
        if state is None:
            return self.initial_state(batch_size)
        want = (batch_size, self.config.hidden_size)
        if (not isinstance(state, (list, tuple)) or len(state) != self.config.n_layer
                or any(len(s) != self.n_states or any(a.shape != want for a in s) for s in state)):
            raise ValueError(f"state must be a list of {self.config.n_layer} tuple(s) of {self.n_states} "
                             f"array(s) of shape {want} (the state a forward or step returned)")
        return list(state)

    def forward(self, idx, state=None, training: bool = False, rng: np.random.Generator | None = None):
        """idx int (B, T), state (None = zeros) → logits (B, T, V), cache (cache.state: the final state)."""
        B, T = check_token_ids(idx, self.config.vocab_size, None)
        state = self._check_state(state, B)
        p_drop = self.config.dropout if training else 0.0
        if p_drop > 0 and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator when training with dropout {p_drop}, "
                            f"got {type(rng).__name__}")
        params = self.params
        x, embedding = ops.embedding_forward(idx, params["embedding.weight"])          # (B, T, H)
        x, drop = ops.dropout_forward(x, p_drop, rng)
        drops, layers, final = [drop], [], []
        for layer in range(self.config.n_layer):
            x, layer_cache, layer_state = self._layer_forward(layer, x, state[layer])   # (B, T, H)
            x, drop = ops.dropout_forward(x, p_drop, rng)
            layers.append(layer_cache)
            drops.append(drop)
            final.append(layer_state)
        logits, head = ops.linear_forward(x, params["head.weight"], params["head.bias"])  # (B, T, V)
        return logits, RecurrentLMCache(embedding, drops, layers, head, final)

    def backward(self, dlogits, cache: RecurrentLMCache) -> dict[str, np.ndarray]:
        """dlogits (B, T, V) → grads with params' keys and shapes (the initial state gets none)."""
        if not isinstance(cache, RecurrentLMCache):
            raise TypeError(f"cache must be the RecurrentLMCache returned by forward, got {type(cache).__name__}")
        grads: dict[str, np.ndarray] = {}
        dx, grads["head.weight"], grads["head.bias"] = ops.linear_backward(dlogits, cache.head)
        for layer in reversed(range(self.config.n_layer)):
            dx = ops.dropout_backward(dx, cache.drops[layer + 1])
            dx = self._layer_backward(layer, dx, cache.layers[layer], grads)
        dx = ops.dropout_backward(dx, cache.drops[0])
        grads["embedding.weight"] = ops.embedding_backward(dx, cache.embedding)
        return {name: grads[name] for name in self.params}

    def step(self, idx_t, state=None):
        """One token per row: idx_t int (B,), state → logits (B, V), the next state (for generation)."""
        if not isinstance(idx_t, np.ndarray) or idx_t.ndim != 1:
            raise ValueError(f"idx_t must be a 1-D array of token ids (B,), got "
                             f"{getattr(idx_t, 'shape', type(idx_t).__name__)}")
        logits, cache = self.forward(idx_t[:, None], state)
        return logits[:, 0], cache.state

    def num_params(self) -> int:
        """Number of scalar parameters."""
        return sum(int(a.size) for a in self.params.values())

    def config_dict(self) -> dict:
        """The config as a JSON-able dict (for checkpoints)."""
        return asdict(self.config)

    def _layer(self, layer: int, *names: str):
        return [self.params[f"{self.kind}.{layer}.{name}"] for name in names]

    # Subclasses define: _init_layer(D, H, rng, dtype) -> dict, _layer_forward, _layer_backward.


class RNNLM(_RecurrentLM):
    """Vanilla (Elman) RNN language model: h_t = tanh(x_t Wx + h_{t−1} Wh + b)."""

    kind = "rnn"
    _init_layer = staticmethod(init_rnn)

    def _layer_forward(self, layer, x, state):
        hs, cache = ops.rnn_forward(x, state[0], *self._layer(layer, "Wx", "Wh", "b"))
        return hs, cache, (hs[:, -1],)

    def _layer_backward(self, layer, dhs, cache, grads):
        dx, _dh0, *dweights = ops.rnn_backward(dhs, cache)
        for name, grad in zip(("Wx", "Wh", "b"), dweights):
            grads[f"{self.kind}.{layer}.{name}"] = grad
        return dx


class LSTMLM(_RecurrentLM):
    """LSTM language model (gates i, f, g, o; forget-gate bias initialised to 1)."""

    kind = "lstm"
    n_states = 2
    _init_layer = staticmethod(init_lstm)

    def _layer_forward(self, layer, x, state):
        hs, cs, cache = ops.lstm_forward(x, state[0], state[1], *self._layer(layer, "Wx", "Wh", "b"))
        return hs, cache, (hs[:, -1], cs[:, -1])

    def _layer_backward(self, layer, dhs, cache, grads):
        # The loss reads only h, so the cell states get no direct upstream gradient (None = zeros).
        dx, _dh0, _dc0, *dweights = ops.lstm_backward(dhs, None, cache)
        for name, grad in zip(("Wx", "Wh", "b"), dweights):
            grads[f"{self.kind}.{layer}.{name}"] = grad
        return dx


class GRULM(_RecurrentLM):
    """GRU language model (gates r, z, n as in PyTorch)."""

    kind = "gru"
    _init_layer = staticmethod(init_gru)

    def _layer_forward(self, layer, x, state):
        hs, cache = ops.gru_forward(x, state[0], *self._layer(layer, "Wx", "Wh", "bx", "bh"))
        return hs, cache, (hs[:, -1],)

    def _layer_backward(self, layer, dhs, cache, grads):
        dx, _dh0, *dweights = ops.gru_backward(dhs, cache)
        for name, grad in zip(("Wx", "Wh", "bx", "bh"), dweights):
            grads[f"{self.kind}.{layer}.{name}"] = grad
        return dx
