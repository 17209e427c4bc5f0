"""GPT-2 checkpoint compatibility: load a Hugging Face GPT-2 directory written in the test, refuse what
npllm cannot run with a clear error, and write the same format back (save → load → save byte-identical)."""
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from safetensors import safe_open
from tiny_gpt2 import tiny_vocab, write_tiny_gpt2

from npllm.errors import CheckpointError
from npllm.models import GPT, GPTConfig
from npllm.tokenizers import BPETokenizer


@pytest.mark.parametrize("prefix, buffers, lm_head", [(True, True, False), (False, True, False),
                                                      (True, False, True)])
def test_from_pretrained_loads_every_tensor_name_for_name(tmp_path, prefix, buffers, lm_head):
    written = write_tiny_gpt2(tmp_path, prefix=prefix, buffers=buffers, lm_head=lm_head)
    model = GPT.from_pretrained(tmp_path)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (2, 2, 16)
    assert (model.config.vocab_size, model.config.block_size) == (len(tiny_vocab()), 32)
    assert set(model.params) == set(written)
    for name, value in written.items():
        assert model.params[name].dtype == np.float32
        assert np.array_equal(model.params[name], value), name
    logits, _ = model.forward(np.array([[1, 2, 3]]))
    assert logits.shape == (1, 3, len(tiny_vocab())) and np.all(np.isfinite(logits))


def test_prefixed_and_plain_names_give_the_same_model(tmp_path):
    write_tiny_gpt2(tmp_path / "a", prefix=True)
    write_tiny_gpt2(tmp_path / "b", prefix=False)
    a, b = GPT.from_pretrained(tmp_path / "a"), GPT.from_pretrained(tmp_path / "b")
    idx = np.array([[5, 9, 2, 7]])
    assert_allclose(a.forward(idx)[0], b.forward(idx)[0], rtol=0, atol=0)


def test_save_load_save_is_byte_identical(tmp_path):
    write_tiny_gpt2(tmp_path / "hf")
    model, tokenizer = GPT.from_pretrained(tmp_path / "hf"), BPETokenizer.from_pretrained(tmp_path / "hf")
    model.save_pretrained(tmp_path / "one", tokenizer)
    GPT.from_pretrained(tmp_path / "one").save_pretrained(tmp_path / "two", BPETokenizer.from_pretrained(tmp_path / "one"))
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_saved_files_follow_the_hugging_face_layout(tmp_path):
    model = GPT(GPTConfig(vocab_size=len(tiny_vocab()), block_size=8, n_layer=1, n_head=2, n_embd=8), seed=1)
    tokenizer = BPETokenizer.from_vocab_and_merges(tiny_vocab(), [])
    model.save_pretrained(tmp_path, tokenizer)
    with safe_open(tmp_path / "model.safetensors", framework="numpy") as handle:
        assert handle.metadata() == {"format": "pt"}                        # what transformers requires
        names = set(handle.keys())
    assert names == {"transformer." + name for name in model.params}       # tied head left out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert (config["n_embd"], config["n_layer"], config["n_head"], config["n_positions"]) == (8, 1, 2, 8)
    assert config["eos_token_id"] == tiny_vocab()["<|endoftext|>"]
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()


def test_float64_weights_stay_float64(tmp_path):
    write_tiny_gpt2(tmp_path, dtype=np.float64)
    assert GPT.from_pretrained(tmp_path).params["wte.weight"].dtype == np.float64


@pytest.mark.parametrize("config, words", [
    ({"activation_function": "relu"}, "activation_function 'relu'"),
    ({"n_inner": 48}, "n_inner 48"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"scale_attn_weights": False}, "scale_attn_weights"),
    ({"model_type": "gpt_neo"}, "model_type 'gpt_neo'"),
    ({"architectures": ["GPT2ForSequenceClassification"]}, "architectures"),
    ({"n_head": 3}, "divisible"),
])
def test_unsupported_architectures_are_refused_by_name(tmp_path, config, words):
    write_tiny_gpt2(tmp_path, config=config)
    with pytest.raises(CheckpointError, match=words):
        GPT.from_pretrained(tmp_path)


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
    params = write_tiny_gpt2(tmp_path / "ok")
    broken = dict(params)
    del broken["h.1.mlp.c_fc.bias"]
    broken["h.0.attn.c_proj.weight"] = broken["h.0.attn.c_proj.weight"][:, :8]
    broken["h.2.ln_1.weight"] = np.ones(16, dtype=np.float32)
    write_tiny_gpt2(tmp_path / "bad", tensors=broken)
    with pytest.raises(CheckpointError) as error:
        GPT.from_pretrained(tmp_path / "bad")
    message = str(error.value)
    assert "missing tensors: h.1.mlp.c_fc.bias" in message
    assert "unexpected tensors: h.2.ln_1.weight" in message
    assert "h.0.attn.c_proj.weight (16, 8) (expected (16, 16))" in message


def test_an_untied_head_is_refused(tmp_path):
    write_tiny_gpt2(tmp_path, lm_head=True)
    path = tmp_path / "model.safetensors"
    with safe_open(path, framework="numpy") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1.0
    from safetensors.numpy import save_file
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head.weight differs from wte.weight"):
        GPT.from_pretrained(tmp_path)


def test_pickle_checkpoints_and_missing_files_get_clear_errors(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="never loads pickle files"):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="is not a directory"):
        GPT.from_pretrained(tmp_path / "nowhere")
    write_tiny_gpt2(tmp_path / "no_config")
    (tmp_path / "no_config" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        GPT.from_pretrained(tmp_path / "no_config")


def test_tiny_tokenizer_files_load_and_apply_the_merges(tmp_path):
    write_tiny_gpt2(tmp_path)
    tokenizer = BPETokenizer.from_pretrained(tmp_path)
    vocab = tiny_vocab()
    # " an": "a n" (rank 3) merges before "Ġ a" (rank 4), so "Ġa n" never applies: Ġ + an.
    assert tokenizer.encode(" the an<|endoftext|>") == [vocab["Ġthe"], vocab["Ġ"], vocab["an"], vocab["<|endoftext|>"]]
    assert tokenizer.decode(tokenizer.encode("then a than")) == "then a than"


# -- refusing bad directories with one error naming the file and the field, before any allocation -------
@pytest.mark.parametrize("config, words", [
    ({"n_layer": "twelve"}, r"config.json: n_layer must be an int in \[1, 1,024\], got 'twelve'"),
    ({"n_layer": 100000}, "config.json: n_layer must be an int"),
    ({"n_positions": 1e9}, "config.json: n_positions must be an int .*, got 1000000000.0"),
    ({"n_embd": -1}, "config.json: n_embd must be an int"),
    ({"vocab_size": True}, "config.json: vocab_size must be an int"),
    ({"resid_pdrop": "a lot"}, "config.json: resid_pdrop must be a number"),
    ({"layer_norm_epsilon": "tiny"}, "config.json: layer_norm_epsilon must be a number"),
    ({"n_layer": 3}, "model.safetensors does not match config.json: missing tensors: h.2.ln_1.weight"),
])
def test_bad_config_values_are_refused_naming_the_field(tmp_path, config, words):
    import time
    write_tiny_gpt2(tmp_path, config=config)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=words):
        GPT.from_pretrained(tmp_path)
    assert time.perf_counter() - started < 0.5


def test_read_config_gives_gptconfig_fields(tmp_path):
    from dataclasses import asdict

    from npllm.models import gpt2_io
    write_tiny_gpt2(tmp_path)
    sizes = asdict(gpt2_io.read_config(tmp_path))
    assert GPTConfig(**sizes) == GPT.from_pretrained(tmp_path).config
    assert gpt2_io.CONFIG_NAME == "config.json"


def test_integer_weights_are_refused_naming_the_tensor(tmp_path):
    params = write_tiny_gpt2(tmp_path / "ok")
    broken = {**params, "h.0.attn.c_attn.weight": params["h.0.attn.c_attn.weight"].astype(np.int32)}
    write_tiny_gpt2(tmp_path / "bad", tensors=broken)
    with pytest.raises(CheckpointError, match="tensor transformer.h.0.attn.c_attn.weight has dtype I32; weights "
                                              "must be floating point"):
        GPT.from_pretrained(tmp_path / "bad")


def test_a_directory_with_weights_but_no_config_says_no_config_json(tmp_path):
    from npllm.checkpoint import load_checkpoint
    from npllm.models import gpt2_io
    write_tiny_gpt2(tmp_path)
    (tmp_path / "config.json").unlink()
    assert gpt2_io.is_hf_directory(tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="holds model.safetensors but no config.json"):
        load_checkpoint(tmp_path)            # what an --init-from that guesses "npllm checkpoint" sees
    assert not gpt2_io.is_hf_directory(tmp_path / "vocab.json") and not gpt2_io.is_hf_directory(tmp_path / "x")


@pytest.mark.parametrize("content, words", [('["a", "b"]', "vocab.json: expected a JSON object mapping token "
                                                           "text to id, got a list"),
                                            ('{"a": "zero"}', "vocab.json: token 'a' has id 'zero'"),
                                            ("{not json", "vocab.json: not JSON")])
def test_malformed_vocab_json_is_one_checkpoint_error_naming_the_file(tmp_path, content, words):
    write_tiny_gpt2(tmp_path)
    (tmp_path / "vocab.json").write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=words):
        BPETokenizer.from_pretrained(tmp_path)


def test_a_weights_header_longer_than_the_file_is_refused(tmp_path):
    import struct
    write_tiny_gpt2(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 2**50)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: truncated or corrupt .* larger than the file"):
        GPT.from_pretrained(tmp_path)


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    import npllm.checkpoint as checkpoint
    from npllm.errors import CheckpointWriteError
    model = GPT(GPTConfig(vocab_size=len(tiny_vocab()), block_size=8, n_layer=1, n_head=2, n_embd=8), seed=1)

    def read_only(src, dst):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(checkpoint.os, "replace", read_only)
    with pytest.raises(CheckpointWriteError, match="cannot write .*config.json: Read-only file system"):
        model.save_pretrained(tmp_path / "hf")
    assert list((tmp_path / "hf").iterdir()) == []       # no temporary file left behind


def test_gpt2_io_works_on_dicts_and_arrays_and_never_imports_the_model():
    import ast
    import inspect

    from npllm.models import gpt2_io
    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(gpt2_io)))
                if isinstance(node, ast.ImportFrom)}
    assert "npllm.models.gpt" not in imported and "npllm.models" not in imported
