"""Llama-family Hugging Face directories: load Llama, Qwen2 and Mistral files written by the test (F32,
F16, BF16, sharded, both config styles) into the right places, compute what transformers computes, refuse
what npllm cannot run with one error naming the field, and write the same format back byte-identically."""
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from safetensors import safe_open
from tiny_llama import SIZES, hf_config, write_safetensors, write_tiny_llama

from npllm.errors import CheckpointError
from npllm.models.llama import Llama, LlamaConfig


def hf_reference_logits(tensors: dict, hf: dict, ids: np.ndarray) -> np.ndarray:
    """LlamaForCausalLM's forward written from its definition, on nn.Linear (out, in) weights: ids (T,) → (T, V)."""
    C, NH = hf["hidden_size"], hf["num_attention_heads"]
    NKV, HS = hf.get("num_key_value_heads", NH), C // NH
    theta = hf["rope_parameters"]["rope_theta"] if "rope_parameters" in hf else hf["rope_theta"]
    eps, T = hf["rms_norm_eps"], len(ids)
    t = {name: value.astype(np.float64) for name, value in tensors.items()}

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    angles = np.arange(T)[:, None] * theta ** (-np.arange(0, HS, 2) / HS)          # (T, HS/2)
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))

    def rope(x):                                                                   # (heads, T, HS)
        rotated = np.concatenate([-x[..., HS // 2:], x[..., :HS // 2]], -1)        # rotate_half
        return x * cos + rotated * sin

    x = t["model.embed_tokens.weight"][ids]
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q, k, v = (h @ t[p + f"self_attn.{n}.weight"].T + t.get(p + f"self_attn.{n}.bias", 0.0)
                   for n in ("q_proj", "k_proj", "v_proj"))
        q = rope(q.reshape(T, NH, HS).transpose(1, 0, 2))
        k = np.repeat(rope(k.reshape(T, NKV, HS).transpose(1, 0, 2)), NH // NKV, axis=0)   # repeat_kv
        v = np.repeat(v.reshape(T, NKV, HS).transpose(1, 0, 2), NH // NKV, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(HS) + np.triu(np.full((T, T), -np.inf), 1)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        y = (weights / weights.sum(-1, keepdims=True)) @ v                         # (NH, T, HS)
        x = x + y.transpose(1, 0, 2).reshape(T, C) @ t[p + "self_attn.o_proj.weight"].T
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        gate = h @ t[p + "mlp.gate_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ t[p + "mlp.up_proj.weight"].T)) @ t[p + "mlp.down_proj.weight"].T
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return rms(x, t["model.norm.weight"]) @ head.T


@pytest.mark.parametrize("family, style", [("llama", "4"), ("llama", "5"), ("qwen2", "4"), ("qwen2", "5"),
                                           ("mistral", "4")])
def test_from_pretrained_computes_what_transformers_computes(tmp_path, family, style):
    hf, tensors = write_tiny_llama(tmp_path, family, style=style)
    model = Llama.from_pretrained(tmp_path)
    config = model.config
    assert (config.n_layer, config.n_head, config.n_kv_head, config.n_embd, config.intermediate_size) == (2, 4, 2, 16, 24)
    assert (config.block_size, config.vocab_size, config.rope_theta, config.rms_norm_eps) == (32, 264, 500000.0, 1e-6)
    assert config.attention_bias == (family == "qwen2") and config.tie_word_embeddings == (family == "qwen2")
    for name, value in tensors.items():      # nn.Linear's (out, in) transposed to (in, out), square ones too
        expected = value if value.ndim == 1 or name == "model.embed_tokens.weight" else value.T
        assert model.params[name].dtype == np.float32 and np.array_equal(model.params[name], expected), name
        assert model.params[name].flags.writeable and model.params[name].flags.c_contiguous   # AdamW updates in place
    ids = np.array([3, 200, 17, 99, 5, 263, 42])
    logits, _ = model.forward(ids[None])
    assert_allclose(logits[0], hf_reference_logits(tensors, hf, ids), rtol=1e-4, atol=1e-4)


def test_bfloat16_and_float16_weights_load_exactly_as_float32(tmp_path):
    _, exact = write_tiny_llama(tmp_path / "bf16", dtype="BF16")       # values bfloat16 holds exactly
    bf16 = Llama.from_pretrained(tmp_path / "bf16")
    _, tensors = write_tiny_llama(tmp_path / "f16", dtype="F16")
    f16 = Llama.from_pretrained(tmp_path / "f16")
    for name, value in exact.items():
        expected = value if value.ndim == 1 or name == "model.embed_tokens.weight" else value.T
        assert bf16.params[name].dtype == np.float32 and np.array_equal(bf16.params[name], expected), name
        half = tensors[name].astype(np.float16).astype(np.float32)
        assert np.array_equal(f16.params[name], half if half.ndim == 1 or name.startswith("model.embed") else half.T)


def test_bfloat16_bit_patterns_widen_to_the_float32_they_denote(tmp_path):
    bits = np.array([0x3F80, 0xC020, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x7F7F, 0x4049], dtype="<u2")
    expected = np.array([1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, 2.0**-133, 3.3895313892515355e38, 3.140625],
                        dtype=np.float32)
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"")
    from npllm.checkpoint import read_safetensors_header
    from npllm.models.llama_io import _read_tensor
    header = json.dumps({"x": {"dtype": "BF16", "shape": [len(bits)], "data_offsets": [0, 2 * len(bits)]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    info = read_safetensors_header(path)
    widened = _read_tensor(path, info.tensors["x"], info.data_start)
    assert widened.dtype == np.float32
    assert np.array_equal(widened, expected) and np.signbit(widened[3])


def test_sharded_weights_load_like_one_file(tmp_path):
    write_tiny_llama(tmp_path / "one")
    write_tiny_llama(tmp_path / "three", shards=3)
    assert not (tmp_path / "three" / "model.safetensors").exists()
    one, three = Llama.from_pretrained(tmp_path / "one"), Llama.from_pretrained(tmp_path / "three")
    assert list(one.params) == list(three.params)
    assert all(np.array_equal(one.params[name], three.params[name]) for name in one.params)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_save_load_save_is_byte_identical(tmp_path, family):
    write_tiny_llama(tmp_path / "hf", family, dtype="BF16")
    Llama.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "one")
    Llama.from_pretrained(tmp_path / "one").save_pretrained(tmp_path / "two")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_saved_files_follow_the_hugging_face_layout(tmp_path):
    model = Llama(LlamaConfig(vocab_size=20, block_size=16, n_layer=1, n_head=4, n_kv_head=2, n_embd=8,
                              intermediate_size=12, rope_theta=1e6, attention_bias=True), seed=1)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="numpy") as handle:
        assert handle.metadata() == {"format": "pt"}                        # what transformers requires
        assert handle.get_tensor("model.layers.0.self_attn.k_proj.weight").shape == (4, 8)     # (out, in)
        assert np.array_equal(handle.get_tensor("lm_head.weight"), model.params["lm_head.weight"].T)
        assert set(handle.keys()) == set(model.params)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]) == (8, 4, 2)
    assert (config["intermediate_size"], config["num_hidden_layers"], config["max_position_embeddings"]) == (12, 1, 16)
    assert config["rope_theta"] == 1e6 and config["hidden_act"] == "silu" and config["torch_dtype"] == "float32"
    assert config["tie_word_embeddings"] is False and config["vocab_size"] == 20 and config["rms_norm_eps"] == 1e-5
    model = Llama(LlamaConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_kv_head=2, n_embd=8,
                              intermediate_size=12, tie_word_embeddings=True))
    model.save_pretrained(tmp_path / "tied")
    config = json.loads((tmp_path / "tied" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["attention_bias"] is False
    with safe_open(tmp_path / "tied" / "model.safetensors", framework="numpy") as handle:
        assert "lm_head.weight" not in handle.keys()                        # tied: transformers re-ties it


def test_a_tied_head_stored_anyway_must_equal_the_embedding(tmp_path):
    hf, tensors = write_tiny_llama(tmp_path / "ok", "qwen2")
    write_tiny_llama(tmp_path / "same", "qwen2", tensors={**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"]})
    Llama.from_pretrained(tmp_path / "same")
    write_tiny_llama(tmp_path / "other", "qwen2", tensors={**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"] + 1})
    with pytest.raises(CheckpointError, match="lm_head.weight differs from model.embed_tokens.weight"):
        Llama.from_pretrained(tmp_path / "other")


@pytest.mark.parametrize("family, config, words", [
    ("llama", {"architectures": ["GemmaForCausalLM"], "model_type": "gemma"}, "unsupported architectures"),
    ("llama", {"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
    ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "unsupported rope_scaling.rope_type 'llama3'"),
    ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "unsupported rope_scaling.rope_type 'linear'"),
    ("qwen2", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, "unsupported rope_parameters.rope_type 'yarn'"),
    ("llama", {"head_dim": 8}, "unsupported head_dim 8"),
    ("mistral", {"sliding_window": 16}, "unsupported sliding_window 16"),
    ("qwen2", {"use_sliding_window": True}, "unsupported use_sliding_window True"),
    ("llama", {"attention_bias": True}, "unsupported attention_bias true for llama"),
    ("llama", {"mlp_bias": True}, "unsupported mlp_bias"),
    ("llama", {"num_hidden_layers": "two"}, r"config.json: num_hidden_layers must be an int in \[1, 1,024\], got 'two'"),
    ("llama", {"max_position_embeddings": 1e9}, "config.json: max_position_embeddings must be an int"),
    ("llama", {"num_key_value_heads": 3}, "n_kv_head \\(3\\) must divide n_head \\(4\\)"),
    ("llama", {"rms_norm_eps": "small"}, "config.json: rms_norm_eps must be a number"),
    ("llama", {"tie_word_embeddings": "yes"}, "config.json: tie_word_embeddings must be true or false"),
    ("llama", {"hidden_size": 20, "head_dim": ...}, "head size .* must be even"),
    ("llama", {"num_hidden_layers": 3}, "the weights do not match config.json: missing tensors: model.layers.2"),
    ("llama", {"model_type": "qwen2"}, "model_type 'qwen2' contradicts architectures"),
])
def test_what_npllm_cannot_run_is_one_error_naming_the_field(tmp_path, family, config, words):
    _, tensors = write_tiny_llama(tmp_path / "ok", family)
    write_tiny_llama(tmp_path / "bad", family, config=config, tensors=tensors)
    with pytest.raises(CheckpointError, match=words):
        Llama.from_pretrained(tmp_path / "bad")


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
    _, tensors = write_tiny_llama(tmp_path / "ok")
    broken = dict(tensors)
    del broken["model.layers.1.mlp.up_proj.weight"]
    broken["model.layers.0.self_attn.k_proj.weight"] = broken["model.layers.0.self_attn.q_proj.weight"]
    broken["model.layers.0.self_attn.o_proj.bias"] = np.zeros(16, np.float32)
    write_tiny_llama(tmp_path / "bad", tensors=broken)
    with pytest.raises(CheckpointError) as error:
        Llama.from_pretrained(tmp_path / "bad")
    message = str(error.value)
    assert "missing tensors: model.layers.1.mlp.up_proj.weight" in message
    assert "unexpected tensors: model.layers.0.self_attn.o_proj.bias" in message
    assert "model.layers.0.self_attn.k_proj.weight (16, 16) (expected (8, 16))" in message


def test_broken_directories_and_shard_indexes_are_named(tmp_path):
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps(hf_config()))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="never loads pickle files"):
        Llama.from_pretrained(tmp_path / "pickled")
    with pytest.raises(CheckpointError, match="is not a directory"):
        Llama.from_pretrained(tmp_path / "nowhere")
    write_tiny_llama(tmp_path / "sharded", shards=2)
    index_path = tmp_path / "sharded" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = next(iter(index["weight_map"]))
    for file_name, words in (("../../etc/passwd", "must be a file name in"), ("gone.safetensors", "shard gone.safetensors is missing")):
        index_path.write_text(json.dumps({"weight_map": {**index["weight_map"], name: file_name}}))
        with pytest.raises(CheckpointError, match=words):
            Llama.from_pretrained(tmp_path / "sharded")
    other = next(f for f in set(index["weight_map"].values()) if f != index["weight_map"][name])
    index_path.write_text(json.dumps({"weight_map": {**index["weight_map"], name: other}}))
    with pytest.raises(CheckpointError, match="does not hold what model.safetensors.index.json lists"):
        Llama.from_pretrained(tmp_path / "sharded")


def test_integer_weights_are_refused_naming_the_tensor(tmp_path):
    _, tensors = write_tiny_llama(tmp_path / "ok")
    broken = {**tensors, "model.norm.weight": np.ones(SIZES["hidden_size"], dtype=np.int32)}
    write_tiny_llama(tmp_path / "bad", tensors=broken)
    with pytest.raises(CheckpointError, match="tensor model.norm.weight has dtype I32; weights must be floating"):
        Llama.from_pretrained(tmp_path / "bad")


def test_rotary_inv_freq_buffers_are_ignored(tmp_path):
    _, tensors = write_tiny_llama(tmp_path / "ok")
    buffers = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": np.ones(2, np.float32) for i in range(2)}
    write_tiny_llama(tmp_path / "old", tensors={**tensors, **buffers})
    model = Llama.from_pretrained(tmp_path / "old")
    assert not any("inv_freq" in name for name in model.params)


def test_llama_io_works_on_dicts_and_arrays_and_never_imports_the_model():
    import ast
    import inspect

    from npllm.models import llama_io
    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(llama_io)))
                if isinstance(node, ast.ImportFrom)}
    assert "npllm.models.llama" not in imported and "npllm.models" not in imported


def test_write_safetensors_helper_matches_the_safetensors_package(tmp_path):
    """The hand-written files of these tests are real safetensors files."""
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_safetensors(tmp_path / "x.safetensors", {"a": array}, metadata={"format": "pt"})
    with safe_open(tmp_path / "x.safetensors", framework="numpy") as handle:
        assert np.array_equal(handle.get_tensor("a"), array) and handle.metadata() == {"format": "pt"}
