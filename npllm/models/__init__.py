"""Language models: a config dataclass, a flat ``params`` dict and forward/backward written out in order.

- :class:`GPT` / :class:`GPTConfig` (gpt.py): the GPT-2 architecture.
- :class:`Llama` / :class:`LlamaConfig` (llama.py): Llama (RMSNorm, RoPE, grouped-query attention, SwiGLU).
- :class:`RNNLM`, :class:`LSTMLM`, :class:`GRULM` / :class:`RNNLMConfig` (rnn_lm.py): recurrent LMs.
- :class:`Seq2Seq` / :class:`Seq2SeqConfig` (seq2seq.py): LSTM encoder-decoder with additive attention.

:func:`load_pretrained` reads a Hugging Face directory (gpt2_io.py, llama_io.py) into the model its
config.json names.  :data:`LANGUAGE_MODELS` maps the CLI's ``--model`` names to classes;
:func:`build_model` rebuilds a model from what a checkpoint stores (its kind and config dict), after
:func:`check_model_config` has checked that config against the stored tensor shapes (layout.py), so an
edited config never allocates.
"""
from npllm.checkpoint import check_params_match
from npllm.errors import CheckpointError
from npllm.models.gpt import GPT, GPTConfig, KVCache
from npllm.models.layout import check_config
from npllm.models import gpt2_io, llama_io
from npllm.models.llama import Llama, LlamaConfig
from npllm.models.rnn_lm import GRULM, LSTMLM, RNNLM, RNNLMConfig
from npllm.models.seq2seq import Seq2Seq, Seq2SeqConfig

LANGUAGE_MODELS = {"gpt": GPT, "llama": Llama, "lstm": LSTMLM, "gru": GRULM, "rnn": RNNLM}
MODEL_CLASSES = {**LANGUAGE_MODELS, "seq2seq": Seq2Seq}


def build_model(kind: str, config: dict, seed: int = 0, dtype="float32"):
    """A fresh model of ``kind`` ("gpt", "llama", "lstm", "gru", "rnn") from a config dict (e.g. a checkpoint's)."""
    if kind not in LANGUAGE_MODELS:
        raise ValueError(f"kind must be one of {sorted(LANGUAGE_MODELS)}, got {kind!r}")
    cls = LANGUAGE_MODELS[kind]
    return cls(cls.config_class(**config), seed=seed, dtype=dtype)


def check_model_config(kind: str, config, tensor_shapes=None, *, where: str = "model_config"):
    """The config object (GPTConfig, RNNLMConfig, Seq2SeqConfig) of a stored ``kind`` config, or one
    CheckpointError naming the field: types, bounds and, when ``tensor_shapes`` (name → shape) is given,
    the params' exact shapes are checked from numbers alone, before any model is built."""
    check_config(kind, config, tensor_shapes, where=where)
    try:
        return MODEL_CLASSES[kind].config_class(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def load_pretrained(path):
    """The GPT or Llama of a Hugging Face directory ``path``, as its config.json's architectures say
    (GPT2LMHeadModel; LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM); CheckpointError otherwise."""
    from pathlib import Path
    config_path = Path(path) / gpt2_io.CONFIG_NAME
    if not config_path.is_file():
        return GPT.from_pretrained(path)            # says what the directory lacks
    hf = llama_io.read_json(config_path)
    if llama_io.is_llama_config(hf):
        return Llama.from_pretrained(path)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{config_path}: unsupported model_type {str(hf['model_type'])[:40]!r} (architectures "
                              f"{str(hf.get('architectures'))[:80]}); npllm loads GPT2LMHeadModel, "
                              f"{', '.join(llama_io.ARCHITECTURES)}")
    return GPT.from_pretrained(path)


def model_from_checkpoint(checkpoint):
    """The model a loaded :class:`npllm.checkpoint.Checkpoint` holds (params copied in, dtype kept)."""
    kind, config = checkpoint.meta.get("model_type"), checkpoint.meta.get("model_config")
    if kind not in LANGUAGE_MODELS:
        raise CheckpointError(f"model_type {kind!r} is not a language model this command can load "
                              f"(expected one of {sorted(LANGUAGE_MODELS)})")
    if not isinstance(config, dict) or not checkpoint.params:
        raise CheckpointError("checkpoint holds no model config or no weights")
    check_model_config(kind, config, {name: array.shape for name, array in checkpoint.params.items()})
    dtype = next(iter(checkpoint.params.values())).dtype
    try:
        model = build_model(kind, config, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"model_config {config} is invalid: {exc}") from exc
    check_params_match(checkpoint.params, model.params)
    model.params = {name: checkpoint.params[name].copy() for name in model.params}
    return model


__all__ = ["GPT", "GPTConfig", "KVCache", "Llama", "LlamaConfig", "RNNLM", "LSTMLM", "GRULM", "RNNLMConfig",
           "Seq2Seq", "Seq2SeqConfig", "LANGUAGE_MODELS", "MODEL_CLASSES", "build_model", "check_model_config",
           "model_from_checkpoint", "load_pretrained"]
