"""Specification of npllm.checkpoint: exact round trips, atomic writes, and loud failures on bad files."""
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import npllm.checkpoint as checkpoint
from npllm.checkpoint import (BEST_NAME, LATEST_NAME, Checkpoint, check_params_match, load_checkpoint,
                              restore_rng, rng_state, save_checkpoint)
from npllm.errors import CheckpointError
from npllm.optim import AdamW


def make_params(dtype=np.float32):
    rng = np.random.default_rng(0)
    return {"wte.weight": rng.standard_normal((5, 4)).astype(dtype),
            "h.0.ln_1.weight": np.ones(4, dtype=dtype),
            "h.0.attn.c_attn.weight": rng.standard_normal((4, 12)).astype(dtype),
            "h.0.attn.c_attn.bias": np.zeros(12, dtype=dtype)}


def make_meta(rng=None):
    return {"model_type": "gpt", "model_config": {"vocab_size": 5, "n_embd": 4}, "tokenizer": {"type": "char"},
            "optimizer": {"type": "AdamW", "step": 3}, "step": 3,
            "rng_state": rng_state(rng or np.random.default_rng(7)), "extra": {"best_val_loss": 1.25}}


def save_sample(path, **kwargs):
    optimizer_arrays = {"m.wte.weight": np.full((5, 4), 0.5, np.float32), "counts": np.arange(3, dtype=np.int64)}
    return save_checkpoint(path, make_params(), optimizer_arrays=optimizer_arrays, meta=make_meta(), **kwargs)


def tensor_data_offset(path):
    """Where the raw tensor bytes start: after the 8-byte header length and the JSON header."""
    (header_len,) = struct.unpack("<Q", Path(path).read_bytes()[:8])
    return 8 + header_len


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    params = make_params(dtype)
    optimizer_arrays = {"m.wte.weight": np.full((5, 4), 0.5, dtype), "step_per_param": np.arange(3, dtype=np.int64)}
    meta = make_meta()
    path = save_checkpoint(tmp_path / "ckpt.safetensors", params, optimizer_arrays=optimizer_arrays, meta=meta)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint)
    assert set(loaded.params) == set(params)
    for name, array in params.items():
        assert loaded.params[name].dtype == array.dtype
        assert_array_equal(loaded.params[name], array)
    for name, array in optimizer_arrays.items():
        assert loaded.optimizer_arrays[name].dtype == array.dtype
        assert_array_equal(loaded.optimizer_arrays[name], array)
    for key, value in meta.items():
        assert loaded.meta[key] == value
    assert loaded.meta["format_version"] == 2
    assert len(loaded.meta["checksum"]) == 64


def test_loaded_params_are_writable_so_an_optimizer_can_update_them(tmp_path):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", make_params()))
    loaded.params["wte.weight"] += 1.0


def test_rng_state_round_trip_continues_the_same_stream(tmp_path):
    rng = np.random.default_rng(42)
    rng.random(10)
    save_checkpoint(tmp_path / "c.safetensors", make_params(), meta={"rng_state": rng_state(rng)})
    resumed = restore_rng(load_checkpoint(tmp_path / "c.safetensors").meta["rng_state"])
    assert_array_equal(resumed.random(5), rng.random(5))


def test_optimizer_state_survives_a_checkpoint_bit_identically(tmp_path):
    params, grads = make_params(), {k: np.full_like(v, 0.1) for k, v in make_params().items()}
    opt = AdamW(1e-2)
    opt.step(params, grads)
    arrays, scalars = opt.state_dict()
    save_checkpoint(tmp_path / "c.safetensors", params, optimizer_arrays=arrays, meta={"optimizer": scalars})
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    resumed = AdamW(1e-2)
    resumed.load_state_dict(loaded.optimizer_arrays, loaded.meta["optimizer"], params=loaded.params)
    opt.step(params, grads)
    resumed.step(loaded.params, grads)
    for name in params:
        assert_array_equal(loaded.params[name], params[name])


def test_directory_path_reads_the_latest_checkpoint(tmp_path):
    save_sample(tmp_path / "out" / LATEST_NAME)   # parent directories are created
    save_checkpoint(tmp_path / "out" / BEST_NAME, {"x": np.zeros(1)})
    assert set(load_checkpoint(tmp_path / "out").params) == set(make_params())
    with pytest.raises(CheckpointError, match=f"no {LATEST_NAME} in directory"):
        load_checkpoint(tmp_path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    save_sample(tmp_path / LATEST_NAME)
    save_sample(tmp_path / LATEST_NAME)   # overwriting goes through a temporary file too
    assert sorted(os.listdir(tmp_path)) == [LATEST_NAME]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_sample(tmp_path / LATEST_NAME)
    original = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"other": np.zeros(3)})
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == [LATEST_NAME]
    monkeypatch.undo()
    assert set(load_checkpoint(path).params) == set(make_params())


def test_unserialisable_meta_fails_before_touching_the_file(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    original = path.read_bytes()
    with pytest.raises(TypeError, match="meta: must be JSON-serialisable"):
        save_checkpoint(path, make_params(), meta={"extra": {"rng": np.random.default_rng(0)}})
    with pytest.raises(ValueError, match="meta: unknown keys \\['lr'\\]"):
        save_checkpoint(path, make_params(), meta={"lr": 0.1})
    assert path.read_bytes() == original


def test_corrupted_tensor_byte_is_a_checksum_error(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    data = bytearray(path.read_bytes())
    data[tensor_data_offset(path) + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch: file is corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 100, -3])
def test_truncated_file_is_a_checkpoint_error(tmp_path, keep):
    path = save_sample(tmp_path / LATEST_NAME)
    data = path.read_bytes()
    path.write_bytes(data[:keep])   # keep < 0 cuts the last bytes of tensor data
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_garbage_and_missing_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all, just some text" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def rewrite_meta(path, edit):
    """Rewrite the npllm metadata JSON of a saved file (keeping the tensors), via safetensors itself."""
    from safetensors import safe_open
    from safetensors.numpy import load, save
    data = Path(path).read_bytes()
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata()
    metadata["npllm"] = edit(metadata["npllm"])
    Path(path).write_bytes(save(load(data), metadata=metadata))


def test_unknown_format_version_is_rejected(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    rewrite_meta(path, lambda text: json.dumps({**json.loads(text), "format_version": 99}))
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        load_checkpoint(path)


def test_bad_metadata_json_and_foreign_safetensors_are_rejected(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    rewrite_meta(path, lambda text: text[:-5])
    with pytest.raises(CheckpointError, match="bad JSON"):
        load_checkpoint(path)
    from safetensors.numpy import save
    foreign = tmp_path / "model.safetensors"
    foreign.write_bytes(save({"wte.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match="not an npllm checkpoint"):
        load_checkpoint(foreign)


def test_check_params_match_accepts_identical_layout():
    check_params_match(make_params(), make_params())


def test_check_params_match_names_missing_unexpected_and_mismatched():
    expected = make_params()
    loaded = dict(make_params())
    del loaded["wte.weight"]
    loaded["lm_head.weight"] = np.zeros((4, 5), np.float32)
    loaded["h.0.attn.c_attn.weight"] = np.zeros((4, 9), np.float32)
    loaded["h.0.ln_1.weight"] = np.ones(4, np.float64)
    with pytest.raises(CheckpointError) as info:
        check_params_match(loaded, expected)
    message = str(info.value)
    assert "missing 1: wte.weight" in message
    assert "unexpected 1: lm_head.weight" in message
    assert "h.0.attn.c_attn.weight: checkpoint float32(4, 9), model float32(4, 12)" in message
    assert "h.0.ln_1.weight: checkpoint float64(4,), model float32(4,)" in message


def test_check_params_match_lists_only_the_first_few():
    expected = {f"p{i}": np.zeros(1) for i in range(20)}
    with pytest.raises(CheckpointError, match=r"missing 20: p0, p1, p10, p11, p12 \(\+15 more\)"):
        check_params_match({}, expected)


def test_no_pickle_anywhere_in_the_checkpoint_module():
    source = Path(checkpoint.__file__).read_text()
    assert "import pickle" not in source
    assert "allow_pickle=True" not in source
    assert "np.load(" not in source


# -- format 2: the checksum covers the metadata; everything is checked before anything is allocated ----
def forge_meta(path, edit):
    """Rewrite the metadata as a buggy writer (or a forger) would: edited, with a matching checksum."""
    from safetensors.numpy import load, save
    data = Path(path).read_bytes()
    tensors = load(data)
    meta = edit(json.loads(checkpoint.read_safetensors_header(path).metadata["npllm"]))
    meta["checksum"] = checkpoint.checksum(meta, tensors)
    Path(path).write_bytes(save(tensors, metadata={"npllm": json.dumps(meta)}))


def test_an_edited_tokenizer_is_a_checksum_error(tmp_path):
    path = save_checkpoint(tmp_path / LATEST_NAME, make_params(),
                           meta={**make_meta(), "tokenizer": {"type": "char", "chars": ["a", "b", "c"]}})
    # Swap two characters of the stored vocabulary: the file still parses and its tensors are untouched.
    rewrite_meta(path, lambda text: text.replace('["a", "b", "c"]', '["b", "a", "c"]'))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


@pytest.mark.parametrize("field, value", [("step", 4), ("model_config", {"vocab_size": 6, "n_embd": 4}),
                                          ("extra", {"best_val_loss": 0.5}), ("model_type", "lstm")])
def test_every_metadata_field_is_covered_by_the_checksum(tmp_path, field, value):
    path = save_sample(tmp_path / LATEST_NAME)
    rewrite_meta(path, lambda text: json.dumps({**json.loads(text), field: value}))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_a_version_1_file_is_refused_with_a_message_to_re_save_it(tmp_path):
    from safetensors.numpy import save
    tensors = {"model.w": np.zeros(3, np.float32)}
    meta = {"format_version": 1, **checkpoint._META_DEFAULTS, "checksum": checkpoint.tensor_checksum(tensors)}
    path = tmp_path / "old.safetensors"
    path.write_bytes(save(tensors, metadata={"npllm": json.dumps(meta)}))
    with pytest.raises(CheckpointError, match="format_version 1 .* cannot be verified; re-save it"):
        load_checkpoint(path)


@pytest.mark.parametrize("field, value, words", [
    ("step", -5, "step must be a non-negative int, got -5"),
    ("step", 2.5, "step must be a non-negative int"),
    ("model_config", [1, 2], "model_config must be a JSON object"),
    ("model_config", {"n_layer": {"deep": True}}, "model_config.n_layer must be a number, string or bool"),
    ("model_config", {"dropout": float("nan")}, "model_config.dropout must be finite"),
    ("tokenizer", "char", "tokenizer must be a JSON object"),
    ("rng_state", 7, "rng_state must be a JSON object or null"),
    ("surprise", 1, r"unknown fields \['surprise'\]"),
])
def test_metadata_of_the_wrong_type_is_refused_naming_the_field(tmp_path, field, value, words):
    path = save_sample(tmp_path / LATEST_NAME)
    forge_meta(path, lambda meta: {**meta, field: value})
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(path)


def test_bad_metadata_is_refused_when_saving_too(tmp_path):
    with pytest.raises(ValueError, match="step must be a non-negative int, got -1"):
        save_checkpoint(tmp_path / "c.safetensors", make_params(), meta={"step": -1})
    assert not (tmp_path / "c.safetensors").exists()


def test_a_header_length_larger_than_the_file_is_refused(tmp_path):
    path = save_sample(tmp_path / LATEST_NAME)
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="header length 1,099,511,627,776 is larger than the file"):
        load_checkpoint(path)


def huge_sparse_checkpoint(path, meta_edit):
    """A file whose header describes 8 GiB of float32 weights (a sparse file: no disk used, instant)."""
    n = 2**31
    header = {"model.w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    meta = meta_edit({"format_version": 2, **checkpoint._META_DEFAULTS, "checksum": "0" * 64})
    header["__metadata__"] = {"npllm": json.dumps(meta)}
    text = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        handle.truncate(8 + len(text) + 4 * n)
    return path


def test_bad_metadata_is_refused_from_the_header_without_reading_the_data(tmp_path):
    import time
    path = huge_sparse_checkpoint(tmp_path / "huge.safetensors", lambda meta: {**meta, "step": -5})
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="step must be a non-negative int, got -5"):
        load_checkpoint(path)
    assert time.perf_counter() - started < 0.5


def test_a_header_that_does_not_tile_the_data_is_refused(tmp_path):
    path = huge_sparse_checkpoint(tmp_path / "huge.safetensors", lambda meta: meta)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 4)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


# -- configs against the stored tensors, before a model is built ---------------------------------------
def save_model(path, model, **meta):
    return save_checkpoint(path, model.params, meta={"model_type": model.kind, "model_config": model.config_dict(),
                                                     **meta})


def tiny_models():
    from npllm.models import (GPT, GRULM, LSTMLM, RNNLM, GPTConfig, Llama, LlamaConfig, RNNLMConfig, Seq2Seq,
                              Seq2SeqConfig)
    llama = dict(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=8, intermediate_size=12)
    return [GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)),
            Llama(LlamaConfig(**llama)),
            Llama(LlamaConfig(**llama, tie_word_embeddings=True, attention_bias=True)),
            LSTMLM(RNNLMConfig(vocab_size=11, hidden_size=6, n_layer=2)),
            GRULM(RNNLMConfig(vocab_size=11, hidden_size=6, n_layer=1)),
            RNNLM(RNNLMConfig(vocab_size=11, hidden_size=6, n_layer=2)),
            Seq2Seq(Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=7, embed_size=4, hidden_size=6, attention_size=5))]


@pytest.mark.parametrize("model", tiny_models(), ids=lambda model: model.kind)
def test_layout_param_shapes_are_the_shapes_each_model_builds(model):
    from npllm.models.layout import param_shapes
    assert param_shapes(model.kind, model.config_dict()) == {name: a.shape for name, a in model.params.items()}


@pytest.mark.parametrize("field, value, words", [
    ("n_layer", 100000, r"n_layer must be an int in \[1, 1,024\], got 100000"),
    ("block_size", 1e9, r"block_size must be an int in \[1, 1,048,576\], got 1000000000.0"),
    ("n_embd", -1, "n_embd must be an int"),
    ("n_head", 3, "n_embd .8. must be divisible by n_head .3."),
    ("n_layer", 3, "does not match the stored tensors: missing tensors: h.2.ln_1.weight"),
    ("vocab_size", 12, r"wrong shapes: wte.weight \(11, 8\) \(expected \(12, 8\)\)"),
    ("dropout", 1.5, r"dropout must be a number in \[0.0, 1.0\)"),
])
def test_an_edited_config_is_refused_before_any_model_is_built(tmp_path, monkeypatch, field, value, words):
    import time

    import npllm.models as models
    from npllm.models import model_from_checkpoint
    gpt = tiny_models()[0]
    path = save_model(tmp_path / LATEST_NAME, gpt)
    forge_meta(path, lambda meta: {**meta, "model_config": {**meta["model_config"], field: value}})
    monkeypatch.setattr(models, "build_model", lambda *args, **kwargs: pytest.fail("a model was built"))
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=words):
        model_from_checkpoint(load_checkpoint(path))
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("model", tiny_models()[:-1], ids=lambda model: model.kind)
def test_model_from_checkpoint_round_trips_every_language_model(tmp_path, model):
    from npllm.models import model_from_checkpoint
    loaded = model_from_checkpoint(load_checkpoint(save_model(tmp_path / "c.safetensors", model)))
    assert type(loaded) is type(model) and loaded.config == model.config
    for name, value in model.params.items():
        assert_array_equal(loaded.params[name], value)


def test_check_model_config_covers_seq2seq(tmp_path):
    from npllm.models import Seq2SeqConfig, check_model_config
    seq2seq = tiny_models()[-1]
    shapes = {name: a.shape for name, a in seq2seq.params.items()}
    assert check_model_config("seq2seq", seq2seq.config_dict(), shapes) == seq2seq.config
    with pytest.raises(CheckpointError, match="hidden_size must be an int"):
        check_model_config("seq2seq", {**seq2seq.config_dict(), "hidden_size": 10**9}, shapes)
    with pytest.raises(CheckpointError, match="pad_id, bos_id, eos_id must be distinct"):
        check_model_config("seq2seq", {**seq2seq.config_dict(), "bos_id": 0}, shapes)
    assert isinstance(check_model_config("seq2seq", seq2seq.config_dict()), Seq2SeqConfig)


# -- the one writer ------------------------------------------------------------------------------------
def test_write_atomic_failure_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from npllm.errors import CheckpointWriteError
    path = save_sample(tmp_path / LATEST_NAME)
    original = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(CheckpointWriteError, match=f"cannot write {path}: No space left on device") as info:
        save_sample(path)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == original and sorted(os.listdir(tmp_path)) == [LATEST_NAME]


def test_write_atomic_into_a_missing_directory_names_the_file(tmp_path):
    from npllm.errors import CheckpointWriteError
    with pytest.raises(CheckpointWriteError, match="cannot write .*nowhere/x.json"):
        checkpoint.write_atomic(tmp_path / "nowhere" / "x.json", b"{}")


def test_remove_stale_temp_files_deletes_only_what_a_killed_write_leaves(tmp_path):
    import tempfile
    _, stale = tempfile.mkstemp(prefix=f".{LATEST_NAME}.", suffix=".tmp", dir=tmp_path)   # as write_atomic names it
    keep = ["notes.tmp", ".hidden.tmp", LATEST_NAME]
    for name in keep:
        (tmp_path / name).write_text("x")
    assert checkpoint.remove_stale_temp_files(tmp_path) == [Path(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    assert checkpoint.remove_stale_temp_files(tmp_path / "missing") == []


def test_every_writer_goes_through_write_atomic():
    import inspect

    from npllm.models import gpt2_io, llama_io
    from npllm.tokenizers import base, bpe
    for module in (gpt2_io, llama_io, base, bpe):
        source = inspect.getsource(module)
        assert "write_atomic(" in source and "mkstemp" not in source and '"w"' not in source, module.__name__


def test_devices_and_symlink_loops_are_named_not_read(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(CheckpointError, match="a broken symbolic link or a symlink loop"):
        load_checkpoint(tmp_path / "a")
    with pytest.raises(CheckpointError, match="/dev/zero is not a regular file"):
        load_checkpoint("/dev/zero")


@pytest.mark.parametrize("field, value, words", [("tie_word_embeddings", "yes", "tie_word_embeddings must be true or false"),
                                                 ("n_kv_head", 3, r"n_kv_head \(3\) must divide n_head \(4\)"),
                                                 ("rope_theta", -1.0, "rope_theta must be a number"),
                                                 ("tie_word_embeddings", True, "unexpected tensors: lm_head.weight")])
def test_an_edited_llama_config_is_refused_naming_the_field(field, value, words):
    from npllm.models import check_model_config
    llama = tiny_models()[1]
    shapes = {name: a.shape for name, a in llama.params.items()}
    with pytest.raises(CheckpointError, match=words):
        check_model_config("llama", {**llama.config_dict(), field: value}, shapes)
