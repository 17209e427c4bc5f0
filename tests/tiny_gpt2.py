"""A tiny random GPT-2 checkpoint directory in Hugging Face's layout, written with the safetensors package
(no download): config.json, model.safetensors with GPT-2's tensor names (optionally the ``transformer.``
prefix, the ``attn.bias``/``attn.masked_bias`` buffers and a tied ``lm_head.weight``), and a tiny
byte-level vocab.json + merges.txt.  Used by test_gpt2_io.py and test_finetune.py."""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from npllm.tokenizers import bytes_to_unicode

MERGES = ["Ġ t", "h e", "Ġt he", "a n", "Ġ a", "Ġa n"]


def tiny_vocab() -> dict:
    """256 byte tokens, one per merge, and <|endoftext|> last (as GPT-2's id 50256 is last)."""
    tokens = list(bytes_to_unicode().values()) + [merge.replace(" ", "") for merge in MERGES] + ["<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def gpt2_tensors(V, C, L, P, rng, dtype=np.float32) -> dict:
    """Random GPT-2 parameters under their Hugging Face names (no prefix), GPT-2's (in, out) layouts."""
    def normal(*shape, mean=0.0):
        return (mean + 0.02 * rng.standard_normal(shape)).astype(dtype)

    tensors = {"wte.weight": normal(V, C), "wpe.weight": normal(P, C)}
    for i in range(L):
        for name, shape in (("ln_1", (C,)), ("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)),
                            ("ln_2", (C,)), ("mlp.c_fc", (C, 4 * C)), ("mlp.c_proj", (4 * C, C))):
            tensors[f"h.{i}.{name}.weight"] = normal(*shape, mean=1.0 if name.startswith("ln") else 0.0)
            tensors[f"h.{i}.{name}.bias"] = normal(shape[-1])
    tensors["ln_f.weight"], tensors["ln_f.bias"] = normal(C, mean=1.0), normal(C)
    return tensors


def write_tiny_gpt2(path, *, n_embd=16, n_layer=2, n_head=2, n_positions=32, prefix=True, buffers=True,
                    lm_head=False, seed=0, dtype=np.float32, config=None, tensors=None) -> dict:
    """Write the directory; returns the parameters written (no prefix, no buffers).  ``config`` entries
    override config.json's; ``tensors`` replaces the parameters (to write a broken file)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    V, C, L, P = len(vocab), n_embd, n_layer, n_positions
    params = gpt2_tensors(V, C, L, P, np.random.default_rng(seed), dtype) if tensors is None else tensors
    hf_config = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
                 "bos_token_id": V - 1, "embd_pdrop": 0.1, "eos_token_id": V - 1, "initializer_range": 0.02,
                 "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": P, "n_embd": C, "n_head": n_head,
                 "n_layer": L, "n_positions": P, "resid_pdrop": 0.1, "summary_type": "cls_index",
                 "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
                 "vocab_size": V, **(config or {})}
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))
    written = {("transformer." if prefix else "") + name: value for name, value in params.items()}
    if buffers:
        for i in range(L):
            head = "transformer." if prefix else ""
            written[f"{head}h.{i}.attn.bias"] = np.tril(np.ones((P, P), dtype=bool))[None, None]
            written[f"{head}h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    if lm_head:
        written["lm_head.weight"] = params["wte.weight"].copy()
    save_file(written, path / "model.safetensors", metadata={"format": "pt"})
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    return params
