"""Language models: a config dataclass, a flat ``params`` dict and forward/backward written out in order.

- :class:`GPT` / :class:`GPTConfig` (gpt.py): the GPT-2 architecture.
- :class:`RNNLM`, :class:`LSTMLM`, :class:`GRULM` / :class:`RNNLMConfig` (rnn_lm.py): recurrent LMs.

:data:`LANGUAGE_MODELS` maps the CLI's ``--model`` names to classes; :func:`build_model` rebuilds a model
from what a checkpoint stores (its kind and config dict).
"""
from npllm.models.gpt import GPT, GPTConfig, KVCache
from npllm.models.rnn_lm import GRULM, LSTMLM, RNNLM, RNNLMConfig

LANGUAGE_MODELS = {"gpt": GPT, "lstm": LSTMLM, "gru": GRULM, "rnn": RNNLM}


def build_model(kind: str, config: dict, seed: int = 0, dtype="float32"):
    """A fresh model of ``kind`` ("gpt", "lstm", "gru", "rnn") from a config dict (e.g. a checkpoint's)."""
    if kind not in LANGUAGE_MODELS:
        raise ValueError(f"kind must be one of {sorted(LANGUAGE_MODELS)}, got {kind!r}")
    cls = LANGUAGE_MODELS[kind]
    return cls(cls.config_class(**config), seed=seed, dtype=dtype)


__all__ = ["GPT", "GPTConfig", "KVCache", "RNNLM", "LSTMLM", "GRULM", "RNNLMConfig", "LANGUAGE_MODELS",
           "build_model"]
